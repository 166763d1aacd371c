"""Weighted fusion of per-field embeddings into one embedding per query or document.

For an item with fields j = 1..m, field embeddings e_j and field weights w_j:

    e = normalise( Σ_j w'_j · normalise(e_j) ),   w'_j = w_j·p_j / Σ_k w_k·p_k

where p_j ∈ {0, 1} says whether field j is present (a missing value, such as an empty text or a
missing image, has p_j = 0, so the remaining weights are renormalised). This is the rule of the
reference Marqo-GS evaluation (document default: image 0.9, title 0.1). An item with no field
present gets the zero vector, which scores 0 against everything; callers count such items.

The same function is used in training, evaluation and indexing.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

DEFAULT_DOC_FIELD_WEIGHTS = {"image": 0.9, "title": 0.1}


def fuse(
    field_embeddings: Sequence[torch.Tensor],
    weights: Sequence[float],
    present: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Fuse ``m`` field embeddings of shape (n, d) with weights (m,) and presence masks (n,) each."""
    if not field_embeddings:
        raise ValueError("fuse needs at least one field embedding")
    if len(weights) != len(field_embeddings):
        raise ValueError(f"{len(field_embeddings)} field embeddings but {len(weights)} weights")
    if any(w < 0 for w in weights):
        raise ValueError(f"field weights must be non-negative, got {list(weights)}")
    if len(field_embeddings) == 1 and present is None and weights[0] > 0:
        return F.normalize(field_embeddings[0], dim=-1)
    stacked = torch.stack([F.normalize(e, dim=-1) for e in field_embeddings])  # (m, n, d)
    w = torch.as_tensor(list(weights), dtype=stacked.dtype, device=stacked.device)[:, None]  # (m, 1)
    if present is not None:
        w = w * torch.stack([p.to(stacked.dtype) for p in present])  # (m, n)
    else:
        w = w.expand(-1, stacked.shape[1])
    total = w.sum(0, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))
    return F.normalize((w[..., None] * stacked).sum(0), dim=-1)


def field_weights(names: Sequence[str], configured: Mapping[str, float] | None = None) -> list[float]:
    """Weights for the named fields: configured values, else the defaults, else uniform."""
    if configured:
        missing = [n for n in names if n not in configured]
        if missing:
            raise ValueError(f"no fusion weight for field(s) {missing}; configured: {dict(configured)}")
        return [float(configured[n]) for n in names]
    if len(names) > 1 and all(n in DEFAULT_DOC_FIELD_WEIGHTS for n in names):
        return [DEFAULT_DOC_FIELD_WEIGHTS[n] for n in names]
    return [1.0] * len(names)
