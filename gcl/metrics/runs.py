"""Runs as pytrec_eval-style dicts, judged with trec_eval's ranking rule.

:func:`judge_run` ranks each query's ``{docid: score}`` by score descending, ties by document id
descending (code-point order), scores compared as float32, as trec_eval does, so gcl's metric
values equal pytrec_eval's even when scores tie. :func:`trec_order` is the same rule as a sorted
list (what :func:`gcl.evaluation.trec.write_run` writes); both order by
:func:`descending_score_keys`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain, repeat

import numpy as np

from gcl.metrics.judged import JudgedRun, assemble_judged

__all__ = ["judge_run", "trec_order", "descending_score_keys"]

_PAD = 0xFFFFFFFF  # above the key of every real score (the largest, -inf's, is 0xFF800000)


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
    return assemble_judged(np.asarray(qids, dtype=object), depth, lens, row, rank, grades[j], qrel_query, grades)


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
