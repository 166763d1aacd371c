"""Exact top-k inner-product search with a deterministic tie rule.

For L2-normalised vectors the inner product is the cosine similarity. For each query ``q`` and
corpus row ``c_j`` the score is ``s_j = q . c_j``; the result is the ``k`` indices ``j`` with the
largest ``s_j``.

Ordering rule: results are sorted by score descending; equal scores are ordered by corpus index
ascending. Formally the top-k is the first ``k`` of the corpus sorted by the key ``(-s_j, j)``,
so among documents tied at the cut the lower indices are kept.

Two backends compute the same thing:

* ``faiss`` (used when faiss is importable): ``faiss.knn`` scores and selects, the code path of
  ``faiss.IndexFlatIP.search`` without copying the corpus into an index. It is asked for
  ``k + 1`` candidates: when the k-th and (k+1)-th scores differ, the top-k *set* is exact and only
  equal scores inside it are re-sorted by index. A row tied at the cut (rare on real vectors,
  common with duplicate documents) is searched again with twice the candidates until the last
  candidate scores below the k-th, i.e. every document tied at the cut is among the candidates.
  faiss itself scores in fixed-size blocks (4,096 queries x 1,024 documents), so memory is the
  ``(query_block, k + 1)`` candidates of one query block plus, for those re-searches, groups of
  about ``64 x doc_block`` candidates.
* ``torch`` (the fallback): queries ``query_block`` at a time against the corpus ``doc_block``
  at a time, keeping a running top-k per query, so memory is O(``query_block`` x (``doc_block``
  + k)) whatever the corpus size. The merge is a stable sort over candidates kept in index order.

Scores of the two backends can differ in the last float32 bit (different summation order), so on
float vectors a pair of nearly equal scores can swap between backends; on vectors whose dot
products are exact (tests use small integers) both equal the full-matrix reference exactly.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

Backend = Literal["auto", "faiss", "torch"]


def exact_search(
    queries,
    corpus,
    k: int,
    *,
    query_block: int = 1024,
    doc_block: int = 65536,
    show_progress: bool = False,
    backend: Backend = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product. Returns (scores (nq, k') float32, indices (nq, k') int64), k' = min(k, n_docs).

    ``queries`` and ``corpus`` are 2-D numpy arrays (memory-mapped ones too) or torch tensors;
    other dtypes are converted to float32. ``backend="auto"`` uses faiss when it is installed.
    """
    q, c = _as_float32(queries), _as_float32(corpus)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and corpus {tuple(c.shape)} must be 2-D with the same width")
    if c.shape[0] == 0:
        raise ValueError("cannot search an empty corpus")
    if int(k) < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(int(k), c.shape[0])
    search_block = _backend(backend)
    out_scores = np.empty((q.shape[0], k), dtype=np.float32)
    out_idx = np.empty((q.shape[0], k), dtype=np.int64)
    if k == 0:
        return out_scores, out_idx
    blocks = range(0, q.shape[0], query_block)
    for start in tqdm(blocks, desc="search", disable=not show_progress, unit="block"):
        qb = q[start : start + query_block]
        out_scores[start : start + len(qb)], out_idx[start : start + len(qb)] = search_block(qb, c, k, doc_block)
    return out_scores, out_idx


def _as_float32(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (any device, bfloat16 too); torch is not imported for numpy input
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def _backend(name: str):
    if name not in ("auto", "faiss", "torch"):
        raise ValueError(f"backend must be 'auto', 'faiss' or 'torch', got {name!r}")
    if name == "torch":
        return _torch_block
    try:
        import faiss  # noqa: F401
    except ImportError:
        if name == "faiss":
            raise
        return _torch_block
    return _faiss_block


# ------------------------------------------------------------------------------------ faiss


def _faiss_block(q: np.ndarray, c: np.ndarray, k: int, doc_block: int) -> tuple[np.ndarray, np.ndarray]:
    """One query block with faiss: ``k + 1`` candidates, re-searched wider where tied at the cut."""
    n = c.shape[0]
    fetch = min(k + 1, n)
    scores, idx = _faiss_knn(q, c, fetch)
    top_s, top_i = _sort_ties(scores, idx, k)
    if fetch < n:
        tied = np.flatnonzero(scores[:, k] == scores[:, k - 1])  # a document outside may tie the k-th
        if tied.size:
            top_s[tied], top_i[tied] = _resolve_cut_ties(q[tied], c, k, fetch, doc_block)
    return top_s, top_i


def _faiss_knn(q: np.ndarray, c: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    return faiss.knn(q, c, fetch, metric=faiss.METRIC_INNER_PRODUCT)


def _resolve_cut_ties(q: np.ndarray, c: np.ndarray, k: int, fetch: int, doc_block: int):
    """Rows tied at the cut: double the candidates until the last one scores below the k-th (then
    every document tied with the k-th is a candidate) or the whole corpus is fetched; then sort by
    (score desc, index asc). Rows go in groups of about ``64 * doc_block`` candidates."""
    n = c.shape[0]
    out_s = np.empty((len(q), k), dtype=np.float32)
    out_i = np.empty((len(q), k), dtype=np.int64)
    todo = np.arange(len(q))
    while todo.size:
        fetch = min(2 * fetch, n)
        group = max(1, (64 * doc_block) // fetch)
        left = []
        for g in range(0, todo.size, group):
            rows = todo[g : g + group]
            s, i = _faiss_knn(q[rows], c, fetch)
            done = s[:, -1] < s[:, k - 1] if fetch < n else np.ones(len(rows), dtype=bool)
            out_s[rows[done]], out_i[rows[done]] = _sort_ties(s[done], i[done], k)
            left.append(rows[~done])
        todo = np.concatenate(left)
    return out_s, out_i


def _sort_ties(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``k`` of candidates sorted by score descending, equal scores by index ascending.

    faiss returns the candidates sorted by score but leaves the order of equal scores unspecified,
    so only the indices inside runs of equal scores are re-sorted (in place): the entries of all
    tied runs are gathered, sorted by (run, index) and written back to the same slots.
    """
    if scores.shape[1] > 1:
        eq = scores[:, 1:] == scores[:, :-1]  # (n, m - 1): entry j + 1 ties entry j
        if eq.any():
            member = np.zeros(scores.shape, dtype=bool)
            member[:, 1:] |= eq
            member[:, :-1] |= eq
            row, col = np.nonzero(member)  # row-major: a run's entries are consecutive
            starts = np.ones(len(row), dtype=bool)
            inner = col > 0
            starts[inner] = ~eq[row[inner], col[inner] - 1]
            run = np.cumsum(starts)
            ids = idx[row, col]
            idx[row, col] = ids[np.lexsort((ids, run))]
    return scores[:, :k], idx[:, :k]


# ------------------------------------------------------------------------------------ torch


def _torch_block(q: np.ndarray, c: np.ndarray, k: int, doc_block: int) -> tuple[np.ndarray, np.ndarray]:
    """One query block with torch: the corpus ``doc_block`` rows at a time, a running top-k merged
    by a stable sort over candidates in index order (ties resolve to the lower index)."""
    import torch

    with warnings.catch_warnings():  # a read-only (memory-mapped) corpus: it is only read
        warnings.simplefilter("ignore", UserWarning)
        qb, corpus = torch.from_numpy(q), torch.from_numpy(c)
    best_s = torch.empty((qb.shape[0], 0))
    best_i = torch.empty((qb.shape[0], 0), dtype=torch.long)
    with torch.inference_mode():
        for dstart in range(0, corpus.shape[0], doc_block):
            s = qb @ corpus[dstart : dstart + doc_block].T
            top_s, top_i = _block_topk(s, k)
            del s  # free this block's scores before the next block's are computed
            cand_s = torch.cat([best_s, top_s], dim=1)
            cand_i = torch.cat([best_i, top_i + dstart], dim=1)
            # order candidates by index, then stable-sort by score: ties resolve to lower index
            by_idx = torch.argsort(cand_i, dim=1)
            cand_s = torch.gather(cand_s, 1, by_idx)
            cand_i = torch.gather(cand_i, 1, by_idx)
            order = torch.sort(cand_s, dim=1, descending=True, stable=True).indices[:, :k]
            best_s = torch.gather(cand_s, 1, order)
            best_i = torch.gather(cand_i, 1, order)
    return best_s.numpy(), best_i.numpy()


def _block_topk(s, k: int):
    """Top-``k`` of each row of one score block; among scores tied at the cut, the lowest columns.

    ``torch.topk`` picks arbitrarily among values tied at the cut, so one more value is taken: a
    row whose k-th and (k+1)-th values (the two smallest taken) are equal is redone with a stable
    sort (rare on real data); otherwise the (k+1)-th is dropped.
    """
    import torch

    n = s.shape[1]
    if k >= n:  # the whole block is a candidate
        return s, torch.arange(n).expand(s.shape[0], n)
    top_s, top_i = torch.topk(s, k + 1, dim=1, sorted=False)
    low_s, low_pos = torch.topk(top_s, 2, dim=1, largest=False)  # (k+1)-th and k-th largest
    tied = low_s[:, 0] == low_s[:, 1]
    keep = torch.ones_like(top_s, dtype=torch.bool).scatter_(1, low_pos[:, :1], False)
    top_s, top_i = top_s[keep].view(-1, k), top_i[keep].view(-1, k)
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        fix = torch.sort(s[rows], dim=1, descending=True, stable=True).indices[:, :k]
        top_i[rows] = fix
        top_s[rows] = torch.gather(s[rows], 1, fix)
    return top_s, top_i
