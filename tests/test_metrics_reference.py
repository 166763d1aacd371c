"""Every metric against a naive reference: explicit Python loops, one query at a time.

The references below are written from the definitions (docs/metrics.md, trec_eval, the Marqo-GS
protocol) and share no code with gcl.metrics. Hypothesis draws random qrels (grades 0..100,
judged-not-relevant and unjudged documents), random runs with tied scores, empty runs and queries
without any relevant document; every per-query value must agree to 1e-9.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.metrics import compute_metrics, judge_indices, judge_run

TOL = 1e-9

# --- naive references (one query: `ranking` = grades in rank order, `judged` = all its grades) --


def ref_order(docs: dict[str, float]) -> list[str]:
    """trec_eval's order: score (as a C float: float32) descending, then document id descending."""
    key = lambda x: (float(np.float32(x[1])), x[0])  # noqa: E731
    return [d for d, _ in sorted(docs.items(), key=key, reverse=True)]


def ref_ndcg(ranking: list[float], judged: list[float], k: int) -> float:
    dcg = 0.0
    for i, g in enumerate(ranking[:k]):
        dcg += g / math.log2(i + 2)
    ideal = sorted((g for g in judged if g > 0), reverse=True)
    idcg = 0.0
    for i, g in enumerate(ideal[:k]):
        idcg += g / math.log2(i + 2)
    return dcg / idcg if idcg > 0 else 0.0


def ref_ap(ranking: list[float], judged: list[float], k: int, level: float) -> float:
    n_rel = sum(1 for g in judged if g >= level)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, g in enumerate(ranking[:k]):
        if g >= level:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


def ref_rr(ranking: list[float], k: int, level: float) -> float:
    for i, g in enumerate(ranking[:k]):
        if g >= level:
            return 1.0 / (i + 1)
    return 0.0


def ref_recall(ranking: list[float], judged: list[float], k: int, level: float) -> float:
    n_rel = sum(1 for g in judged if g >= level)
    if n_rel == 0:
        return 0.0
    return sum(1 for g in ranking[:k] if g >= level) / n_rel


def ref_precision(ranking: list[float], k: int, level: float) -> float:
    return sum(1 for g in ranking[:k] if g >= level) / k


def ref_err(ranking: list[float], judged: list[float], k: int | None = None) -> float:
    """The protocol's loop, verbatim; integer grades use exact Python integers for 2**rel."""
    max_rel = max(judged, default=0)
    err, p_stop = 0.0, 1.0
    for rank, rel in enumerate(ranking[:k], start=1):
        if float(rel).is_integer() and float(max_rel).is_integer():
            r = (2 ** int(rel) - 1) / 2 ** int(max_rel)
        else:
            r = (2.0**rel - 1) / 2.0**max_rel
        err += p_stop * r / rank
        p_stop *= 1 - r
    return err


def ref_rbp(ranking: list[float], judged: list[float], p: float) -> float:
    max_rel = max(judged, default=0)
    if max_rel == 0:
        return 0.0
    total = 0.0
    for rank, rel in enumerate(ranking, start=1):
        total += rel / max_rel * p ** (rank - 1)
    return (1 - p) * total


def reference_values(
    rankings: list[list[float]], judged: list[list[float]], metric: str, level: float
) -> list[float]:
    family, _, arg = metric.partition("@")
    out = []
    for ranking, grades in zip(rankings, judged):
        if family == "ndcg":
            out.append(ref_ndcg(ranking, grades, int(arg)))
        elif family == "map":
            out.append(ref_ap(ranking, grades, int(arg), level))
        elif family == "mrr":
            out.append(ref_rr(ranking, int(arg), level))
        elif family == "recall":
            out.append(ref_recall(ranking, grades, int(arg), level))
        elif family == "p":
            out.append(ref_precision(ranking, int(arg), level))
        elif family == "err":
            out.append(ref_err(ranking, grades, int(arg) if arg else None))
        elif family == "rbp":
            out.append(ref_rbp(ranking, grades, float(arg)))
        else:  # pragma: no cover
            raise AssertionError(metric)
    return out


# --- random cases -------------------------------------------------------------------------------

DOCS = [f"d{i}" for i in range(14)]  # "d10" < "d2" as strings: id order differs from number order


@st.composite
def graded_cases(draw, grades=st.integers(0, 100)):
    """(qrels, run): some queries without a run, some runs empty, ties in scores, unjudged docs."""
    n_q = draw(st.integers(0, 5))
    qrels, run = {}, {}
    for qi in range(n_q):
        q = f"q{qi}"
        judged_docs = draw(st.lists(st.sampled_from(DOCS), unique=True, max_size=8))
        qrels[q] = {d: draw(grades) for d in judged_docs}
        if draw(st.booleans()) or not judged_docs:
            # Sometimes no relevant document at all.
            if draw(st.integers(0, 4)) == 0:
                qrels[q] = {d: 0 for d in judged_docs}
        mode = draw(st.sampled_from(["absent", "empty", "docs", "docs", "docs"]))
        if mode == "empty":
            run[q] = {}
        elif mode == "docs":
            retrieved = draw(st.lists(st.sampled_from(DOCS), unique=True, min_size=1, max_size=12))
            # Few distinct scores -> many ties.
            run[q] = {d: draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0])) for d in retrieved}
    # A query that is only in the run (ignored).
    run["zz_not_judged"] = {"d1": 1.0}
    return qrels, run


# Every family at several cut-offs on every example, plus a few drawn names (any k, any P).
FIXED_METRICS = [
    f"{family}@{k}"
    for family in ("ndcg", "map", "mrr", "recall", "p", "err")
    for k in (1, 2, 3, 5, 20)
] + ["err", "rbp@0.5", "rbp@0.9"]

METRIC_NAMES = st.lists(
    st.one_of(
        st.builds(
            lambda f, k: f"{f}@{k}",
            st.sampled_from(["ndcg", "map", "mrr", "recall", "p", "err"]),
            st.integers(1, 15),
        ),
        st.just("err"),
        st.builds(lambda p: f"rbp@{p}", st.sampled_from([0.1, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])),
    ),
    min_size=1,
    max_size=6,
).map(lambda drawn: FIXED_METRICS + drawn)


def rankings_from_dicts(qrels, run):
    qids = sorted(qrels)
    rankings = [[float(qrels[q].get(d, 0)) for d in ref_order(run.get(q, {}))] for q in qids]
    judged = [[float(g) for g in qrels[q].values()] for q in qids]
    return qids, rankings, judged


def assert_matches_reference(qrels, run, metrics, level):
    judged_run = judge_run(run, qrels)
    ours = compute_metrics(judged_run, metrics, relevance_level=level)
    qids, rankings, judged = rankings_from_dicts(qrels, run)
    assert list(judged_run.query_ids) == qids
    assert list(ours) == list(dict.fromkeys(metrics))
    for name in metrics:
        expected = reference_values(rankings, judged, name, level)
        assert ours[name].shape == (len(qids),)
        assert ours[name].dtype == np.float64
        np.testing.assert_allclose(ours[name], expected, rtol=0, atol=TOL, err_msg=name)


@settings(max_examples=150, deadline=None)
@given(graded_cases(), METRIC_NAMES, st.sampled_from([1, 2, 37, 100]))
def test_metrics_equal_naive_loops(case, metrics, level):
    qrels, run = case
    assert_matches_reference(qrels, run, metrics, level)


@settings(max_examples=60, deadline=None)
@given(
    graded_cases(grades=st.sampled_from([0.0, 1.0, 1.33, 1.67, 2.0, 2.33, 2.67, 3.0])),
    METRIC_NAMES,
    st.sampled_from([1, 1.5, 2.5]),
)
def test_metrics_equal_naive_loops_fractional_grades(case, metrics, level):
    """Home Depot style mean-of-raters grades (1.00, 1.33, ..., 3.00)."""
    qrels, run = case
    assert_matches_reference(qrels, run, metrics, level)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_judge_indices_equal_naive_loops(data):
    """judge_indices on a padded index matrix (the order as given) against per-row loops."""
    n_q = data.draw(st.integers(1, 5))
    depth = data.draw(st.integers(0, 10))
    n_docs = 12
    ranked = np.full((n_q, depth), -1, dtype=np.int64)
    for q in range(n_q):
        n = data.draw(st.integers(0, depth))
        row = data.draw(st.lists(st.integers(0, n_docs - 1), unique=True, min_size=n, max_size=n))
        ranked[q, :n] = row
    qq, dd, gg = [], [], []
    for q in range(n_q):
        docs = data.draw(st.lists(st.integers(0, n_docs - 1), unique=True, max_size=6))
        for d in docs:
            qq.append(q)
            dd.append(d)
            gg.append(data.draw(st.integers(0, 100)))
    perm = np.random.default_rng(0).permutation(len(qq))  # qrels need not be sorted
    qq, dd, gg = (np.asarray(a, dtype=np.int64)[perm] for a in (qq, dd, gg))
    metrics = data.draw(METRIC_NAMES)

    judged = judge_indices(ranked, qq, dd, gg)
    grade_of = {(int(q), int(d)): float(g) for q, d, g in zip(qq, dd, gg)}
    rankings = [[grade_of.get((q, int(d)), 0.0) for d in ranked[q] if d >= 0] for q in range(n_q)]
    judged_grades = [[g for (qi, _), g in grade_of.items() if qi == q] for q in range(n_q)]
    ours = compute_metrics(judged, metrics)
    for name in metrics:
        expected = reference_values(rankings, judged_grades, name, 1)
        np.testing.assert_allclose(ours[name], expected, rtol=0, atol=TOL, err_msg=name)
    np.testing.assert_array_equal(judged.n_retrieved, [len(r) for r in rankings])
    for q in range(n_q):
        assert list(judged.gains[q, : len(rankings[q])]) == rankings[q]
        assert not judged.gains[q, len(rankings[q]) :].any()
        ideal = sorted(judged_grades[q], reverse=True)
        assert list(judged.ideal[q, : len(ideal)]) == ideal
        assert not judged.ideal[q, len(ideal) :].any()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 100), min_size=1, max_size=30),
    st.integers(0, 100),
)
def test_err_exact_with_large_grades(ranking, extra):
    """ERR with grades up to 100 against exact rational arithmetic (2**100 as an integer)."""
    max_rel = max(ranking + [extra])
    exact, p_stop = Fraction(0), Fraction(1)
    for rank, rel in enumerate(ranking, start=1):
        r = Fraction(2**rel - 1, 2**max_rel)
        exact += p_stop * r / rank
        p_stop *= 1 - r
    docs = list(range(len(ranking)))
    judged = judge_indices(
        np.asarray([docs]),
        np.zeros(len(docs) + 1, dtype=np.int64),
        np.asarray(docs + [len(docs)]),
        np.asarray(ranking + [extra], dtype=np.float64),
    )
    value = compute_metrics(judged, ["err"])["err"][0]
    assert math.isfinite(value)
    assert value == pytest.approx(float(exact), rel=1e-12, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(graded_cases(), METRIC_NAMES)
def test_values_lie_in_unit_interval(case, metrics):
    qrels, run = case
    for name, values in compute_metrics(judge_run(run, qrels), metrics).items():
        assert np.all((values >= 0) & (values <= 1 + 1e-12)), name


@settings(max_examples=60, deadline=None)
@given(graded_cases(), st.integers(1, 15), st.sampled_from([1, 2, 50]))
def test_kernels_agree_on_dense_and_sparse_rankings(case, k, level):
    """Kernels read the sparse form (JudgedRun.hits); the dense form (every rank) must agree."""
    from gcl.metrics import cascade, ranking

    qrels, run = case
    judged = judge_run(run, qrels)
    sparse = judged.hits
    dense_ranks = np.broadcast_to(np.arange(1, judged.depth + 1), judged.gains.shape)
    dense = (dense_ranks, judged.gains)
    assert sparse.ranks.shape[1] <= judged.depth
    n_rel = judged.n_relevant(level)
    pairs = {
        "ndcg": lambda r, g: ranking.ndcg(r, g, judged.ideal, k),
        "ap": lambda r, g: ranking.average_precision(r, g, n_rel, k, level),
        "rr": lambda r, g: ranking.reciprocal_rank(r, g, k, level),
        "recall": lambda r, g: ranking.recall(r, g, n_rel, k, level),
        "p": lambda r, g: ranking.precision(r, g, k, level),
        "err": lambda r, g: cascade.err(r, g, judged.max_grade),
        "err@k": lambda r, g: cascade.err(r, g, judged.max_grade, k),
        "rbp": lambda r, g: cascade.rbp(r, g, judged.max_grade, 0.8),
    }
    for name, kernel in pairs.items():
        np.testing.assert_allclose(kernel(*sparse), kernel(*dense), rtol=0, atol=1e-12, err_msg=name)
