"""Hand-computed metric values (the arithmetic is in the comments), input errors and bad names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gcl.metrics import (
    DEFAULT_METRICS,
    REFERENCE_COLUMNS,
    JudgedRun,
    MetricSpec,
    compute_metrics,
    judge_indices,
    judge_run,
    parse_metric,
)

# One query. Judged: a=3, b=0, c=2, d=1 (d never retrieved). Run, in rank order: a, b, c, e
# (e unjudged), so the grades by rank are [3, 0, 2, 0].
QRELS = {"q": {"a": 3, "b": 0, "c": 2, "d": 1}}
RUN = {"q": {"a": 4.0, "b": 3.0, "c": 2.0, "e": 1.0}}


@pytest.fixture
def values():
    names = ["ndcg@1", "ndcg@4", "map@2", "map@1000", "mrr@1000", "recall@3", "p@3", "p@10",
             "err", "err@2", "rbp@0.5"]
    return {k: float(v[0]) for k, v in compute_metrics(judge_run(RUN, QRELS), names).items()}


def test_judged_run_layout():
    judged = judge_run(RUN, QRELS)
    np.testing.assert_array_equal(judged.gains, [[3, 0, 2, 0]])
    np.testing.assert_array_equal(judged.is_judged, [[True, True, True, False]])
    np.testing.assert_array_equal(judged.ideal, [[3, 2, 1, 0]])
    assert judged.n_retrieved.tolist() == [4]
    assert judged.n_judged.tolist() == [4]
    assert judged.max_grade.tolist() == [3.0]
    assert judged.n_relevant(1).tolist() == [3]
    assert judged.n_relevant(3).tolist() == [1]
    assert "n_queries=1" in repr(judged)


def test_ndcg_by_hand(values):
    # DCG@4 = 3/log2(2) + 0/log2(3) + 2/log2(4) + 0/log2(5) = 3 + 0 + 1 + 0 = 4
    # IDCG@4 = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.2618595... + 0.5 (judged d counts)
    assert values["ndcg@4"] == pytest.approx(4 / (3 + 2 / math.log2(3) + 0.5), abs=1e-12)
    # @1: DCG = 3, IDCG = 3
    assert values["ndcg@1"] == pytest.approx(1.0, abs=1e-12)


def test_map_mrr_recall_p_by_hand(values):
    # relevant (grade >= 1): a, c, d -> R = 3. Hits at ranks 1 (P=1/1) and 3 (P=2/3).
    assert values["map@1000"] == pytest.approx((1 + 2 / 3) / 3, abs=1e-12)  # 5/9
    assert values["map@2"] == pytest.approx(1 / 3, abs=1e-12)  # only the hit at rank 1, / R
    assert values["mrr@1000"] == 1.0
    assert values["recall@3"] == pytest.approx(2 / 3, abs=1e-12)
    assert values["p@3"] == pytest.approx(2 / 3, abs=1e-12)
    assert values["p@10"] == pytest.approx(2 / 10, abs=1e-12)  # divides by k, not by 4


def test_cut_offs_by_hand():
    # Ranking x (unjudged), a (grade 1): the first relevant doc is at rank 2.
    # mrr@1 = 0 (cut before it), mrr@2 = 1/2; recall@1 = 0, recall@2 = 1/1; p@1 = 0, p@2 = 1/2;
    # ndcg@1 = 0, ndcg@2 = (1/log2(3)) / (1/log2(2)) = 0.6309...; map@2 = (1/2) / 1.
    j = judge_run({"q": {"x": 2.0, "a": 1.0}}, {"q": {"a": 1}})
    v = {k: float(x[0]) for k, x in compute_metrics(
        j, ["mrr@1", "mrr@2", "recall@1", "recall@2", "p@1", "p@2", "ndcg@1", "ndcg@2", "map@2"]
    ).items()}
    assert v == pytest.approx({"mrr@1": 0.0, "mrr@2": 0.5, "recall@1": 0.0, "recall@2": 1.0,
                               "p@1": 0.0, "p@2": 0.5, "ndcg@1": 0.0, "ndcg@2": 1 / math.log2(3),
                               "map@2": 0.5}, abs=1e-12)


def test_relevance_level_by_hand():
    # relevance_level=3: only a (rank 1) is relevant -> AP = 1/1 / 1, recall@3 = 1, P@3 = 1/3.
    # relevance_level=2: a and c -> AP = (1 + 2/3) / 2; nDCG does not change with the level.
    j = judge_run(RUN, QRELS)
    at3 = compute_metrics(j, ["map@10", "recall@3", "p@3"], relevance_level=3)
    assert [float(at3[k][0]) for k in at3] == pytest.approx([1.0, 1.0, 1 / 3])
    at2 = compute_metrics(j, ["map@10", "ndcg@4"], relevance_level=2)
    at1 = compute_metrics(j, ["ndcg@4"])
    assert float(at2["map@10"][0]) == pytest.approx((1 + 2 / 3) / 2)
    assert at2["ndcg@4"][0] == at1["ndcg@4"][0]


def test_err_by_hand(values):
    # max_rel = 3, so R = (2**g - 1) / 8:  R_a = 7/8, R_b = 0, R_c = 3/8, R_e = 0.
    # rank 1: ERR = 1 * 7/8 / 1 = 7/8;           p_stop = 1/8
    # rank 3: ERR += 1/8 * 3/8 / 3 = 1/64       -> ERR = 57/64 = 0.890625
    assert values["err"] == pytest.approx(57 / 64, abs=1e-15)
    assert values["err@2"] == pytest.approx(7 / 8, abs=1e-15)


def test_rbp_by_hand(values):
    # (1 - 0.5) * (3/3 * 0.5**0 + 0 + 2/3 * 0.5**2 + 0) = 0.5 * (1 + 1/6) = 7/12
    assert values["rbp@0.5"] == pytest.approx(7 / 12, abs=1e-15)


def test_err_with_grade_100_no_overflow():
    # Grades [100, 100], max_rel = 100: R = (2**100 - 1) / 2**100 = 1 - 2**-100, which is 1.0 in
    # float64, so ERR = R + (1 - R) * R / 2 = 1.0.
    judged = judge_indices(np.array([[0, 1]]), [0, 0], [0, 1], [100, 100])
    assert compute_metrics(judged, ["err"])["err"][0] == 1.0
    # Grades [1] with max_rel = 100 (an unretrieved doc): R = 1 / 2**100 = 7.888609052210118e-31.
    judged = judge_indices(np.array([[0]]), [0, 0], [0, 1], [1, 100])
    assert compute_metrics(judged, ["err"])["err"][0] == pytest.approx(2.0**-100, rel=1e-14)
    # Far beyond float64's 2**1023: 2**2000 would overflow, the computation must not.
    judged = judge_indices(np.array([[0, 1]]), [0, 0], [0, 1], [1999, 2000])
    # R_1 = (2**1999 - 1)/2**2000 = 1/2; R_2 = 1 - 2**-2000 = 1.0 -> ERR = 1/2 + 1/2 * 1 / 2 = 3/4
    assert compute_metrics(judged, ["err"])["err"][0] == pytest.approx(0.75, abs=1e-15)


def test_no_relevant_document_and_no_judgment_score_zero():
    # Row 0: judged, but only grade 0. Row 1: no judgment at all. Row 2: nothing retrieved.
    ranked = np.array([[0, 1], [2, 3], [-1, -1]])
    judged = judge_indices(ranked, [0, 2], [0, 5], [0, 4])
    for name, v in compute_metrics(judged).items():
        np.testing.assert_array_equal(v, [0.0, 0.0, 0.0], err_msg=name)
    assert judged.n_retrieved.tolist() == [2, 2, 0]
    assert judged.n_judged.tolist() == [1, 0, 1]


def test_query_missing_from_run_scores_zero_and_run_only_query_is_ignored():
    judged = judge_run({"other": {"a": 1.0}}, {"q2": {"a": 1}, "q1": {"a": 2}})
    assert list(judged.query_ids) == ["q1", "q2"]
    assert judged.depth == 0
    for name, v in compute_metrics(judged).items():
        np.testing.assert_array_equal(v, [0.0, 0.0], err_msg=name)


def test_empty_inputs():
    judged = judge_run({}, {})
    assert judged.n_queries == 0
    assert all(v.shape == (0,) for v in compute_metrics(judged).values())
    judged = judge_indices(np.zeros((0, 5), dtype=np.int64), [], [], [])
    assert all(v.shape == (0,) for v in compute_metrics(judged).values())


def test_ties_in_judge_run_follow_doc_id_descending():
    # All scores tie: order is zz, c, b, a (descending ids). Relevant c is at rank 2.
    judged = judge_run({"q": dict.fromkeys(["a", "b", "c", "zz"], 1.0)}, {"q": {"c": 1}})
    np.testing.assert_array_equal(judged.gains, [[0, 1, 0, 0]])


def test_judge_indices_keeps_given_order():
    # Order as given, no re-sorting: doc 1 (grade 2) at rank 1, doc 0 (grade 1) at rank 2.
    judged = judge_indices(np.array([[1, 0]]), [0, 0], [0, 1], [1, 2])
    np.testing.assert_array_equal(judged.gains, [[2, 1]])


def test_judge_indices_query_ids():
    judged = judge_indices(np.array([[0], [0]]), [1], [0], [1], query_ids=["x", "y"])
    assert list(judged.query_ids) == ["x", "y"]
    assert compute_metrics(judged, ["mrr@10"])["mrr@10"].tolist() == [0.0, 1.0]
    assert list(judge_indices(np.array([[0]]), [], [], []).query_ids) == ["0"]


@pytest.mark.parametrize(
    "ranked, qq, dd, gg, match",
    [
        (np.array([0, 1]), [], [], [], "2-d"),
        (np.array([[0.0, 1.0]]), [], [], [], "integer"),
        (np.array([[0, -1, 1]]), [], [], [], "padding"),
        (np.array([[0, -2]]), [], [], [], "negative index"),
        (np.array([[0]]), [1], [0], [1], "qrel_query"),
        (np.array([[0]]), [0], [-1], [1], "qrel_doc"),
        (np.array([[0]]), [0], [0], [-1], "finite and >= 0"),
        (np.array([[0]]), [0], [0], [np.nan], "finite and >= 0"),
        (np.array([[0]]), [0, 0], [0, 0], [1, 2], "repeated judgment"),
        (np.array([[0]]), [0, 0], [0], [1], "same length"),
    ],
)
def test_judge_indices_rejects_bad_input(ranked, qq, dd, gg, match):
    with pytest.raises(ValueError, match=match):
        judge_indices(ranked, qq, dd, gg)


def test_judge_indices_query_ids_length():
    with pytest.raises(ValueError, match="query_ids"):
        judge_indices(np.array([[0]]), [], [], [], query_ids=["a", "b"])


def test_judge_run_rejects_nan_score():
    with pytest.raises(ValueError, match="NaN"):
        judge_run({"q": {"a": float("nan")}}, {"q": {"a": 1}})


def test_parse_metric():
    assert parse_metric("ndcg@10") == MetricSpec(name="ndcg@10", family="ndcg", k=10)
    assert parse_metric("p@1") == MetricSpec(name="p@1", family="p", k=1)
    assert parse_metric("err") == MetricSpec(name="err", family="err")
    assert parse_metric("err@20") == MetricSpec(name="err@20", family="err", k=20)
    assert parse_metric("rbp@0.9") == MetricSpec(name="rbp@0.9", family="rbp", p=0.9)
    assert parse_metric("rbp@.95").p == 0.95
    for name in DEFAULT_METRICS:
        assert parse_metric(name).name == name


@pytest.mark.parametrize(
    "name, match",
    [
        ("NDCG@10", "lower case"),
        ("ndgc@10", "unknown metric"),
        ("foo", "unknown metric"),
        ("", "unknown metric"),
        ("ndcg", "needs a cut-off"),
        ("recall", "needs a cut-off"),
        ("ndcg@0", "integer >= 1"),
        ("ndcg@-1", "integer >= 1"),
        ("ndcg@1.5", "integer >= 1"),
        ("ndcg@010", "integer >= 1"),
        ("ndcg@ 10", "integer >= 1"),
        ("ndcg@10@2", "integer >= 1"),
        ("err@0", "integer >= 1"),
        ("rbp", "0 < P < 1"),
        ("rbp@1", "0 < P < 1"),
        ("rbp@0", "0 < P < 1"),
        ("rbp@1.5", "0 < P < 1"),
        ("rbp@-0.5", "0 < P < 1"),
        ("rbp@abc", "0 < P < 1"),
        (10, "must be a string"),
    ],
)
def test_bad_metric_names_raise(name, match):
    with pytest.raises(ValueError, match=match):
        parse_metric(name)


def test_compute_metrics_checks_names_and_level_before_work():
    judged = judge_run(RUN, QRELS)
    with pytest.raises(ValueError, match="unknown metric 'ndcg10'"):
        compute_metrics(judged, ["ndcg@10", "ndcg10"])
    with pytest.raises(ValueError, match="relevance_level"):
        compute_metrics(judged, ["map@10"], relevance_level=0)


def test_compute_metrics_single_name_and_order():
    judged = judge_run(RUN, QRELS)
    assert list(compute_metrics(judged, "err")) == ["err"]
    assert list(compute_metrics(judged, ["p@3", "err", "p@3"])) == ["p@3", "err"]
    assert list(compute_metrics(judged)) == list(DEFAULT_METRICS)


def test_defaults_and_reference_columns():
    assert DEFAULT_METRICS == (
        "ndcg@10", "map@1000", "mrr@1000", "recall@100", "p@10",
        "err", "rbp@0.7", "rbp@0.8", "rbp@0.9",
    )
    assert list(REFERENCE_COLUMNS.items()) == [
        ("mAP@1000", "map@1000"), ("mrr@1000", "mrr@1000"), ("NDCG@10", "ndcg@10"),
        ("mERR", "err"), ("mRBP7", "rbp@0.7"), ("mRBP8", "rbp@0.8"), ("mRBP9", "rbp@0.9"),
    ]
    assert set(REFERENCE_COLUMNS.values()) <= set(DEFAULT_METRICS)


def test_judged_run_checks_shapes():
    with pytest.raises(ValueError, match="gains"):
        JudgedRun(
            query_ids=np.array(["a"], dtype=object),
            gains=np.zeros((2, 3)),
            n_retrieved=np.zeros(1, dtype=np.int64),
            ideal=np.zeros((1, 0)),
            n_judged=np.zeros(1, dtype=np.int64),
            is_judged=np.zeros((2, 3), dtype=bool),
        )
