"""gcl.metrics equals pytrec_eval (trec_eval) where trec_eval defines the metric, ties included.

trec_eval ranks by score descending and breaks ties by document id descending; judge_run applies
the same rule, so runs with many tied scores must give identical values. Also: judge_indices on
the same ranking (as an index matrix) gives exactly what judge_run gives.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.metrics import compute_metrics, judge_indices, judge_run

pytrec_eval = pytest.importorskip("pytrec_eval")

TOL = 1e-9
CUTS = (1, 2, 3, 5, 10)
MEASURES = {
    "ndcg_cut." + ",".join(map(str, CUTS)),
    "map_cut." + ",".join(map(str, CUTS + (1000,))),
    "recall." + ",".join(map(str, CUTS)),
    "P." + ",".join(map(str, CUTS)),
    "recip_rank",
}
# ours -> pytrec_eval's key
PAIRS = {
    **{f"ndcg@{k}": f"ndcg_cut_{k}" for k in CUTS},
    **{f"map@{k}": f"map_cut_{k}" for k in CUTS + (1000,)},
    **{f"recall@{k}": f"recall_{k}" for k in CUTS},
    **{f"p@{k}": f"P_{k}" for k in CUTS},
    "mrr@1000": "recip_rank",
}

DOCS = [f"d{i}" for i in range(25)] + ["D3", "a", "z", "d1x"]


@st.composite
def tied_runs(draw):
    n_q = draw(st.integers(1, 6))
    qrels, run = {}, {}
    for qi in range(n_q):
        q = f"q{qi:02d}"
        docs = draw(st.lists(st.sampled_from(DOCS), unique=True, max_size=10))
        qrels[q] = {d: draw(st.integers(0, 100)) for d in docs}
        kind = draw(st.sampled_from(["absent", "empty", "tied", "tied", "float"]))
        if kind == "empty":
            run[q] = {}
        elif kind != "absent":
            retrieved = draw(st.lists(st.sampled_from(DOCS), unique=True, min_size=1, max_size=15))
            if kind == "tied":
                scores = st.sampled_from([0.0, 1.0, 2.5, -3.0])
            else:
                scores = st.floats(-5, 5, allow_nan=False)
            run[q] = {d: draw(scores) for d in retrieved}
    run["q_only_in_run"] = {"d1": 1.0, "d2": 1.0}
    return qrels, run


def pytrec_values(qrels, run, level):
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES, relevance_level=level)
    return evaluator.evaluate(run)


def assert_equal_to_pytrec(qrels, run, level):
    judged = judge_run(run, qrels)
    ours = compute_metrics(judged, list(PAIRS), relevance_level=level)
    theirs = pytrec_values(qrels, run, level)
    qids = list(judged.query_ids)
    assert qids == sorted(qrels)
    compared = 0
    for i, q in enumerate(qids):
        if q not in theirs:
            # pytrec_eval skips a query without a run or without any judgment; ours keeps it
            # (every query of qrels is evaluated) and scores it 0 on everything.
            assert q not in run or not qrels[q]
            assert all(ours[name][i] == 0.0 for name in PAIRS), q
            continue
        for name, key in PAIRS.items():
            got, want = ours[name][i], theirs[q][key]
            assert abs(got - want) <= TOL, (q, name, got, want)
            compared += 1
    assert set(theirs) - set(qids) == set()  # the run-only query is ignored by both
    return compared


@settings(max_examples=200, deadline=None)
@given(tied_runs(), st.sampled_from([1, 2, 50]))
def test_equal_to_pytrec_eval_with_ties(case, level):
    qrels, run = case
    assert_equal_to_pytrec(qrels, run, level)


def test_equal_to_pytrec_eval_larger_random_run():
    """60 queries x 200 documents, scores rounded to force ties, grades 0..100, fixed seed."""
    rng = np.random.default_rng(7)
    qrels, run = {}, {}
    for qi in range(60):
        q = f"q{qi}"
        judged = rng.choice(400, size=rng.integers(1, 40), replace=False)
        qrels[q] = {f"doc{d}": int(g) for d, g in zip(judged, rng.integers(0, 101, len(judged)))}
        retrieved = rng.choice(400, size=200, replace=False)
        run[q] = {f"doc{d}": float(s) for d, s in zip(retrieved, np.round(rng.normal(size=200), 1))}
    compared = assert_equal_to_pytrec(qrels, run, 1)
    assert compared == 60 * len(PAIRS)


def test_tie_rule_is_descending_doc_id():
    """Four tied documents: trec_eval ranks zz, c, b, a; the only relevant one, c, is 2nd."""
    qrels = {"q": {"a": 0, "c": 1}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0, "zz": 1.0}}
    judged = judge_run(run, qrels)
    np.testing.assert_array_equal(judged.gains[0], [0, 1, 0, 0])
    assert compute_metrics(judged, ["mrr@10"])["mrr@10"][0] == 0.5
    assert pytrec_values(qrels, run, 1)["q"]["recip_rank"] == 0.5


def test_scores_tie_at_float32_precision():
    """trec_eval stores scores as C floats: 2**24 + 1 and 2**24 tie, the larger id ('b') wins."""
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 16777217.0, "b": 16777216.0}}
    assert pytrec_values(qrels, run, 1)["q"]["recip_rank"] == 0.5
    np.testing.assert_array_equal(judge_run(run, qrels).gains, [[0.0, 1.0]])
    # Distinct in float32: the score decides.
    run = {"q": {"a": 1.5, "b": 1.25}}
    assert pytrec_values(qrels, run, 1)["q"]["recip_rank"] == 1.0
    np.testing.assert_array_equal(judge_run(run, qrels).gains, [[1.0, 0.0]])


@settings(max_examples=100, deadline=None)
@given(tied_runs())
def test_judge_indices_agrees_with_judge_run(case):
    """The trec_eval order as an index matrix through judge_indices == judge_run, exactly."""
    qrels, run = case
    qids = sorted(qrels)
    vocab = {d: i for i, d in enumerate(sorted(set(DOCS)))}
    rows = []
    for q in qids:
        docs = run.get(q, {})
        # trec_eval's rule, by hand: float32 score descending, then document id descending.
        order = sorted(docs.items(), key=lambda x: (float(np.float32(x[1])), x[0]), reverse=True)
        rows.append([vocab[d] for d, _ in order])
    depth = max((len(r) for r in rows), default=0)
    ranked = np.full((len(qids), depth), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ranked[i, : len(r)] = r
    qq = [i for i, q in enumerate(qids) for _ in qrels[q]]
    dd = [vocab[d] for q in qids for d in qrels[q]]
    gg = [qrels[q][d] for q in qids for d in qrels[q]]

    from_indices = judge_indices(ranked, qq, dd, gg, query_ids=qids)
    from_dicts = judge_run(run, qrels)

    assert list(from_indices.query_ids) == list(from_dicts.query_ids)
    np.testing.assert_array_equal(from_indices.gains, from_dicts.gains)
    np.testing.assert_array_equal(from_indices.n_retrieved, from_dicts.n_retrieved)
    np.testing.assert_array_equal(from_indices.ideal, from_dicts.ideal)
    np.testing.assert_array_equal(from_indices.n_judged, from_dicts.n_judged)
    np.testing.assert_array_equal(from_indices.is_judged, from_dicts.is_judged)
    a = compute_metrics(from_indices)
    b = compute_metrics(from_dicts)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
