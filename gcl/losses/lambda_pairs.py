r"""A LambdaRank-weighted pairwise term: ΔnDCG-weighted logistic loss on a query's graded documents.

:class:`gcl.losses.GCLLoss` with ``lambda_weight = λ > 0`` adds ``λ · L_pair`` to its loss (hard or
soft targets). ``L_pair`` works on the q->d logits ``L_rj = q_r . d_j / T`` only, in-batch
documents only (hard negatives take no part), and uses the rows' graded scores ``s``::

    G_j          = (s_j - s_min) / (s_max - s_min)             gain in [0, 1]; score_range = (s_min, s_max)
    rank_r(j)    = 1 + position of column j when anchor r ranks its query's documents by L_rj
                   (descending; ties: lower column index first)
    D(k)         = 1 / log2(1 + k)                             discount, no cut-off
    IDCG_r       = sum_k G_(k) D(k)                            the query's documents sorted by gain
    |ΔNDCG_rij|  = |G_i - G_j| * |D(rank_r(i)) - D(rank_r(j))| / IDCG_r
    a_rij        = |ΔNDCG_rij| / |R_q(r)|                      (no gradient through a)
    L_pair       = sum_{r,i,j} a_rij * log(1 + exp(-(L_ri - L_rj))) / sum_{r,i,j} a_rij

over anchors ``r`` with ``w_r > 0`` and pairs ``(i, j)`` of columns of ``r``'s query (``query_id``
equal) with ``w_i, w_j > 0`` and ``s_i > s_j``; ``R_q(r)`` are the rows of that query with
``w > 0``. ``|ΔNDCG_rij|`` is how much the query's nDCG (over its in-batch documents, gain ``G``)
changes when ``i`` and ``j`` swap places in anchor ``r``'s current ranking: the LambdaRank weight
(Burges, "From RankNet to LambdaRank to LambdaMART: An Overview", 2010; Wang et al., "The
LambdaLoss Framework for Ranking Metric Optimization", CIKM 2018) on RankNet's logistic loss.

* **Rows of one query**: the trainer encodes a query once per row, so each of its rows is an
  anchor with its own ranking; ``1 / |R_q|`` makes a query's pairs weigh what one anchor's would.
* **Normalisation** over all pairs of the batch (the brief's ``sum |ΔNDCG|``): a query whose order
  is more wrong (larger swaps) weighs more. No pair (no query with two grades in the batch, e.g.
  the ``random`` sampler, or equal grades) gives ``L_pair = 0``.
* **Gain**: linear in the score, min-max normalised over the training table. The evaluation's nDCG
  (``docs/evaluation.md``) uses linear gains on the reference grades ``1 + 99 n``, proportional to
  ``G`` up to that offset, so ``ΔNDCG`` weighs swaps as the evaluated metric does; the lowest grade
  has gain 0 (irrelevant), as in the thresholded gains of ``gcl evaluate --relevance-threshold``.
  (``2^G - 1`` on ``G in [0, 1]`` would differ little and match no evaluated metric.)
* A row with ``w = 0`` (multi-field terms: a missing field) takes no part, as anchor or document.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gains(scores: Tensor, score_range: tuple[float, float]) -> Tensor:
    """``G = (s - s_min) / (s_max - s_min)``, all 1 when ``s_min == s_max`` (as the weight functions)."""
    lo, hi = score_range
    if hi == lo:
        return torch.ones_like(scores)
    return ((scores - lo) / (hi - lo)).clamp(0.0, 1.0)


@torch.no_grad()
def pair_weights(logits: Tensor, weights: Tensor, scores: Tensor, query_ids: Tensor,
                 score_range: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """``(index (P, 3) of (r, i, j), a (P,))``: the anchored pairs and their weights ``a_rij``."""
    b = logits.shape[0]
    device = logits.device
    positive = weights > 0
    group = (query_ids[:, None] == query_ids[None, :]) & positive[:, None] & positive[None, :]  # (r, j)
    g = gains(scores.to(logits.dtype), score_range)
    # rank of each column in anchor r's ranking of its query's documents (others ranked after them)
    order = torch.argsort(logits.masked_fill(~group, -torch.inf), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(1, b + 1, device=device).expand(b, b))
    discount = 1.0 / torch.log2(1.0 + rank.to(logits.dtype))
    ideal = torch.sort(torch.where(group, g[None, :], torch.zeros_like(logits)), dim=1, descending=True).values
    idcg = (ideal / torch.log2(torch.arange(2, b + 2, device=device, dtype=logits.dtype))).sum(dim=1)  # (B,)

    pairs = (group & (scores[:, None] > scores[None, :])).nonzero()  # (i, j): same query, s_i > s_j
    if len(pairs) == 0:
        return pairs.new_zeros((0, 3)), logits.new_zeros(0)
    i, j = pairs[:, 0], pairs[:, 1]
    anchored = group[i].nonzero()  # (k, r) for each pair k: anchors r of the pair's query
    k, r = anchored[:, 0], anchored[:, 1]
    i, j = i[k], j[k]
    size = group.sum(dim=1).to(logits.dtype)  # |R_q(r)| for an anchor r
    delta = (g[i] - g[j]).abs() * (discount[r, i] - discount[r, j]).abs()
    a = torch.where(idcg[r] > 0, delta / idcg[r].clamp_min(torch.finfo(logits.dtype).tiny), torch.zeros_like(delta))
    return torch.stack([r, i, j], dim=1), a / size[r]


def lambda_pair_loss(logits: Tensor, weights: Tensor, scores: Tensor, query_ids: Tensor | None,
                     score_range: tuple[float, float]) -> Tensor:
    """``L_pair`` of the module docstring on the q->d ``logits`` (B, B); 0 without pairs."""
    if query_ids is None:  # every row its own query: no pairs
        return logits.new_zeros(())
    index, a = pair_weights(logits.detach(), weights.detach(), scores.detach(), query_ids, score_range)
    total = a.sum()
    if len(a) == 0 or not bool(total > 0):
        return logits.new_zeros(())
    r, i, j = index.unbind(dim=1)
    return (a * torch.nn.functional.softplus(-(logits[r, i] - logits[r, j]))).sum() / total
