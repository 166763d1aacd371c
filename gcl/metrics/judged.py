"""A run joined with its relevance judgments: the one input every metric reads.

Two ways in:

* :func:`judge_indices` takes a ranked matrix of document indices (what a retriever returns) and
  qrels as parallel arrays; it evaluates the order as given and is fully vectorised.
* :func:`judge_run` takes pytrec_eval-style dicts ``{qid: {docid: score}}`` and
  ``{qid: {docid: grade}}``, ranks each query's documents by score descending and breaks ties by
  document id in descending string order, the rule trec_eval applies, so our values equal
  pytrec_eval's even when scores tie.

Both return a :class:`JudgedRun`: the grade found at each rank (0 for an unjudged document and
for padding), how many documents were really retrieved, and each query's judged grades sorted in
descending order (the ideal ranking of nDCG; its first column is the largest grade ``max_rel`` that
ERR and RBP normalise by).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from typing import NamedTuple

import numpy as np

__all__ = ["Hits", "JudgedRun", "judge_indices", "judge_run"]


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
    return _assemble(qids, depth, n_retrieved, row, col, qrel_grade[found], qrel_query, qrel_grade)


def _assemble(
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


def judge_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, float]],
) -> JudgedRun:
    """Judge a pytrec_eval-style run against pytrec_eval-style qrels.

    Ranking rule (trec_eval's): documents by score descending; equal scores by document id in
    descending string order (code-point order, the order ``strcmp`` gives on UTF-8). Scores are
    compared after rounding to float32, because trec_eval stores them as C ``float``: two scores
    that differ only below float32 precision tie. A run's own rank column, if it had one, plays
    no part, as in trec_eval.

    Queries: those of ``qrels``, in sorted id order. A query of ``qrels`` absent from ``run``
    gets an empty ranking (every metric 0), and so does a query whose judgment dict is empty
    (pytrec_eval leaves both kinds out of its output; averages over queries then differ). A query
    of ``run`` absent from ``qrels`` is ignored, as trec_eval and pytrec_eval ignore it.

    Only the judged documents need a rank. With ``s_d`` the float32 score of document ``d`` of a
    query's run, a judged, retrieved document ``j`` has the 0-based rank

        rank(j) = #{d : s_d > s_j} + #{d : s_d = s_j, id_d > id_j}

    The first term comes from the run's scores as one row of keys per query (descending score
    order, see :func:`descending_score_keys`), sorted per row (skipped when the dicts already list
    documents best first, as TREC run files and gcl's runs do), with the query in the high bits so
    one binary search per judgment finds it; the second is computed only for judged documents
    whose score another document of the run shares. The dicts are read with C-level iteration
    (``np.fromiter`` over ``dict.values()`` and ``map(dict.get, ...)``); no Python loop runs over
    the retrieved documents.

    Raises:
        ValueError: on a NaN score, or a negative or non-finite grade.
    """
    qids = sorted(qrels)
    n_q = len(qids)
    judged = [qrels[q] for q in qids]
    runs = [run.get(q) or {} for q in qids]
    sizes = np.fromiter(map(len, judged), dtype=np.int64, count=n_q)
    lens = np.fromiter(map(len, runs), dtype=np.int64, count=n_q)
    n_judgments, total = int(sizes.sum()), int(lens.sum())
    grades = np.fromiter(chain.from_iterable(j.values() for j in judged), dtype=np.float64, count=n_judgments)
    qrel_query = np.repeat(np.arange(n_q, dtype=np.int64), sizes)
    scores = np.fromiter(chain.from_iterable(r.values() for r in runs), dtype=np.float64, count=total)
    if np.isnan(scores).any():
        first = int(np.flatnonzero(np.isnan(scores))[0])
        q = qids[int(np.searchsorted(np.cumsum(lens), first, side="right"))]
        raise ValueError(f"query {q!r}: NaN score; scores must be comparable numbers")
    if n_judgments and (not np.isfinite(grades).all() or grades.min() < 0):
        raise ValueError("qrel_grade must be finite and >= 0")
    # the score of each judged document in its query's run; NaN where it was not retrieved
    nan = float("nan")
    at = np.fromiter(chain.from_iterable(map(r.get, j, repeat(nan)) for r, j in zip(runs, judged)),
                     dtype=np.float64, count=n_judgments)
    retrieved = ~np.isnan(at)
    row, j = qrel_query[retrieved], np.flatnonzero(retrieved)

    # --- #{d : s_d > s_j}: the run's scores as descending-order keys, one row per query --------
    depth = int(lens.max(initial=0))
    if total == n_q * depth:  # every query retrieved `depth` documents: no padding
        low = descending_score_keys(scores).reshape(n_q, depth)
    else:
        low = np.full((n_q, depth), _PAD, dtype=np.uint32)  # padding sorts after every real score
        low[np.arange(depth) < lens[:, None]] = descending_score_keys(scores)
    if depth > 1 and not (low[:, 1:] >= low[:, :-1]).all():  # runs listed best first skip the sort
        low.sort(axis=1)
    keys = low.astype(np.uint64).ravel()  # + the query in the high 32 bits: sorted as a whole
    keys |= np.repeat(np.arange(n_q, dtype=np.uint64) << np.uint64(32), depth)
    mine = (row.astype(np.uint64) << np.uint64(32)) | descending_score_keys(at[retrieved]).astype(np.uint64)
    left = np.searchsorted(keys, mine, side="left")
    rank = left - row * depth  # the documents of the row before the equal ones score higher
    after = np.minimum(left + 1, max(len(keys) - 1, 0))  # the key itself is at `left`
    shared = np.flatnonzero((left + 1 < len(keys)) & (keys[after] == mine))  # another doc ties it
    if shared.size:  # + #{d : s_d = s_j, id_d > id_j}, only where the score is shared
        rank[shared] += _ids_above(runs, judged, row[shared], j[shared] - (np.cumsum(sizes) - sizes)[row[shared]],
                                   at[retrieved][shared])
    return _assemble(np.asarray(qids, dtype=object), depth, lens, row, rank, grades[j], qrel_query, grades)


_PAD = 0xFFFFFFFF  # above the key of every real score (the largest, -inf's, is 0xFF800000)


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(docid, score)`` pairs in trec_eval's order, the rule :func:`judge_run` ranks by: score
    descending (compared as float32, :func:`descending_score_keys`), then docid descending
    (code-point order). The pairs keep the full float64 scores. Scores must not be NaN.
    """
    if not docs:
        return []
    ids = list(docs)
    scores = np.fromiter(docs.values(), dtype=np.float64, count=len(ids))
    id_rank = np.empty(len(ids), dtype=np.int64)  # Python str order: code points, like strcmp
    id_rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
    # key ascending = score descending; then id rank descending; ids are unique, so no ties remain
    order = np.lexsort((-id_rank, descending_score_keys(scores)))
    return [(ids[i], float(scores[i])) for i in order]


def descending_score_keys(score: np.ndarray) -> np.ndarray:
    """uint32 keys whose unsigned order is descending ``float32(score)`` order, ties equal.

    With ``b`` the float32 bits: ``b ^ 0x7FFFFFFF`` for a positive score (sign bit clear: larger
    values have larger ``b``, so flipping the 31 low bits reverses them, into 0..0x7FFFFFFF) and
    ``b`` for a negative one (larger magnitude, larger ``b``, lower value; 0x80000000..). ``-0.0``
    is folded into ``0.0`` first (they compare equal). NaN must be excluded by the caller.
    """
    with np.errstate(over="ignore"):
        s32 = score.astype(np.float32)  # trec_eval keeps scores as C floats: overflow -> inf
    s32 += np.float32(0.0)  # -0.0 + 0.0 = +0.0
    bits = s32.view(np.uint32)
    negative = s32.view(np.int32) >> 31  # 0 or -1 (all bits set)
    bits ^= ~negative.view(np.uint32) & np.uint32(0x7FFFFFFF)
    return bits


def _ids_above(runs: list, judged: list, row: np.ndarray, pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    """For each judged document (number ``pos`` of query ``row``'s judgments) whose float32 score
    other documents of the run share: how many of those have a larger id (code-point order). A
    Python loop, but only over the queries and scores that have such ties."""
    out = np.zeros(len(row), dtype=np.int64)
    with np.errstate(over="ignore"):
        score32 = score.astype(np.float32)
    by_query: dict[int, list[int]] = {}
    for t, r in enumerate(row.tolist()):
        by_query.setdefault(r, []).append(t)
    for r, members in by_query.items():
        ids = list(runs[r])
        with np.errstate(over="ignore"):
            s32 = np.fromiter(runs[r].values(), dtype=np.float64, count=len(ids)).astype(np.float32)
        judged_ids = list(judged[r])
        tied: dict[float, list[str]] = {}  # score -> the ids sharing it, descending
        for t in members:
            value = score32[t]
            if value not in tied:
                tied[value] = sorted((ids[i] for i in np.flatnonzero(s32 == value)), reverse=True)
            out[t] = tied[value].index(judged_ids[pos[t]])
    return out
