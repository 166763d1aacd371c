"""A run joined with its relevance judgments: the one input every metric reads.

Two ways in:

* :func:`judge_indices` takes a ranked matrix of document indices (what a retriever returns) and
  qrels as parallel arrays; it evaluates the order as given and is fully vectorised.
* :func:`gcl.metrics.runs.judge_run` takes pytrec_eval-style dicts ``{qid: {docid: score}}`` and
  ``{qid: {docid: grade}}``, ranks each query's documents by score descending and breaks ties by
  document id in descending string order, the rule trec_eval applies, so our values equal
  pytrec_eval's even when scores tie.

Both return a :class:`JudgedRun`: the grade found at each rank (0 for an unjudged document and
for padding), how many documents were really retrieved, and each query's judged grades sorted in
descending order (the ideal ranking of nDCG; its first column is the largest grade ``max_rel`` that
ERR and RBP normalise by).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

__all__ = ["Hits", "JudgedRun", "judge_indices", "assemble_judged"]


class Hits(NamedTuple):
    """The sparse form of a ranking: only the retrieved documents with a grade > 0.

    ``ranks``: ``(n_q, m)`` int64, their 1-based ranks, increasing along each row; ``grades``:
    ``(n_q, m)`` float64, their grades. ``m`` is the largest count over queries; shorter rows are
    padded with grade 0 and rank ``depth + 1``. Every metric of gcl is a function of this and of
    the judged grades alone, so the kernels work on ``m`` (tens) columns instead of ``depth``.
    """

    ranks: np.ndarray
    grades: np.ndarray


@dataclass(frozen=True, eq=False)
class JudgedRun:
    """Grades of a ranked run, one row per query.

    Attributes:
        query_ids: ``(n_q,)`` object array of query ids (str).
        gains: ``(n_q, depth)`` float64, the grade of the document at each rank; 0 for a document
            without a judgment and for padding after the last retrieved document.
        n_retrieved: ``(n_q,)`` int64, the number of real retrieved documents (``<= depth``).
        ideal: ``(n_q, max_judged)`` float64, each query's judged grades sorted in descending
            order, 0-padded on the right (grades of 0 are kept; they add nothing to any metric).
        n_judged: ``(n_q,)`` int64, the number of judged documents of each query (grade 0
            included), i.e. how many entries of ``ideal`` are real.
        is_judged: ``(n_q, depth)`` bool, whether the document at each rank has a judgment.

    :attr:`hits` (computed on first use) packs the retrieved documents with a grade > 0; the
    metric kernels read that and ``ideal``.
    """

    query_ids: np.ndarray
    gains: np.ndarray
    n_retrieved: np.ndarray
    ideal: np.ndarray
    n_judged: np.ndarray
    is_judged: np.ndarray

    def __post_init__(self) -> None:
        n_q = len(self.query_ids)
        if self.gains.ndim != 2 or self.gains.shape[0] != n_q:
            raise ValueError(f"gains must have shape (n_q={n_q}, depth); got {self.gains.shape}")
        if self.ideal.ndim != 2 or self.ideal.shape[0] != n_q:
            raise ValueError(f"ideal must have shape (n_q={n_q}, k); got {self.ideal.shape}")
        if self.is_judged.shape != self.gains.shape:
            raise ValueError("is_judged must have the shape of gains")
        if self.n_retrieved.shape != (n_q,) or self.n_judged.shape != (n_q,):
            raise ValueError(f"n_retrieved and n_judged must have shape ({n_q},)")

    def __repr__(self) -> str:
        return (
            f"JudgedRun(n_queries={self.n_queries}, depth={self.depth}, "
            f"retrieved={int(self.n_retrieved.sum())}, judged={int(self.n_judged.sum())}, "
            f"judged_retrieved={int(self.is_judged.sum())})"
        )

    @property
    def n_queries(self) -> int:
        return int(self.gains.shape[0])

    @property
    def depth(self) -> int:
        return int(self.gains.shape[1])

    @property
    def max_grade(self) -> np.ndarray:
        """``(n_q,)`` the largest judged grade of each query (0 when it has none)."""
        if self.ideal.shape[1] == 0:
            return np.zeros(self.n_queries)
        return self.ideal[:, 0].copy()

    @cached_property
    def hits(self) -> Hits:
        """The retrieved documents with a grade > 0, packed per query (computed once)."""
        rows, cols = np.nonzero(self.gains > 0)  # row-major: ranks increase within a row
        counts = np.bincount(rows, minlength=self.n_queries)
        width = int(counts.max(initial=0))
        starts = np.cumsum(counts) - counts
        slot = np.arange(len(rows)) - starts[rows]
        ranks = np.full((self.n_queries, width), self.depth + 1, dtype=np.int64)
        grades = np.zeros((self.n_queries, width))
        ranks[rows, slot] = cols + 1
        grades[rows, slot] = self.gains[rows, cols]
        return Hits(ranks=ranks, grades=grades)

    def n_relevant(self, relevance_level: float = 1) -> np.ndarray:
        """``(n_q,)``: judged documents with ``grade >= relevance_level``, retrieved or not."""
        check_relevance_level(relevance_level)
        return np.count_nonzero(self.ideal >= relevance_level, axis=1).astype(np.int64)


def check_relevance_level(relevance_level: float) -> None:
    if not np.isfinite(relevance_level) or relevance_level <= 0:
        raise ValueError(
            f"relevance_level must be a finite number > 0 (grades >= it count as relevant); "
            f"got {relevance_level!r}"
        )


def judge_indices(
    ranked: np.ndarray,
    qrel_query: np.ndarray,
    qrel_doc: np.ndarray,
    qrel_grade: np.ndarray,
    *,
    query_ids: np.ndarray | list[str] | None = None,
) -> JudgedRun:
    """Look up the grade of every retrieved document; the order of ``ranked`` is the ranking.

    Args:
        ranked: ``(n_q, depth)`` int document indices in rank order; ``-1`` is padding (no
            document) and may only follow the real documents of a row. A document repeated in a
            row is judged at each occurrence (do not repeat documents).
        qrel_query: ``(n_j,)`` int query index (row of ``ranked``, ``0..n_q-1``) of each judgment.
        qrel_doc: ``(n_j,)`` int document index of each judgment (``>= 0``).
        qrel_grade: ``(n_j,)`` grade of each judgment, finite and ``>= 0``; 0 = judged not relevant.
        query_ids: ``(n_q,)`` query ids; default ``"0" .. str(n_q - 1)``.

    The join is vectorised (no loop over queries): a per-query filter of hashed cells drops
    almost all unjudged entries, then each ``(query, doc)`` left, encoded as one int64 key
    ``query * stride + doc + 1``, is found in the sorted qrel keys with ``np.searchsorted`` (see
    :func:`_find_judgments`). 2,000 x 1,000 entries take a few tens of milliseconds.

    Raises:
        ValueError: on bad shapes, out-of-range indices, padding before a document, a repeated
            ``(query, doc)`` judgment, or a negative or non-finite grade.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be a 2-d (n_q, depth) array; got shape {ranked.shape}")
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked must hold integer document indices; got dtype {ranked.dtype}")
    ranked = ranked.astype(np.int64, copy=False)
    n_q, depth = ranked.shape
    qrel_query = np.asarray(qrel_query).astype(np.int64, copy=False).ravel()
    qrel_doc = np.asarray(qrel_doc).astype(np.int64, copy=False).ravel()
    qrel_grade = np.asarray(qrel_grade, dtype=np.float64).ravel()
    if not (len(qrel_query) == len(qrel_doc) == len(qrel_grade)):
        raise ValueError(
            "qrel_query, qrel_doc and qrel_grade must have the same length; got "
            f"{len(qrel_query)}, {len(qrel_doc)}, {len(qrel_grade)}"
        )
    if query_ids is None:
        qids = np.arange(n_q).astype(str).astype(object)
    else:
        qids = np.asarray(query_ids, dtype=object).ravel()
        if len(qids) != n_q:
            raise ValueError(f"query_ids has {len(qids)} entries for {n_q} rows of ranked")

    # --- validate -------------------------------------------------------------------------
    if ranked.size and ranked.min() < -1:
        raise ValueError("ranked holds a negative index other than -1 (the padding value)")
    present = ranked >= 0
    n_retrieved = present.sum(axis=1, dtype=np.int64)
    # Padding only at the end: the first n_retrieved entries of each row are the real documents.
    if not np.array_equal(present, np.arange(depth) < n_retrieved[:, None]):
        bad = int(np.flatnonzero((present != (np.arange(depth) < n_retrieved[:, None])).any(1))[0])
        raise ValueError(f"row {bad} of ranked has padding (-1) before a document; pad at the end")
    if len(qrel_query):
        if qrel_query.min() < 0 or qrel_query.max() >= n_q:
            raise ValueError(f"qrel_query must lie in 0..{n_q - 1} (rows of ranked)")
        if qrel_doc.min() < 0:
            raise ValueError("qrel_doc must hold document indices >= 0")
        if not np.isfinite(qrel_grade).all() or qrel_grade.min() < 0:
            raise ValueError("qrel_grade must be finite and >= 0")

    # --- the qrels sorted by (query, doc): one int64 key each ---------------------------------
    # key = query * stride + doc + 1: padding (doc -1) maps to key query * stride, which no
    # judgment has, so it can never match, filter or not.
    stride = int(max(ranked.max(initial=0), qrel_doc.max(initial=0))) + 2
    if n_q * stride > np.iinfo(np.int64).max:  # Python ints: the check cannot overflow
        raise ValueError(f"{n_q} queries x {stride} documents do not fit an int64 key")
    key = qrel_query * stride + qrel_doc + 1
    order = np.argsort(key, kind="stable")
    key, qrel_query = key[order], qrel_query[order]
    qrel_doc, qrel_grade = qrel_doc[order], qrel_grade[order]
    if len(key) > 1 and (dup := np.flatnonzero(key[1:] == key[:-1])).size:
        i = int(dup[0])
        raise ValueError(
            f"repeated judgment for query index {qrel_query[i]}, document index {qrel_doc[i]}"
        )

    # --- the grade at each rank ----------------------------------------------------------------
    row, col, found = _find_judgments(ranked, key, qrel_query, qrel_doc, stride)
    return assemble_judged(qids, depth, n_retrieved, row, col, qrel_grade[found], qrel_query, qrel_grade)


def assemble_judged(
    qids: np.ndarray,
    depth: int,
    n_retrieved: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    grade_at: np.ndarray,
    qrel_query: np.ndarray,
    qrel_grade: np.ndarray,
) -> JudgedRun:
    """The :class:`JudgedRun` of judged entries ``(row, col)`` with grades ``grade_at``;
    ``qrel_query`` / ``qrel_grade`` are all the judgments, grouped by query (ascending)."""
    n_q = len(qids)
    is_judged = np.zeros((n_q, depth), dtype=bool)
    is_judged[row, col] = True
    gains = np.zeros((n_q, depth))
    gains[row, col] = grade_at

    # --- each query's judged grades, sorted descending (the qrels are grouped by query) -------
    n_judged = np.bincount(qrel_query, minlength=n_q).astype(np.int64)
    ideal = np.zeros((n_q, int(n_judged.max(initial=0))))
    slot = np.arange(len(qrel_query)) - (np.cumsum(n_judged) - n_judged)[qrel_query]
    ideal[qrel_query, slot] = qrel_grade
    ideal = np.ascontiguousarray(np.sort(ideal, axis=1)[:, ::-1])  # grades >= 0: padding last

    return JudgedRun(
        query_ids=qids,
        gains=gains,
        n_retrieved=n_retrieved,
        ideal=ideal,
        n_judged=n_judged,
        is_judged=is_judged,
    )


_GOLDEN = np.int64(0x9E3779B97F4A7C15 - (1 << 64))  # Fibonacci hashing: 2**64 / golden ratio
_FILTER_CELLS = 1 << 26  # at most 64 MiB of filter, whatever the number of queries


def _hash(doc: np.ndarray, bits: int) -> np.ndarray:
    """Fibonacci hash of document indices to ``bits`` bits (the int64 product wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        h = doc * _GOLDEN
    h >>= 64 - bits
    h &= (1 << bits) - 1
    return h


def _find_judgments(
    ranked: np.ndarray, key: np.ndarray, qrel_query: np.ndarray, qrel_doc: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the run meets the qrels: ``(row, col, qrel_position)`` of each judged entry, row-major.

    ``key`` = ``qrel_query * stride + qrel_doc + 1``, sorted, unique. Two vectorised steps, no loop
    over queries:

    1. a per-query filter of hashed cells (one cell set per judgment, about 16 cells per judgment)
       drops almost every unjudged entry of the run with one gather;
    2. the few entries left are looked up exactly: their key ``row * stride + doc + 1`` is found
       in ``key`` with ``np.searchsorted``.

    The filter only saves work: a false positive fails step 2.
    """
    n_q, depth = ranked.shape
    if not len(key) or not ranked.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    bits = max(6, int(np.ceil(np.log2(16 * len(key) / n_q))))
    bits = min(bits, max(6, int(np.log2(max(_FILTER_CELLS // n_q, 1)))))
    cells = np.zeros(n_q << bits, dtype=bool)  # row q owns cells [q << bits, (q + 1) << bits)
    cells[(qrel_query << bits) + _hash(qrel_doc, bits)] = True
    cell = _hash(ranked, bits)
    cell += (np.arange(n_q, dtype=np.int64) << bits)[:, None]
    maybe = cells.take(cell)
    maybe &= ranked >= 0

    entry = np.flatnonzero(maybe)
    row = entry // depth
    wanted = row * stride + ranked.ravel()[entry] + 1
    pos = np.minimum(np.searchsorted(key, wanted), len(key) - 1)
    hit = key[pos] == wanted
    entry = entry[hit]
    return row[hit], entry % depth, pos[hit]
