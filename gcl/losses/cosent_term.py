r"""A cross-query graded term: CoSENT on the batch's positive pairs.

:class:`gcl.losses.GCLLoss` with ``cosent_weight = μ > 0`` adds ``μ · L_cos`` to its loss (hard or
soft targets). ``L_cos`` compares the positive pairs of the batch with one another, whatever
their queries: with the diagonal logits ``L_ii = q_i . d_i / T`` and graded scores ``s``::

    L_cos = log( 1 + sum_{(i, j): s_i > s_j} exp(L_jj - L_ii) )

over rows ``i, j`` with ``w > 0``. It is the CoSENT loss (Su, 2022; sentence-transformers'
``CoSENTLoss`` at ``scale = 1 / T``, 20 at the default ``T = 0.05``) with the batch's judged
pairs as its pairs: a pair graded higher than another should have the higher cosine, also
across queries. The in-batch contrastive term orders each query against other queries'
documents; the within-query rule ``same_query="lower"`` and the pairwise term
(:mod:`gcl.losses.lambda_pairs`) order a query's own documents and need query groups in the
batch, which cost retrieval on Home Depot (docs/results.md §1c). This term needs no grouping:
a random batch of 64 pairs with several grades holds about a thousand ordered pairs.

* No pair with different grades (constant scores, one row) gives ``L_cos = 0``.
* ``L_cos`` only reads the diagonal: no gradient through the negatives.
* A row with ``w = 0`` (a missing field of a multi-field term, a weight-0 grade) takes no part.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cosent_loss(logits: Tensor, weights: Tensor, scores: Tensor) -> Tensor:
    """``L_cos`` of the module docstring on the q->d ``logits`` (B, B); 0 without a pair."""
    keep = weights > 0
    pos = logits.diagonal()[keep]
    s = scores[keep]
    ordered = s[:, None] > s[None, :]  # (i, j): s_i > s_j
    if not bool(ordered.any()):
        return logits.new_zeros(())
    diff = (pos[None, :] - pos[:, None])[ordered]  # L_jj - L_ii
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)
