"""experiments/pair_order.py: concordance of judged pairs by grade gap, against naive loops."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest_trainer import tiny_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import pair_order


def naive_bins(judgments: pd.DataFrame, score_of) -> dict[str, list[float]]:
    """Every unordered pair of one query's judgments, checked one at a time."""
    out: dict[str, list[float]] = {lab: [] for lab in (*pair_order.LABELS, "all")}
    rows = list(judgments.itertuples(index=False))
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            ra, rb = rows[a], rows[b]
            if ra.query_id != rb.query_id or ra.score == rb.score:
                continue
            hi, lo = (ra, rb) if ra.score > rb.score else (rb, ra)
            sh, sl = score_of(hi), score_of(lo)
            c = 1.0 if sh > sl else 0.5 if sh == sl else 0.0
            votes = (hi.score - lo.score) * 3  # in rater votes: 1, 2, 3, more (means of 4 raters in between)
            lab = "1/3" if votes < 1.05 else "2/3" if votes < 2.05 else "1" if votes < 3.05 else ">1"
            out[lab].append(c)
            out["all"].append(c)
    return out


def test_pairs_and_bins_match_a_naive_loop():
    rng = np.random.default_rng(3)
    # the data's rounded means (2.0 - 1.67 = 0.33000000000000007, 1.67 - 1.33 = 0.33999999999999986)
    # and exact thirds, so gaps fall on and next to the bin edges 1/3, 2/3, 1
    # and 1.34 + 1e-12, whose gap to 1.0 rounds down onto the 1/3 edge (raw float binning put it in 2/3)
    grades = np.array([1.0, 1.33, 1.67, 2.0, 2.33, 2.67, 3.0, 1.25, 2.75, 4 / 3, 5 / 3, 7 / 3, 8 / 3, 1.34 + 1e-12])
    n = 400
    j = pd.DataFrame({"query_id": rng.choice([f"q{i}" for i in range(60)], n),
                      "doc_id": [f"d{i}" for i in range(n)], "score": rng.choice(grades, n)})
    model_score = dict(zip(j["doc_id"], rng.choice(np.arange(5.0), n)))  # coarse: many ties
    pairs = pair_order.judged_pairs(j)
    s = np.array([model_score[d] for d in j["doc_id"]])
    got = pair_order.by_gap(pairs, pair_order.concordance(s[pairs["hi"]], s[pairs["lo"]]))
    want = naive_bins(j, lambda r: model_score[r.doc_id])
    assert set(got) == set(want)
    for lab, vals in want.items():
        assert got[lab][0] == len(vals) > 0, lab
        assert got[lab][1] == pytest.approx(np.mean(vals), abs=1e-12), lab
    # every pair's better document really has the higher score
    assert (j["score"].to_numpy()[pairs["hi"]] > j["score"].to_numpy()[pairs["lo"]]).all()


def test_end_to_end_scores_are_the_model_cosines(tmp_path, monkeypatch, capsys):
    """The script's per-split figures equal a naive per-pair encoding with the model itself."""
    from gcl.data.sources import load_benchmark
    from gcl.encoders.base import load_model
    from gcl.training.config import DataConfig

    model_dir = str(tiny_model())
    out = tmp_path / "po.json"
    argv = ["--set", "data.source=synthetic", "--arm", f"tiny={model_dir}", f"tiny={model_dir}",
            "--arm", "mini=minilm", "--reference", "mini", "tiny", "--bootstrap", "50",
            "--train-queries", "30", "--threads", "1", "--splits", "novel_query", "--out", str(out)]
    rc = pair_order.main(argv)
    assert rc == 0
    res = json.loads(out.read_text())
    arm = res["arms"]["tiny"]
    assert [m["model"] for m in arm["models"]] == [model_dir, model_dir]
    assert arm["summary"]["dev"]["all"]["std"] == 0.0 and arm["summary"]["dev"]["all"]["seeds"] == 2
    for split in ("train", "dev", "novel_query"):  # "all": every pair of both arms, so Δ = difference of means
        got, mini = arm["summary"][split]["all"], res["arms"]["mini"]["summary"][split]["all"]
        assert got["vs"]["mini"]["diff"] == pytest.approx(got["mean"] - mini["mean"], abs=1e-12)
        assert mini["vs"]["tiny"]["diff"] == pytest.approx(mini["mean"] - got["mean"], abs=1e-12)
        assert got["vs"]["mini"]["low"] <= got["vs"]["mini"]["diff"] <= got["vs"]["mini"]["high"]
    assert got["mean"] != mini["mean"]  # two different models, so a swapped reference would show

    bench = load_benchmark(DataConfig(source="synthetic"))
    model = load_model(model_dir)
    model.eval()
    for name, split in (("dev", bench.dev), ("novel_query", bench.eval_split("novel_query"))):
        cache: dict[tuple[str, str], float] = {}

        def cos(r, split=split, cache=cache):
            key = (r.query_id, r.doc_id)
            if key not in cache:
                q = model.encode_queries(split.queries.loc[[r.query_id]])[0]
                d = model.encode_documents(split.documents.loc[[r.doc_id]])[0]
                cache[key] = float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d)))
            return cache[key]

        want = naive_bins(split.judgments, cos)
        for lab, vals in want.items():
            assert arm["summary"][name][lab]["pairs"] == len(vals), (name, lab)
        # each pair's two cosines, batch-encoded by the script, equal the one-at-a-time encodings
        j = split.judgments.reset_index(drop=True)
        pairs = pair_order.judged_pairs(j)
        with torch.no_grad():
            hi, lo = pair_order.pair_scores(model, split, pairs)
        rows = list(j.itertuples(index=False))
        assert np.allclose(hi, [cos(rows[i]) for i in pairs["hi"]], atol=1e-4)
        assert np.allclose(lo, [cos(rows[i]) for i in pairs["lo"]], atol=1e-4)
        conc = pair_order.by_gap(pairs, pair_order.concordance(hi, lo))
        for lab in want:
            mean = arm["summary"][name][lab]["mean"]  # an empty bin is null in the JSON
            assert mean is None if np.isnan(conc[lab][1]) else mean == pytest.approx(conc[lab][1]), (name, lab)
    assert res["pairs"]["novel_query"] == len(want["all"])  # the last split of the loop

    # a re-run reads every model's pairs from <out>.cache/ and encodes nothing
    import gcl.encoders.base

    def no_loading(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(gcl.encoders.base, "load_model", no_loading)
    out.rename(tmp_path / "first.json")
    assert pair_order.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["arms"]["tiny"]["summary"] == res["arms"]["tiny"]["summary"]
    # weights rewritten in place (the directory's own mtime unchanged) are encoded again: refused here,
    # since loading is patched (a copy of the model, so the shared tiny model stays untouched)
    copy = tmp_path / "model-copy"
    shutil.copytree(model_dir, copy)
    copy_argv = [a.replace(model_dir, str(copy)) for a in argv]
    monkeypatch.undo()
    assert pair_order.main(copy_argv) == 0
    monkeypatch.setattr(gcl.encoders.base, "load_model", no_loading)
    assert pair_order.main(copy_argv) == 0  # cached
    weights = next(f for f in copy.rglob("*.safetensors"))
    dir_times = (copy.stat().st_atime_ns, copy.stat().st_mtime_ns)
    weights.write_bytes(weights.read_bytes())
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    os.utime(copy, ns=dir_times)
    capsys.readouterr()
    assert pair_order.main(copy_argv) == 2 and "cache was not used" in capsys.readouterr().err
    # other pairs (another training sample) are not served from the cache either
    assert pair_order.main([*argv, "--train-queries", "31"]) == 2
    assert "cache was not used" in capsys.readouterr().err
    # a corrupt cache file is recomputed, not a traceback
    for f in (tmp_path / "po.cache").glob("*.npz"):
        f.write_bytes(b"not a zip")
    assert pair_order.main(argv) == 2 and "cache was not used" in capsys.readouterr().err


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys):
    out = str(tmp_path / "x.json")
    broken = tmp_path / "broken"  # looks like a gcl model, does not load
    broken.mkdir()
    (broken / "gcl_model.json").write_text("{")
    training_dir = tmp_path / "run"  # a run directory, not its final/ model
    training_dir.mkdir()
    (training_dir / "config.json").write_text("{}")
    cases = [
        (["--arm", "no-equals-sign"], "--arm wants NAME=MODEL"),
        (["--arm", "a=minilm", "--arm", "a=minilm"], "--arm a is given twice"),
        (["--arm", f"b={broken}"], f"arm b: cannot load model {broken}"),
        (["--arm", f"gone={tmp_path / 'nope'}"], "not a saved model directory"),
        (["--arm", f"run={training_dir}"], f"run: {training_dir}"),
        (["--arm", "a=minilm", "--reference", "other"], "--reference other is not an --arm"),
        (["--arm", "a=minilm", "--train-queries", "-1"], "--train-queries must be >= 0"),
        (["--arm", "a=minilm", "--bootstrap", "0"], "--bootstrap must be >= 1"),
        (["--arm", "a=minilm", "--threads", "0"], "--threads must be >= 1"),
        (["--arm", "a=minilm", "--splits", "no_such_split"], "no_such_split"),
    ]
    for args, message in cases:
        rc = pair_order.main(["--set", "data.source=synthetic", *args, "--train-queries", "5", "--out", out]
                             if "--train-queries" not in args else ["--set", "data.source=synthetic", *args, "--out", out])
        assert rc == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert not Path(out).exists()


def test_paired_difference_resamples_queries_not_pairs():
    """Point estimate = mean pair difference; interval = a naive bootstrap that copies each drawn
    query's pairs, with the same multinomial draws."""
    rng = np.random.default_rng(5)
    n = 300
    pairs = pd.DataFrame({"query_id": rng.choice([f"q{i}" for i in range(40)], n),
                          "gap": rng.choice([1 / 3, 2 / 3, 1.0, 4 / 3], n)})
    a, b = rng.choice([0.0, 0.5, 1.0], n), rng.choice([0.0, 0.5, 1.0], n)
    got = pair_order.paired_difference(pairs, a, b, rounds=200, seed=7)
    assert got["all"]["diff"] == pytest.approx((a - b).mean())
    codes, uniq = pd.factorize(pairs["query_id"])
    w = np.random.default_rng(7).multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=200)
    for lab, lo_gap, hi_gap in (("1/3", 0, 0.34), (">1", 1.01, 9), ("all", 0, 9)):
        sel = (pairs["gap"] > lo_gap) & (pairs["gap"] <= hi_gap) if lab != "1/3" else pairs["gap"] <= 0.34
        sel = sel.to_numpy()
        assert got[lab]["diff"] == pytest.approx((a[sel] - b[sel]).mean())
        boots = []
        for row in w:
            diffs = [a[i] - b[i] for q in range(len(uniq)) for _ in range(row[q])
                     for i in np.flatnonzero((codes == q) & sel)]
            boots.append(np.mean(diffs))
        assert got[lab]["low"] == pytest.approx(np.quantile(boots, 0.025))
        assert got[lab]["high"] == pytest.approx(np.quantile(boots, 0.975))
        assert got[lab]["low"] < got[lab]["diff"] < got[lab]["high"]
    # a bin that some resamples miss entirely: those resamples are left out, not counted as 0
    rare = pairs.assign(gap=np.where(np.arange(n) < 3, 2.0, 1 / 3))  # 3 pairs above 1, in 1-3 queries
    got = pair_order.paired_difference(rare, np.ones(n), np.zeros(n), rounds=300, seed=1)
    assert got[">1"] == {"diff": 1.0, "low": 1.0, "high": 1.0}
