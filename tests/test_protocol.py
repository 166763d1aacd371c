"""The reference evaluation protocol: grades, weighted test-query sample, ground truth.

The reference is re-stated here as the published evaluation script does it, in pandas, and the
helpers are checked equal to it.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest

from gcl.data import DataError
from gcl.data.marqo import QUERY_KEY_SUFFIX
from gcl.evaluation.protocol import (
    graded_judgments,
    ground_truth,
    reference_grades,
    reference_test_set,
    sample_test_queries,
)


def _pandas2_sample(frame: pd.DataFrame, n: int, weights: pd.Series, random_state: int) -> pd.DataFrame:
    """``frame.sample(n, weights=weights, random_state=..., replace=False)`` as pandas 2 ran it.

    pandas 3 draws the same way but refuses when ``n * max(p) > 1``; the reference ran on pandas 2.
    """
    try:
        return frame.sample(n=n, weights=weights, random_state=random_state, replace=False)
    except ValueError:
        w = np.asarray(weights, dtype=np.float64)
        picked = np.random.RandomState(random_state).choice(len(frame), size=n, replace=False, p=w / w.sum())
        return frame.take(picked)


def _reference_pipeline(df: pd.DataFrame, top_q: int, top: int = 1000) -> dict:
    """The reference evaluation, step for step (query text column ``query``, weights ``w``)."""
    df = df.copy()
    df["query_id"] = ""
    df["query_id"] += df["query"] + "_{!@#~}_"
    if len(df["w"].unique()) > 1:
        df["w"] = (((df["w"] - df["w"].min()) / (df["w"].max() - df["w"].min())) * 99 + 1).astype(int)
    else:
        df["w"] = 1
    temp = df[["query_id", "w"]].groupby("query_id").sum()
    sampled = _pandas2_sample(temp, top_q, temp["w"], random_state=1)
    test_queries = list(sampled.sort_values(by="w", ascending=False).index)
    df = df.set_index("query_id")
    gt = {}
    for query in test_queries:
        part = df.loc[[query]].sort_values(by="w", ascending=False)
        docs, rel = part["doc"][:top].tolist(), part["w"][:top].tolist()
        gt[query] = {d: round(r) for d, r in zip(docs, rel)}
    return gt


# ---------------------------------------------------------------------------- grades
def test_grades_by_hand():
    # (w - 1) / 2 * 99 + 1, truncated: 1 -> 1, 1.33 -> 17.335, 2 -> 50.5, 2.67 -> 83.665, 3 -> 100
    assert reference_grades(np.array([1.0, 1.33, 2.0, 2.67, 3.0])).tolist() == [1, 17, 50, 83, 100]
    assert reference_grades([0.0, 10.0, 5.0]).tolist() == [1, 100, 50]


def test_grades_constant_or_empty():
    assert reference_grades([2.5, 2.5, 2.5]).tolist() == [1, 1, 1]
    assert reference_grades([7.0]).tolist() == [1]
    assert reference_grades([]).tolist() == []
    assert reference_grades([1.0, 2.0]).dtype == np.int64


def test_grades_equal_the_pandas_expression_bit_for_bit(homedepot):
    rng = np.random.default_rng(0)
    for w in (rng.normal(size=10_000), rng.random(10_000) * 1e6, homedepot.judgments["score"].to_numpy()):
        s = pd.Series(w)
        expected = (((s - s.min()) / (s.max() - s.min())) * 99 + 1).astype(int).to_numpy()
        np.testing.assert_array_equal(reference_grades(w), expected)


# ---------------------------------------------------------------------------- sample
def _sums(n: int = 500, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"query {i}{QUERY_KEY_SUFFIX}" for i in range(n)], dtype=object)
    return ids, rng.integers(1, 500, size=n)


def test_sample_is_deterministic_with_seed_1():
    ids, sums = _sums()
    first = sample_test_queries(ids, sums, n=100)
    assert first == sample_test_queries(ids, sums, n=100, seed=1)
    assert len(first) == len(set(first)) == 100
    assert first != sample_test_queries(ids, sums, n=100, seed=2)


def test_sample_equals_a_direct_pandas_call():
    ids, sums = _sums()
    frame = pd.DataFrame({"query": ids, "w": sums}).groupby("query").sum()
    direct = frame.sample(n=100, weights=frame["w"], random_state=1, replace=False)
    expected = list(direct.sort_values(by="w", ascending=False).index)
    assert sample_test_queries(ids, sums, n=100) == expected


def test_sample_when_pandas_3_would_refuse():
    # One heavy query: n * max(p) > 1, which pandas >= 3 rejects and pandas 2 sampled.
    ids, sums = _sums(40)
    sums[0] = 10_000
    frame = pd.DataFrame({"w": sums}, index=pd.Index(ids, name="query")).sort_index()
    with pytest.raises(ValueError) if pd.__version__ >= "3" else nullcontext():
        frame.sample(n=20, weights=frame["w"], random_state=1, replace=False)
    picked = np.random.RandomState(1).choice(40, size=20, replace=False, p=frame["w"] / frame["w"].sum())
    expected = list(frame.take(picked).sort_values(by="w", ascending=False).index)
    assert sample_test_queries(ids, sums, n=20) == expected
    assert expected[0] == ids[0]


def test_sample_does_not_depend_on_input_order():
    ids, sums = _sums()
    order = np.random.default_rng(0).permutation(len(ids))
    assert sample_test_queries(ids[order], sums[order], n=50) == sample_test_queries(ids, sums, n=50)


def test_sample_takes_all_queries_when_fewer_than_n_and_caps_at_max():
    ids, sums = _sums(30)
    everything = sample_test_queries(ids, sums, n=2000)
    assert sorted(everything) == sorted(ids)
    assert [sums[list(ids).index(q)] for q in everything] == sorted(sums, reverse=True)
    assert len(sample_test_queries(ids, sums, n=2000, max_queries=10)) == 10


# ---------------------------------------------------------------------------- ground truth
def test_ground_truth_top_documents():
    j = pd.DataFrame(
        {
            "query_id": ["a", "a", "a", "b", "b"],
            "doc_id": ["x", "y", "z", "x", "w"],
            "grade": [10, 90, 50, 1, 1],
        }
    )
    gt = ground_truth(j, ["b", "a"], top=2)
    assert list(gt) == ["b", "a"]
    assert gt["a"] == {"y": 90, "z": 50}
    assert list(gt["a"]) == ["y", "z"]
    assert gt["b"] == {"x": 1, "w": 1}
    with pytest.raises(DataError, match="'c' has no judgment"):
        ground_truth(j, ["c"])


def test_ground_truth_cut_with_ties_follows_pandas_sort():
    rng = np.random.default_rng(1)
    n = 3000  # above top: the tie order of sort_values decides the cut
    j = pd.DataFrame({"query_id": "q", "doc_id": [f"d{i}" for i in range(n)], "grade": rng.integers(1, 5, size=n)})
    part = j.sort_values(by="grade", ascending=False)
    expected = dict(zip(part["doc_id"][:1000], part["grade"][:1000]))
    gt = ground_truth(j, ["q"], top=1000)["q"]
    assert gt == expected and list(gt) == list(expected)


# ---------------------------------------------------------------------------- whole protocol
def test_reference_test_set_equals_the_reference_pipeline(tiny_dataset):
    frame = pd.DataFrame(
        {
            "query": tiny_dataset.queries["query"].reindex(tiny_dataset.judgments["query_id"]).to_numpy(),
            "doc": tiny_dataset.judgments["doc_id"].to_numpy(),
            "w": tiny_dataset.judgments["score"].to_numpy(),
        }
    )
    expected = _reference_pipeline(frame, top_q=25, top=4)
    assert reference_test_set(tiny_dataset, n=25, top=4) == expected
    assert list(reference_test_set(tiny_dataset, n=25, top=4)) == list(expected)


def test_reference_test_set_on_homedepot(homedepot):
    j = homedepot.judgments
    frame = pd.DataFrame({"query": j["query_id"], "doc": j["doc_id"], "w": j["score"]})
    expected = _reference_pipeline(frame, top_q=200)
    got = reference_test_set(homedepot, n=200)
    assert got == expected and list(got) == list(expected)


def test_graded_judgments_keys(tiny_dataset):
    by_key = graded_judgments(tiny_dataset)
    assert by_key["query_id"].str.endswith(QUERY_KEY_SUFFIX).all()
    by_id = graded_judgments(tiny_dataset, keys="query_id")
    assert by_id["query_id"].tolist() == tiny_dataset.judgments["query_id"].tolist()
    assert by_id["grade"].min() == 1 and by_id["grade"].max() == 100
