"""judge_run (vectorised) equals the per-query implementation it replaced, field for field.

The reference below is the previous ``judge_run`` verbatim: a Python loop over queries that sorts
each query's run with numpy (float32 scores, ties by document id descending) into an index
matrix and hands it to ``judge_indices``. Inputs are generated to hit every branch: heavy ties,
scores equal only in float32, -0.0 / 0.0, infinities and float32 overflow, negative scores,
unicode ids, runs listed best first and in any order, queries missing on either side, empty
dicts, runs of different lengths.
"""

from __future__ import annotations

from itertools import chain, repeat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.metrics import judge_indices, judge_run


def judge_run_per_query(run, qrels):
    qids = sorted(qrels)
    sizes = [len(qrels[q]) for q in qids]
    n_judgments = sum(sizes)
    first = np.cumsum(sizes) - np.asarray(sizes, dtype=np.int64)
    grades = np.fromiter(
        chain.from_iterable(qrels[q].values() for q in qids), dtype=np.float64, count=n_judgments
    )
    unjudged = n_judgments
    depth = max((len(run.get(q) or ()) for q in qids), default=0)
    ranked = np.full((len(qids), depth), -1, dtype=np.int64)
    for i, q in enumerate(qids):
        docs = run.get(q)
        if not docs:
            continue
        ids = list(docs)
        n = len(ids)
        score = np.fromiter(docs.values(), dtype=np.float64, count=n)
        if np.isnan(score).any():
            raise ValueError(f"query {q!r}: NaN score; scores must be comparable numbers")
        with np.errstate(over="ignore"):
            score32 = score.astype(np.float32)
        order = np.argsort(score32, kind="stable")[::-1]
        ordered = score32[order]
        if n > 1 and (ordered[1:] == ordered[:-1]).any():
            id_rank = np.empty(n, dtype=np.int64)
            id_rank[sorted(range(n), key=ids.__getitem__)] = np.arange(n)
            order = np.lexsort((id_rank, score32))[::-1]
        judgment = dict(zip(qrels[q], range(first[i], first[i] + sizes[i])))
        doc = np.fromiter(map(judgment.get, ids, repeat(unjudged)), dtype=np.int64, count=n)
        ranked[i, :n] = doc[order]
    return judge_indices(
        ranked,
        np.repeat(np.arange(len(qids), dtype=np.int64), sizes),
        np.arange(n_judgments, dtype=np.int64),
        grades,
        query_ids=np.asarray(qids, dtype=object),
    )


def assert_same(a, b):
    np.testing.assert_array_equal(a.query_ids, b.query_ids)
    for field in ("gains", "n_retrieved", "ideal", "n_judged", "is_judged"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        np.testing.assert_array_equal(x, y, err_msg=field)


DOC_IDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "zz", "B", "é", "ü1", "doc10", "doc9", "日本", ""])
SCORES = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, 16777216.0, 16777217.0, 0.1, 0.1 + 1e-12,
                     float("inf"), float("-inf"), 1e300, -1e300, 3.4e38]),
    st.floats(allow_nan=False, width=64, min_value=-1e6, max_value=1e6),
    st.integers(-3, 3).map(float),
)
QIDS = st.sampled_from(["q1", "q2", "q3", "q10", "Q", "ß"])


@st.composite
def run_and_qrels(draw):
    run = draw(st.dictionaries(QIDS, st.dictionaries(DOC_IDS, SCORES, max_size=14), max_size=5))
    if draw(st.booleans()):  # some runs listed best first, like TREC files
        run = {q: dict(sorted(d.items(), key=lambda kv: -kv[1])) for q, d in run.items()}
    qrels = draw(st.dictionaries(QIDS, st.dictionaries(DOC_IDS, st.integers(0, 100), max_size=8), max_size=5))
    return run, qrels


@settings(max_examples=400, deadline=None)
@given(run_and_qrels())
def test_equals_the_per_query_implementation(case):
    run, qrels = case
    assert_same(judge_run(run, qrels), judge_run_per_query(run, qrels))


@pytest.mark.parametrize("sorted_run", [True, False])
def test_equals_on_a_larger_run_with_ties(sorted_run):
    rng = np.random.default_rng(5)
    run, qrels = {}, {}
    for q in range(60):
        n = int(rng.integers(0, 300))
        scores = rng.integers(0, 40, size=n) / 4.0  # many ties
        if sorted_run:
            scores = np.sort(scores)[::-1]
        run[f"q{q}"] = {f"d{i}": float(s) for i, s in zip(rng.permutation(400)[:n], scores)}
        judged = rng.permutation(400)[: int(rng.integers(0, 30))]
        qrels[f"q{q}"] = {f"d{i}": int(g) for i, g in zip(judged, rng.integers(0, 5, size=len(judged)))}
    assert_same(judge_run(run, qrels), judge_run_per_query(run, qrels))


def test_float32_ties_and_signed_zero_by_hand():
    # 16777217 rounds to 16777216 in float32: a tie, the larger id first; -0.0 ties 0.0
    run = {"q": {"a": 16777217.0, "b": 16777216.0, "c": -0.0, "d": 0.0, "e": 1e300, "f": float("inf")}}
    qrels = {"q": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}}
    judged = judge_run(run, qrels)
    # order: f, e (both inf in float32; "f" > "e"), b, a (tied in float32), d, c (0.0 == -0.0)
    np.testing.assert_array_equal(judged.gains, [[6, 5, 2, 1, 4, 3]])
    assert_same(judged, judge_run_per_query(run, qrels))


def test_nan_error_names_the_first_query_with_one():
    run = {"q1": {"a": 1.0}, "q2": {"a": 1.0, "b": float("nan")}, "q3": {"a": float("nan")}}
    with pytest.raises(ValueError, match="query 'q2': NaN score"):
        judge_run(run, {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {"a": 1}})
