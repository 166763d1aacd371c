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
                kk = min(k, s.shape[1])
                top_s, top_i = torch.topk(s, kk, dim=1, sorted=False)
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
