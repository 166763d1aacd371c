"""Exact top-k inner-product search in blocks.

For L2-normalised vectors the inner product is the cosine similarity. The query×corpus score
matrix is never materialised: queries are processed ``query_block`` at a time and the corpus
``doc_block`` at a time, keeping a running top-k per query, so memory is
O(query_block × (doc_block + k)) whatever the corpus size (a 1M-document corpus is fine).

Ordering rule: results are sorted by score descending; equal scores are ordered by corpus index
ascending (the merge is a stable sort over candidates kept in index order).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


def exact_search(
    queries: np.ndarray | torch.Tensor,
    corpus: np.ndarray | torch.Tensor,
    k: int,
    *,
    query_block: int = 1024,
    doc_block: int = 65536,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product. Returns (scores (nq, k') float32, indices (nq, k') int64), k' = min(k, n_docs)."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32) if not torch.is_tensor(queries) else queries).float()
    c = torch.as_tensor(np.asarray(corpus, dtype=np.float32) if not torch.is_tensor(corpus) else corpus).float()
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and corpus {tuple(c.shape)} must be 2-D with the same width")
    if c.shape[0] == 0:
        raise ValueError("cannot search an empty corpus")
    if int(k) < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(int(k), c.shape[0])
    out_scores = np.empty((q.shape[0], k), dtype=np.float32)
    out_idx = np.empty((q.shape[0], k), dtype=np.int64)
    blocks = range(0, q.shape[0], query_block)
    with torch.inference_mode():
        for start in tqdm(blocks, desc="search", disable=not show_progress, unit="block"):
            qb = q[start : start + query_block]
            best_s = torch.empty((qb.shape[0], 0))
            best_i = torch.empty((qb.shape[0], 0), dtype=torch.long)
            for dstart in range(0, c.shape[0], doc_block):
                s = qb @ c[dstart : dstart + doc_block].T
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
            out_scores[start : start + qb.shape[0]] = best_s.numpy()
            out_idx[start : start + qb.shape[0]] = best_i.numpy()
    return out_scores, out_idx


def _block_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of one score block; among scores tied at the cut, the lowest columns.

    ``torch.topk`` picks arbitrarily among values tied at the cut, so one more value is taken: a
    row whose k-th and (k+1)-th values (the two smallest taken) are equal is redone with a stable
    sort (rare on real data); otherwise the (k+1)-th is dropped.
    """
    n = s.shape[1]
    if k >= n:  # the whole block is a candidate
        return s, torch.arange(n).expand(s.shape[0], n)
    if k == 0:
        return s[:, :0], torch.empty((s.shape[0], 0), dtype=torch.long)
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
