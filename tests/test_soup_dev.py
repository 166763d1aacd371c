"""experiments/soup_dev.py: soups of two runs scored on the dev split; α = 1 and 0 are the runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest_trainer import make_config, synthetic_splits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import soup_dev  # noqa: E402


def test_soups_scored_on_dev_with_the_arms_at_the_ends(tmp_path, monkeypatch):
    from gcl.encoders.model import BiEncoder
    from gcl.training.dev_eval import DevEvaluator
    from gcl.training.trainer import Trainer

    monkeypatch.setenv("GCL_CACHE_DIR", str(tmp_path / "cache"))
    work = tmp_path / "runs"
    for arm, sampler in (("gcl", "query_grouped"), ("gcl-best", "random")):
        cfg = make_config(work / f"{arm}-s1", dropout=0.1, seed=1,
                          **{"model__freeze_layers": 1, "optim__steps": 3, "batch__sampler": sampler, "eval__every": 3,
                             "eval__dev_corpus_size": 200})
        Trainer(cfg, splits=synthetic_splits()).fit()
    out = tmp_path / "out"
    args = ["--work", str(work), "--seeds", "1", "--alphas", "0", "0.25", "1", "--out", str(out),
            "--extra", "data.source=synthetic", "eval.dev_corpus_size=200"]
    soup_dev.main(args)
    recs = {r["alpha"]: r for r in map(json.loads, (out / "soup.jsonl").read_text().splitlines())}
    assert set(recs) == {0.0, 0.25, 1.0}
    # the ends are the arms: the same dev evaluation of the run's own final model
    from gcl.config import load_config
    from gcl.data.sources import load_benchmark
    from gcl.training.config import TrainConfig

    base = load_config(TrainConfig, soup_dev.BASE, ["data.source=synthetic", "eval.dev_corpus_size=200"])
    dev = DevEvaluator(load_benchmark(base.data), base.eval, seed=1)  # seed 1: the run's, not a fixed 0
    for alpha, arm in ((1.0, "gcl"), (0.0, "gcl-best")):
        direct = dev(BiEncoder.load(work / f"{arm}-s1" / "final").eval())
        assert recs[alpha]["dev"]["ndcg@10"] == pytest.approx(direct["ndcg@10"], abs=1e-9)
        # and the run's own last dev evaluation (the trainer's dev corpus, drawn with its seed)
        last = [json.loads(x) for x in (work / f"{arm}-s1" / "metrics.jsonl").read_text().splitlines()
                if "dev/ndcg@10" in x][-1]
        assert recs[alpha]["dev"]["ndcg@10"] == pytest.approx(last["dev/ndcg@10"], abs=1e-6)
    for r in recs.values():
        for key in ("train_rerank", "dev_rerank"):
            assert r[key]["random"]["err"] <= r[key]["ideal"]["err"] and set(r[key]["share"]) == {"ndcg@10", "err"}
    # α is the weight of --a: the record at 0.25 is the soup 0.25·gcl + 0.75·gcl-best, scored directly
    from gcl.encoders.soup import soup

    soup([work / "gcl-s1" / "final", work / "gcl-best-s1" / "final"], tmp_path / "direct", [0.25, 0.75])
    direct = dev(BiEncoder.load(tmp_path / "direct").eval())
    assert recs[0.25]["dev"]["ndcg@10"] == pytest.approx(direct["ndcg@10"], abs=1e-9)
    assert recs[0.25]["dev"]["err"] == pytest.approx(direct["err"], abs=1e-9)
    # a re-run skips finished lines; --save keeps the soup of that α
    soup_dev.main([*args[:5], "0.25", *args[8:], "--save", "soup"])
    assert len((out / "soup.jsonl").read_text().splitlines()) == 3
    assert json.loads((work / "soup-s1" / "final" / "gcl_soup.json").read_text())["weights"] == [0.25, 0.75]
    with pytest.raises(SystemExit, match="holds another model"):
        soup_dev.main([*args[:5], "0.75", *args[8:], "--save", "soup"])
    md = (out / "soup.md").read_text()
    assert "| gcl | gcl-best | 0.25 | 1 |" in md
    # a dev evaluation other than the runs' is refused (their dev figures would not be repeated)
    with pytest.raises(SystemExit, match="dev corpus size or seed"):
        soup_dev.main(["--work", str(work), "--seeds", "1", "--alphas", "0.5", "--out", str(tmp_path / "o2"),
                       "--extra", "data.source=synthetic", "eval.dev_corpus_size=100"])


def test_missing_run_and_bad_alpha_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no such model directory"):
        soup_dev.model_dir(tmp_path, "gcl", 0)
    with pytest.raises(SystemExit):
        soup_dev.parse_args(["--alphas", "1.5"])
    assert "--alphas must lie in [0, 1]" in capsys.readouterr().err
    for alphas in (["0.25", "0.5"], ["1"]):
        with pytest.raises(SystemExit):
            soup_dev.parse_args(["--alphas", *alphas, "--save", "x"])
        assert "strictly between 0 and 1" in capsys.readouterr().err
