"""Judged re-rank: rank only each query's judged documents (ordering without retrieval).

For every test query the retriever orders the query's ground-truth documents and nothing else;
the metrics of that order against the grades measure how well the model orders what it should
retrieve, with retrieval taken out. Its values lie between the random-order and ideal-order
ceilings of :mod:`gcl.evaluation.ceilings` (in expectation for a model that cannot order).

Any retriever works through its ``search``: the test queries are searched, in blocks, over the
sub-corpus of all judged documents of the split's test queries (all of it, ``k`` = its size);
each query's list is then cut down to its own judged documents, in the retriever's order. A
judged document the retriever does not return (BM25 returns only documents sharing a term with
the query: the others score 0, all tied) is appended after the returned ones by the evaluator's
tie rule, lower corpus index first, which knows nothing of grades; such documents are counted
(``appended_unretrieved``). BM25's term statistics are those of the sub-corpus.
"""

from __future__ import annotations

import time

import numpy as np

from gcl.evaluation.gains import score_ranking

_BLOCK_ENTRIES = 1 << 23  # query block x sub-corpus entries per search call (~100 MB of scores+indices)


def judged_rerank_indices(task, retriever) -> tuple[np.ndarray, np.ndarray, int]:
    """``(scores, ranked, n_missing)``: each test query's judged documents as corpus indices in
    the retriever's order, ``-1``-padded; ``n_missing`` judged documents were appended unretrieved."""
    n_q = len(task.queries)
    sub = np.unique(task.qrel_doc)  # corpus indices of the judged documents, sorted
    sub_docs = task.documents.iloc[sub]
    qrel_sub = np.searchsorted(sub, task.qrel_doc).astype(np.int64)  # each judgment's position in the sub-corpus
    stride = len(sub) + 1
    judged_keys = np.sort(task.qrel_query.astype(np.int64) * stride + qrel_sub)
    counts = np.bincount(task.qrel_query, minlength=n_q)
    width = int(counts.max(initial=0))
    ranked = np.full((n_q, width), -1, dtype=np.int64)
    scores = np.full((n_q, width), -np.inf, dtype=np.float32)
    block = max(1, _BLOCK_ENTRIES // max(len(sub), 1))
    for start in range(0, n_q, block):
        stop = min(n_q, start + block)
        s, idx = retriever.search(task.queries.iloc[start:stop], sub_docs, len(sub))
        rows = np.arange(start, stop, dtype=np.int64)[:, None]
        keys = np.where(idx >= 0, rows * stride + idx, -1)
        pos = np.minimum(np.searchsorted(judged_keys, keys), len(judged_keys) - 1)
        keep = (idx >= 0) & (judged_keys[pos] == keys)
        # stable compaction: the kept entries of each row, in rank order, moved to the front
        order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        kept = np.take_along_axis(keep, order, axis=1)
        ranked[start:stop] = np.where(kept, np.take_along_axis(idx, order, axis=1), -1)
        scores[start:stop] = np.where(kept, np.take_along_axis(s, order, axis=1), -np.inf)
    missing = _append_missing(ranked, task.qrel_query, qrel_sub, counts)
    return scores, np.where(ranked >= 0, sub[np.maximum(ranked, 0)], -1), missing


def _append_missing(ranked: np.ndarray, qrel_query: np.ndarray, qrel_sub: np.ndarray, counts: np.ndarray) -> int:
    """Put judged documents absent from a row after its retrieved ones, lower corpus index first
    (``qrel_sub`` are positions in the sorted sub-corpus); in place."""
    n_found = (ranked >= 0).sum(axis=1)
    short = np.flatnonzero(n_found < counts)
    for q in short:
        have = set(ranked[q, : n_found[q]].tolist())
        extra = sorted(d for d in qrel_sub[qrel_query == q].tolist() if d not in have)
        ranked[q, n_found[q] : n_found[q] + len(extra)] = extra
    return int((counts - n_found).sum())


def evaluate_judged_rerank(task, retriever, protocol):
    """Like :func:`~gcl.evaluation.evaluator.evaluate_task`, ranking only the judged documents.

    Returns a :class:`~gcl.evaluation.evaluator.SplitResult` whose run holds each query's
    judged documents (``extras["judged_rerank"]`` counts those appended unretrieved)."""
    import pandas as pd

    from gcl.evaluation.evaluator import SplitResult

    t0 = time.perf_counter()
    scores, ranked, missing = judged_rerank_indices(task, retriever)
    per_query = score_ranking(task, ranked, protocol.metrics)
    result = SplitResult(
        name=task.name,
        summary={m: float(np.mean(v)) if len(v) else float("nan") for m, v in per_query.items()},
        per_query=pd.DataFrame(per_query, index=task.queries.index),
        n_queries=len(task.queries),
        n_documents=int(len(np.unique(task.qrel_doc))),
        seconds=time.perf_counter() - t0,
        run_indices=ranked,
        run_scores=scores,
    )
    result.extras["judged_rerank"] = {"judged_documents": int(len(task.qrel_doc)), "appended_unretrieved": missing}
    return result
