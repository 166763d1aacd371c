"""Seen / unseen in-domain queries of a trained run (replaying its batch sampler), and the
evaluate options that add ceilings, judged re-rank, thresholded gains and these groups."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest_trainer import make_config, synthetic_splits

from gcl.cli.main import main
from gcl.config import to_dict
from gcl.evaluation.seen import query_groups, seen_queries
from gcl.training.trainer import Trainer


@pytest.mark.parametrize("group_fraction", [1.0, 0.5])
def test_replayed_sampler_draws_what_the_trainer_draws(tmp_path, group_fraction):
    cfg = make_config(tmp_path, batch__sampler="query_grouped", batch__docs_per_query=2, loss__positive_threshold=1.5,
                      batch__group_fraction=group_fraction)
    trainer = Trainer(cfg, splits=synthetic_splits())
    steps, drawn = 7, set()
    for _ in range(steps):
        codes = trainer.pairs.query_code[trainer.sampler.next_batch()]
        drawn.update(trainer.pairs.query_texts[c] for c in np.unique(codes))
    train = synthetic_splits().train
    seen = seen_queries(train, cfg, steps)
    assert {train.queries.loc[q, "query"] for q in seen} == drawn
    assert seen_queries(train, cfg, 0) == set()
    below = set(train.judgments.groupby("query_id")["score"].max().loc[lambda s: s < 1.5].index)
    assert below and not (seen_queries(train, cfg, 1000) & below)  # never trained on: never seen
    two = seen_queries(train, cfg, steps, min_docs=2)
    assert two <= seen and len(two) > 0


def test_query_groups_from_a_run_directory(tmp_path):
    cfg = make_config(tmp_path, batch__sampler="query_grouped", optim__steps=50)
    (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0}\n{"step": 3, "loss": 0.9}\n')
    bench = synthetic_splits()
    groups, info = query_groups(bench, tmp_path)
    assert info["steps"] == 3  # where the run stopped, not optim.steps
    assert groups["seen"] == seen_queries(bench.train, cfg, 3)
    assert groups["seen"] | groups["unseen"] == set(bench.train.queries.index)
    assert not groups["seen"] & groups["unseen"]
    assert groups["dev"] == set(bench.dev.queries.index)


def test_evaluate_with_every_add_on(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = make_config(run, batch__sampler="query_grouped", optim__steps=5)
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    out = tmp_path / "eval"
    args = ["evaluate", "--data", "synthetic", "--bm25", "--protocol", "all", "--out", str(out), "--ceilings",
            "--ceiling-shuffles", "3", "--relevance-threshold", "2", "--seen-unseen", str(run)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "ordering ceilings" in stdout and "relevance threshold 2" in stdout and "seen" in stdout
    splits = json.loads((out / "results.json").read_text())["splits"]
    c = splits["novel_query"]["ceilings"]
    assert c["ideal"]["ndcg@10"] == 1.0 and c["random"]["ndcg@10"] < 1.0 and c["random_shuffles"] == 3
    assert c["headroom"]["ndcg@10"] == pytest.approx(1.0 - c["random"]["ndcg@10"])
    thr = splits["in_domain"]["relevance_threshold"]
    assert thr["threshold"] == 2.0 and thr["summary"]["map@1000"] != splits["in_domain"]["summary"]["map@1000"]
    su = splits["in_domain"]["seen_unseen"]
    assert su["steps"] == 5  # no metrics.jsonl: optim.steps
    assert sum(g["queries"] for g in su["groups"].values()) == splits["in_domain"]["queries"]
    assert su["groups"]["seen"]["queries"] > 0 and su["groups"]["unseen"]["queries"] > 0

    rerank = tmp_path / "rerank"
    assert main(["evaluate", "--data", "synthetic", "--bm25", "--judged-rerank", "--out", str(rerank)]) == 0
    assert "judged re-rank" in capsys.readouterr().out
    payload = json.loads((rerank / "results.json").read_text())
    assert payload["meta"]["mode"] == "judged_rerank"
    assert all(s["summary"]["recall@100"] == 1.0 for s in payload["splits"].values())  # every judged doc ranked


@pytest.mark.parametrize("extra, needle", [
    (["--relevance-threshold", "1"], "--relevance-threshold"),
    (["--ceiling-shuffles", "0"], "--ceiling-shuffles"),
    (["--seen-unseen", "/nonexistent/run"], "config.json"),
    (["--seen-unseen", "RUN", "--splits", "zero_shot"], "in_domain"),
])
def test_add_on_user_errors_exit_2_with_one_line(extra, needle, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(make_config(run))))
    capsys.readouterr()  # building the tiny model prints progress
    extra = [str(run) if e == "RUN" else e for e in extra]
    assert main(["evaluate", "--data", "synthetic", "--bm25", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err
