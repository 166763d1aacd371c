"""Fusion of ranked lists (dense and lexical) into one ranking: RRF and a convex combination.

Each input list ``j`` holds candidate keys (document labels, corpus rows) best first, with scores
``s_j(d)`` and 1-based ranks ``r_j(d)``; ``D_j`` is the set of its keys. Two rules:

**Reciprocal rank fusion** (Cormack, Clarke & Büttcher, SIGIR 2009)::

    RRF(d) = Σ_{j : d ∈ D_j}  1 / (k_rrf + r_j(d))          k_rrf = 60 by default

Scores are ignored; only ranks count, so lists on different scales (cosine, BM25) mix freely.

**Convex combination of min-max normalised scores** (weights ``w_j >= 0``; for dense + lexical,
``w = (α, 1 − α)``)::

    ŝ_j(d) = (s_j(d) − min_{D_j} s_j) / (max_{D_j} s_j − min_{D_j} s_j)    (ŝ_j = 1 if max = min)
    CC(d)  = Σ_{j : d ∈ D_j}  w_j · ŝ_j(d)

A document missing from list ``j`` gets ``ŝ_j = 0`` there (the worst retrieved score's value).
Normalisation is over the retrieved candidates of each list (the top ``depth``), so the fused
scores depend on the depth; compare settings at the same depth.

**Ties** (equal fused scores) are ordered by first appearance when the lists are read rank by
rank, list by list: rank 1 of list 0, rank 1 of list 1, rank 2 of list 0, ... So with
``[dense, lexical]`` a document ranked first by dense comes before one ranked first by lexical
alone. The order is a function of the inputs only.

:class:`HybridParams` holds the defaults (one place): used by ``gcl evaluate --hybrid``,
``gcl search --mode hybrid`` and the service's ``mode: "hybrid"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from gcl.errors import ConfigError

MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("rrf", "convex")


@dataclass(frozen=True)
class HybridParams:
    """How dense and lexical results are fused (see the module docstring for the equations).

    ``fusion``: ``rrf`` or ``convex``; ``k_rrf``: the RRF rank offset; ``alpha``: the dense weight
    of the convex combination (lexical gets ``1 − alpha``); ``depth``: candidates taken from each
    list before fusing in search (at least the requested window; evaluation uses its own depth).
    """

    fusion: Literal["rrf", "convex"] = "rrf"
    k_rrf: float = 60.0
    alpha: float = 0.5
    depth: int = 100

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose from {list(FUSIONS)}")
        if not isinstance(self.k_rrf, (int, float)) or isinstance(self.k_rrf, bool) or not self.k_rrf >= 0:
            raise ConfigError(f"k_rrf must be a number >= 0, got {self.k_rrf!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {self.alpha!r}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 1:
            raise ConfigError(f"depth must be a positive integer, got {self.depth!r}")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown search mode {mode!r}; choose from {list(MODES)}")
    return mode


def _first_seen(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, each list entry's index into them, and each key's first-appearance position."""
    n_lists = len(keys)
    flat = np.concatenate([np.asarray(k, dtype=np.int64) for k in keys]) if keys else np.zeros(0, np.int64)
    pos = np.concatenate([np.arange(len(k), dtype=np.int64) * n_lists + j for j, k in enumerate(keys)]) \
        if keys else np.zeros(0, np.int64)
    uniq, inverse = np.unique(flat, return_inverse=True)
    first = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, inverse, pos)
    return uniq, inverse, first


def _ranked(uniq: np.ndarray, fused: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((first, -fused))  # fused score descending, then first appearance
    return uniq[order], fused[order]


def _check_lists(keys: Sequence[np.ndarray]) -> None:
    for j, k in enumerate(keys):
        k = np.asarray(k)
        if k.ndim != 1 or len(np.unique(k)) != len(k):
            raise ValueError(f"ranked list {j} must be a 1-d array of distinct keys")


def rrf(keys: Sequence[np.ndarray], *, k_rrf: float = HybridParams.k_rrf) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of ranked key lists (best first): ``(keys, scores)``, best first."""
    _check_lists(keys)
    uniq, inverse, first = _first_seen(keys)
    ranks = np.concatenate([np.arange(1, len(k) + 1, dtype=np.float64) for k in keys]) if keys else np.zeros(0)
    fused = np.zeros(len(uniq), dtype=np.float64)
    np.add.at(fused, inverse, 1.0 / (k_rrf + ranks))
    return _ranked(uniq, fused, first)


def min_max(scores: np.ndarray) -> np.ndarray:
    """``(s − min) / (max − min)``; all ones when every score is equal (and for one score)."""
    s = np.asarray(scores, dtype=np.float64)
    if not len(s):
        return s
    lo, hi = s.min(), s.max()
    return np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)


def convex(
    keys: Sequence[np.ndarray], scores: Sequence[np.ndarray], *, weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of min-max normalised scores (missing = 0): ``(keys, scores)``, best first."""
    _check_lists(keys)
    if not (len(keys) == len(scores) == len(weights)):
        raise ValueError(f"{len(keys)} key lists, {len(scores)} score lists and {len(weights)} weights")
    for j, (k, s) in enumerate(zip(keys, scores)):
        if len(k) != len(s) or not np.isfinite(np.asarray(s, dtype=np.float64)).all():
            raise ValueError(f"list {j}: {len(k)} keys but {len(s)} scores, or a non-finite score")
    uniq, inverse, first = _first_seen(keys)
    parts = [w * min_max(s) for w, s in zip(weights, scores)]
    fused = np.zeros(len(uniq), dtype=np.float64)
    np.add.at(fused, inverse, np.concatenate(parts) if parts else np.zeros(0))
    return _ranked(uniq, fused, first)


def fuse_pair(
    dense: tuple[np.ndarray, np.ndarray], lexical: tuple[np.ndarray, np.ndarray], params: HybridParams
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse a dense and a lexical list ``(keys, scores)`` by ``params.fusion``: ``(keys, scores)``."""
    if params.fusion == "rrf":
        return rrf([dense[0], lexical[0]], k_rrf=params.k_rrf)
    return convex([dense[0], lexical[0]], [dense[1], lexical[1]], weights=[params.alpha, 1.0 - params.alpha])


def fuse_hits(dense: Sequence, lexical: Sequence, params: HybridParams, k: int) -> list:
    """Fuse two best-first lists of :class:`~gcl.index.store.SearchHit` into the top ``k``; each
    hit's ``score`` becomes its fused score (its fields come from the list it was first seen in)."""
    from gcl.index.store import SearchHit

    code: dict[str, int] = {}
    first: dict[str, object] = {}
    for hits in (dense, lexical):
        for h in hits:
            code.setdefault(h.doc_id, len(code))
            first.setdefault(h.doc_id, h)
    ids = list(code)
    side = [(np.asarray([code[h.doc_id] for h in hits], dtype=np.int64),
             np.asarray([h.score for h in hits], dtype=np.float64)) for hits in (dense, lexical)]
    keys, fused = fuse_pair(side[0], side[1], params)
    return [SearchHit(doc_id=ids[c], score=float(s), fields=first[ids[c]].fields)
            for c, s in zip(keys[:k].tolist(), fused[:k].tolist())]
