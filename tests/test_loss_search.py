"""experiments/loss_search.py: curriculum (two-stage) arms and the trained-query judged re-rank."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import loss_search as ls  # noqa: E402


def test_stage_steps_split_the_budget():
    assert ls.stage_steps(164, 0.25) == (123, 41)
    assert ls.stage_steps(10, 0.01) == (9, 1)  # at least one step in stage 2
    assert ls.stage_steps(10, 1.0) == (1, 9)  # and at least one in stage 1
    for steps in (2, 7, 164, 437):
        for share in (0.1, 0.25, 0.5, 0.9):
            a, b = ls.stage_steps(steps, share)
            assert a + b == steps and a >= 1 and b >= 1


def _share(value: float, random: float, ideal: float) -> float:
    """The train re-rank's share of the headroom (results_report.capture, which JudgedRerank calls)."""
    from results_report import capture

    return capture(value, {"random": {"m": random}, "headroom": {"m": ideal - random}}, "m")


def test_headroom_share():
    assert _share(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert _share(0.6, 0.6, 1.0) == 0.0
    assert _share(0.5, 0.6, 1.0) == pytest.approx(-0.25)  # worse than random order
    assert np.isnan(_share(0.7, 0.7, 0.7))


def test_curricula_name_known_arms():
    for name, (first, second, share) in ls.CURRICULA.items():
        assert name not in ls.ARMS
        assert first in ls.ARMS and second in ls.ARMS and 0 < share < 1


def test_every_arm_loads_into_a_valid_config():
    """A misspelt key or weight function in ARMS fails here, not after an hour of other arms."""
    from gcl.config import load_config
    from gcl.losses.weights import get_weight_fn
    from gcl.training.config import TrainConfig

    base = load_config(TrainConfig, ROOT / ls.BASE, [])
    for name, overrides in ls.ARMS.items():
        cfg = load_config(TrainConfig, ROOT / ls.BASE, list(overrides))
        assert (cfg == base) == (name == "gcl"), name  # every other arm changes something
        get_weight_fn(cfg.loss.weight_fn, **cfg.loss.weight_params)  # raises ValueError on a bad name
    for name, key in (("gcl-random-exponential", "exponential"), ("gcl-random-reciprocal", "reciprocal_rank"),
                      ("gcl-random-power", "power"), ("gcl-power", "power"), ("gcl-reciprocal", "reciprocal_rank")):
        cfg = load_config(TrainConfig, ROOT / ls.BASE, ls.ARMS[name])
        assert cfg.loss.weight_fn == key
        assert (cfg.batch.sampler == "random") == name.startswith("gcl-random"), name
    with pytest.raises(ValueError, match="reciprocal"):
        get_weight_fn("reciprocal")  # the name is reciprocal_rank


def _graded_train():
    from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, GradedDataset

    rows = [("q0", "a", 3.0), ("q0", "b", 1.0), ("q0", "c", 2.0),
            ("q1", "d", 1.0), ("q1", "e", 3.0), ("q1", "f", 2.0), ("q1", "g", 1.0)]
    j = pd.DataFrame(rows, columns=[QUERY_ID, DOC_ID, SCORE])
    queries = pd.DataFrame({"query": ["red drill", "blue lamp"]}, index=pd.Index(["q0", "q1"], name=QUERY_ID))
    docs = pd.DataFrame({"title": [f"doc {d}" for d in "abcdefgh"]}, index=pd.Index(list("abcdefgh"), name=DOC_ID))
    return GradedDataset(queries=queries, documents=docs, judgments=j, name="train"), {(q, d): s for q, d, s in rows}


class _ByKey:
    """A retriever scoring each (query, document) by ``key(query id, doc id)``."""

    def __init__(self, key):
        self.key = key

    def search(self, queries, docs, k):
        s = np.array([[self.key(q, d) for d in docs.index] for q in queries.index], dtype=np.float32)
        idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize("order, expected", [("grades", 1.0), ("reversed", None)])
def test_train_rerank_against_hand_ceilings(monkeypatch, order, expected):
    """Ideal order captures all of the headroom; reversed grades capture less than random order."""
    import gcl.evaluation.retrievers as retrievers

    train, grade = _graded_train()
    sign = 1.0 if order == "grades" else -1.0
    monkeypatch.setattr(retrievers, "DenseRetriever",
                        lambda model, show_progress=False: _ByKey(lambda q, d: sign * grade.get((q, d), -9.0)))
    rr = ls.JudgedRerank(train, n=10)
    got = rr(model=None)
    assert got["queries"] == 2
    if expected == 1.0:
        assert got["metrics"]["err"] == pytest.approx(got["ideal"]["err"])
        assert got["share"]["err"] == pytest.approx(1.0)
        assert got["share"]["ndcg@10"] == pytest.approx(1.0)
    else:
        assert got["share"]["err"] < 0 and got["share"]["ndcg@10"] < 0
    assert got["random"]["err"] < got["ideal"]["err"]


def test_rerank_of_a_given_retriever():
    """``retriever=`` replaces the model's dense retriever: ideal order captures all the headroom."""
    train, grade = _graded_train()
    got = ls.JudgedRerank(train, n=10)(retriever=_ByKey(lambda q, d: grade.get((q, d), -9.0)))
    assert got["share"]["err"] == pytest.approx(1.0) and got["share"]["ndcg@10"] == pytest.approx(1.0)


def test_bm25_rerank_alone_trains_nothing(tmp_path):
    """``--bm25-rerank`` without ``--arms`` writes BM25's dev re-rank once and trains no arm; a later
    search's report carries it."""
    out = tmp_path / "out"
    args = ["--out", str(out), "--bm25-rerank", "--queries", "0", "--dev-corpus", "50", "--threads", "1",
            "--extra", "data.source=synthetic"]
    ls.main(args)
    assert not (out / "search.jsonl").exists()
    rec = json.loads((out / ls.BM25_RERANK).read_text())
    assert rec["queries"] > 0
    for m in ("ndcg@10", "err"):
        assert 0 < rec["metrics"][m] <= rec["ideal"][m] + 1e-9
        lo, hi = rec["random"][m], rec["ideal"][m]
        assert rec["share"][m] == pytest.approx((rec["metrics"][m] - lo) / (hi - lo))
    # a record of a trained arm, then the report shows the BM25 line beside it
    fake = {"arm": "gcl", "seed": 0, "history": [{"step": 1, "dev/ndcg@10": 0.5, "dev/err": 0.4, "dev/rbp@0.9": 0.3,
                                                   "dev/map@100": 0.2}], "seconds": 1.0, "queries": 0, "epochs": 1,
            "steps": 1, "dev_corpus": 50, "threads": 1, "load_start": 0.0, "load_end": 0.0}
    (out / "search.jsonl").write_text(json.dumps(fake) + "\n")
    ls.main(["--out", str(out), "--report"])
    md = (out / "search.md").read_text()
    assert f"new-query order: {rec['share']['err']:.1%}" in md


def test_curriculum_arm_trains_stage_two_from_stage_one(tmp_path, monkeypatch):
    """A curriculum arm runs two trainings with the budget split; stage 2 loads stage 1's saved
    model, and the record's history carries both stages on one step axis."""
    from tiny_models import make_tiny_sentence_transformer

    import gcl.training.trainer as trainer_mod

    tiny = str(make_tiny_sentence_transformer(tmp_path / "tiny"))
    monkeypatch.setenv("GCL_CACHE_DIR", str(tmp_path / "cache"))
    seen: list[tuple[str, int, bool]] = []
    real = trainer_mod.Trainer

    class Recording(real):
        def __init__(self, cfg, **kw):
            tm = cfg.model.text_model
            seen.append((tm, cfg.optim.steps, Path(tm, "model.safetensors").exists()))
            super().__init__(cfg, **kw)

    monkeypatch.setattr(trainer_mod, "Trainer", Recording)
    out = tmp_path / "out"
    ls.main(["--out", str(out), "--arms", "gcl-random-then-gcl", "--queries", "0", "--epochs", "1",
             "--evals", "2", "--dev-corpus", "50", "--threads", "1", "--train-rerank", "20", "--dev-rerank",
             "--extra", "data.source=synthetic", f"model.text_model={tiny}", "model.freeze_layers=1",
             "batch.batch_size=16"])
    (rec,) = [json.loads(x) for x in (out / "search.jsonl").read_text().splitlines()]
    assert len(seen) == 2
    (tm1, s1, _), (tm2, s2, existed) = seen
    assert tm1 == tiny and tm2.endswith("run1/final") and existed
    assert (s1, s2) == ls.stage_steps(rec["steps"], ls.CURRICULA["gcl-random-then-gcl"][2])
    steps = [h["step"] for h in rec["history"]]
    assert steps == sorted(steps) and steps[-1] == rec["steps"]
    assert {h["stage"] for h in rec["history"]} == {0, 1}
    assert max(h["step"] for h in rec["history"] if h["stage"] == 0) == s1
    tr = rec["train_rerank"]
    assert 0 < tr["queries"] <= 20 and set(tr["share"]) == {"ndcg@10", "err"}
    assert tr["random"]["err"] <= tr["ideal"]["err"]
    dr = rec["dev_rerank"]
    assert dr["queries"] > 0 and dr["random"]["err"] <= dr["ideal"]["err"]
    md = (out / "search.md").read_text()
    assert "trained-query order" in md and "new-query order" in md
