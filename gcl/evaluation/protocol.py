"""The reference evaluation protocol of Marqo-GS-10M: grades, test queries, ground truth.

These helpers reproduce the published evaluation step by step (``marqo-gs-format/README.md``),
so that a ground-truth file written here equals the reference's for the same split:

1. :func:`reference_grades` -- ``rel = int(((w - min) / (max - min)) * 99 + 1)`` over the whole
   split's scores (1..100); every grade is 1 when the scores are constant.
2. :func:`sample_test_queries` -- per-query sum of grades, then
   ``DataFrame.sample(n, weights=sum, random_state=seed)`` without replacement (numpy's
   ``RandomState(seed).choice``, which pandas calls) over the queries
   in sorted key order (as ``groupby(key).sum()`` orders them), the result ordered by the sum,
   descending (``sort_values``, as the reference).
3. :func:`ground_truth` -- for each test query its top ``top`` documents by grade
   (``sort_values(ascending=False)`` on the query's rows in file order), ``{doc_id: grade}``.

:func:`reference_test_set` runs the three steps on a :class:`GradedDataset`. Query keys are the
query text plus :data:`~gcl.data.marqo.QUERY_KEY_SUFFIX` unless the split has a query-id column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from gcl.errors import DataError
from gcl.data.marqo import query_key
from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, GradedDataset, isin

GRADE = "grade"


def reference_grades(scores: np.ndarray | Sequence[float]) -> np.ndarray:
    """Integer grades 1..100 from scores, exactly as the reference computes them.

    ``rel = int(((w - w.min()) / (w.max() - w.min())) * 99 + 1)`` (truncation, float64, the same
    operation order, so values match bit for bit). All 1 when ``scores`` has fewer than two
    distinct values. Returns ``int64``.
    """
    w = np.asarray(scores, dtype=np.float64)
    if w.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.isnan(w).any():
        raise ValueError("scores contain NaN")
    lo, hi = w.min(), w.max()
    if lo == hi:
        return np.ones(w.shape, dtype=np.int64)
    return (((w - lo) / (hi - lo)) * 99 + 1).astype(np.int64)


def sample_test_queries(
    query_ids: Sequence[str] | np.ndarray,
    grade_sums: Sequence[float] | np.ndarray,
    n: int = 2000,
    seed: int = 1,
    max_queries: int = 20000,
) -> list:
    """Draw ``n`` test queries, weighted by their sum of grades, without replacement.

    The queries are first put in sorted id order (the reference's ``groupby(...).sum()``
    order), so the draw does not depend on the input order; pass the reference's query keys
    (:func:`~gcl.data.marqo.query_key`) to reproduce its choice. ``n`` is capped at
    ``max_queries``; when there are fewer queries than ``n`` all are taken (the reference
    would raise). The result is ordered by grade sum, descending, as the reference orders it.

    The draw is ``numpy.random.RandomState(seed).choice(len, n, replace=False, p=sums / sums.sum())``
    on the sorted queries, which is what ``DataFrame.sample`` runs; it is called directly
    because pandas >= 3 refuses weighted draws without replacement when ``n * max(p) > 1``.
    """
    ids = pd.Index(np.asarray(query_ids, dtype=object), name="query")
    if ids.has_duplicates:
        raise ValueError(f"duplicate query id {ids[ids.duplicated()][0]!r}")
    if len(ids) != len(grade_sums):
        raise ValueError("query_ids and grade_sums differ in length")
    frame = pd.DataFrame({GRADE: np.asarray(grade_sums)}, index=ids).sort_index()
    size = min(n, max_queries, len(frame))
    # What ``frame.sample(n=size, weights=GRADE, random_state=seed, replace=False)`` does: pandas
    # draws with numpy's legacy RandomState.choice on the normalised weights. pandas >= 3 refuses
    # when size * max(p) > 1 (e.g. when taking every query); pandas 2, which the reference ran
    # on, did not, so call numpy directly: the same draw on every pandas version.
    weights = np.asarray(frame[GRADE], dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("grade sums must be finite, non-negative and not all zero")
    picked = np.random.RandomState(seed).choice(len(frame), size=size, replace=False, p=weights / weights.sum())
    sampled = frame.take(picked).sort_values(by=GRADE, ascending=False)
    return list(sampled.index)


def ground_truth(
    judgments: pd.DataFrame,
    query_ids: Sequence[str],
    top: int = 1000,
) -> dict[str, dict[str, int]]:
    """``{query: {doc_id: grade}}`` with each query's ``top`` documents by grade.

    ``judgments`` has columns ``query_id``, ``doc_id`` and ``grade`` (the query column holds the
    keys used in ``query_ids``). Each query's rows, in ``judgments`` order, are sorted by grade
    descending with ``DataFrame.sort_values`` (as the reference does; its tie order decides
    which documents make the cut when a query has more than ``top``).
    """
    for column in (QUERY_ID, DOC_ID, GRADE):
        if column not in judgments.columns:
            raise DataError(f"judgments lack column {column!r}", field=column)
    wanted = pd.Index(list(query_ids))
    rows = judgments.loc[isin(judgments[QUERY_ID], wanted), [QUERY_ID, DOC_ID, GRADE]]
    groups = dict(iter(rows.groupby(QUERY_ID, sort=False)))
    out: dict[str, dict[str, int]] = {}
    for q in wanted:
        if q not in groups:
            raise DataError(f"test query {q!r} has no judgment", field=QUERY_ID)
        part = groups[q].sort_values(by=GRADE, ascending=False)
        docs = part[DOC_ID].astype(str).tolist()[:top]
        grades = part[GRADE].tolist()[:top]
        out[q] = {d: round(g) for d, g in zip(docs, grades)}
    return out


def graded_judgments(ds: GradedDataset, *, keys: Literal["query_key", "query_id"] = "query_key") -> pd.DataFrame:
    """``ds.judgments`` with reference grades and the query column replaced by the protocol's keys.

    ``keys="query_key"``: query text + suffix (a split read without a query-id column);
    ``"query_id"``: the dataset's query ids as they are.
    """
    j = ds.judgments
    if keys == "query_key":
        text = ds.queries[ds.query_fields[0].name].astype(str)
        key_of = pd.Series(text.to_numpy(dtype=object) + _suffix(), index=ds.queries.index)
        qcol = key_of.reindex(j[QUERY_ID].to_numpy()).to_numpy(dtype=object)
    elif keys == "query_id":
        qcol = j[QUERY_ID].to_numpy(dtype=object)
    else:
        raise ValueError(f"keys must be 'query_key' or 'query_id', not {keys!r}")
    scores = j[SCORE].to_numpy()
    return pd.DataFrame(
        {QUERY_ID: qcol, DOC_ID: j[DOC_ID].to_numpy(dtype=object), SCORE: scores, GRADE: reference_grades(scores)}
    )


def reference_test_set(
    ds: GradedDataset,
    *,
    n: int = 2000,
    seed: int = 1,
    top: int = 1000,
    max_queries: int = 20000,
    keys: Literal["query_key", "query_id"] = "query_key",
) -> dict[str, dict[str, int]]:
    """The reference ground truth of a split: grades, weighted query sample, top documents.

    Returns ``{key: {doc_id: grade}}`` in the sampled order, as :func:`write_ground_truth`
    writes it. Keys are query keys (text + suffix) or the dataset's query ids (``keys``).
    """
    j = graded_judgments(ds, keys=keys)
    sums = j.groupby(QUERY_ID, sort=False)[GRADE].sum()
    test = sample_test_queries(sums.index.to_numpy(), sums.to_numpy(), n=n, seed=seed, max_queries=max_queries)
    return ground_truth(j, test, top=top)


def _suffix() -> str:
    return query_key("")
