r"""Soft (ListNet-style) targets: one softmax per query that retrieves and ranks at once.

:class:`gcl.losses.GCLLoss` with ``targets="soft"`` calls :func:`soft_target_loss` on its logits
(``L_ij = q_i . d_j / T``, hard-negative columns ``H_ik = q_i . h_k / T``). The q->d direction:

* **anchors**: rows ``r`` with ``w_r > 0``; row ``r`` stands for its query ``q(r)`` (``query_ids``;
  ``None``: every row is its own query);
* **targets**: the columns of the same query, ``T(r) = {j : query_id[j] == query_id[r]}``, with
  ``p_rj = w_j^(1/tau_t) / sum_{k in T(r)} w_k^(1/tau_t)`` on ``T(r)`` and 0 on every other
  column. ``w`` are the rows' weights (the configured score-to-weight function of their grades),
  ``tau_t`` the target temperature. A column with ``w_j = 0`` gets target 0 and stays in the
  denominator as a negative;
* **candidates** ``C(r)``: every batch column and every hard negative, except, under
  ``same_doc="mask"`` with ``doc_ids`` given, *copies* of a target -- a column ``k not in T(r)``
  (or a hard negative) whose document id equals that of a column in ``T(r)``: the same document,
  neither a target nor a negative;
* the term of row ``r`` is the cross-entropy of the targets with the softmax over ``C(r)``::

      CE_r = - sum_{j in T(r)} p_rj * ( L_rj - log sum_{k in C(r)} exp(L_rk) )

* **collapsing rows of one query**: the trainer encodes a query once per row (dropout differs),
  so each row is an anchor with the same target distribution and the rows of a query are
  averaged; the loss is then the mean over the batch's distinct queries ``Q``::

      loss_q->d = (1 / |Q|) * sum_{q in Q} (1 / |R_q|) * sum_{r in R_q} CE_r,
      R_q = {r : query_id[r] == q, w_r > 0},   Q = {q : R_q non-empty}

The d->q direction is the same on the transposed logits with the roles of the ids swapped: the
anchors are the batch's distinct documents (``doc_ids``; ``None``: every row its own document),
the targets of document ``d`` are the query columns of the rows that judged it,
``p_rj ∝ w_j^(1/tau_t)`` over ``{j : doc_id[j] == d}`` (the query that rates ``d`` higher gets more
mass), copies of a target query (``query_id`` equal, under ``same_doc="mask"``) are dropped, and
hard negatives take no part. ``symmetric`` averages the two directions.

Reductions (tested): a query with one document in the batch (distinct ids) has a one-hot target,
so its term is InfoNCE with the masking above; with all ids distinct the loss is CLIP
(``symmetric``) or InfoNCE / MNRL (one-way) for any weights; the targets depend only on weight
ratios within a query, so equal grades give uniform targets over the query's documents.

Target temperature ``tau_t > 0`` (default 1: targets proportional to the weights): the power form
``w^(1/tau_t)`` keeps a zero weight at zero target, depends only on weight ratios (as the hard loss
does), tends to all mass on the query's top-weighted documents (ties share) as ``tau_t -> 0`` and to
uniform over its positive-weight documents as ``tau_t -> inf``. (A softmax of the weights,
``exp(w / tau_t)``, would give zero-weight documents mass and depend on the weights' scale.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def soft_target_direction(
    logits: Tensor,
    weights: Tensor,
    anchor_ids: Tensor | None,
    cand_ids: Tensor | None,
    *,
    mask_copies: bool,
    target_temperature: float,
    extra: Tensor | None = None,
    extra_ids: Tensor | None = None,
) -> Tensor:
    r"""One direction of the soft-target loss: ``loss_q->d`` of the module docstring.

    ``logits`` (B, B): row ``r`` is an anchor, column ``j`` the candidate of row ``j``.
    ``anchor_ids`` identify each row's anchor (query ids for q->d), ``cand_ids`` each column's
    candidate (document ids for q->d); ``None``: all distinct. ``extra`` (B, N) are extra
    negative columns (hard negatives) with ids ``extra_ids``. ``weights`` (B,), >= 0, positive sum.
    """
    b = logits.shape[0]
    device = logits.device
    if anchor_ids is None:
        anchor_ids = torch.arange(b, device=device)
    w = weights.detach().to(logits.dtype)
    positive = w > 0
    same_anchor = anchor_ids[:, None] == anchor_ids[None, :]  # (B, B): T(r) as a row mask
    # targets p_rj ∝ w_j^(1/tau_t) on T(r), in log space (no underflow for small tau_t); zero weight -> 0
    log_w = torch.where(positive, w.clamp_min(torch.finfo(w.dtype).tiny).log(), -torch.inf) / target_temperature
    target_logits = log_w[None, :].expand(b, b).masked_fill(~same_anchor, -torch.inf)
    anchors = positive  # an anchor's own column is in T(r) with w_r > 0: its target row is well defined
    targets = torch.where(anchors[:, None], torch.softmax(target_logits.masked_fill(~anchors[:, None], 0.0), dim=1),
                          torch.zeros_like(target_logits))

    allowed = torch.ones(b, b, dtype=torch.bool, device=device)
    extra_allowed = None
    if mask_copies and cand_ids is not None:
        same_cand = (cand_ids[:, None] == cand_ids[None, :]).to(logits.dtype)
        copies = (same_anchor.to(logits.dtype) @ same_cand) > 0  # column k shares a candidate id with T(r)
        allowed = ~(copies & ~same_anchor)
        if extra is not None and extra_ids is not None:
            hits = (cand_ids[:, None] == extra_ids[None, :]).to(logits.dtype)  # (B, N)
            extra_allowed = (same_anchor.to(logits.dtype) @ hits) == 0
    row = logits.masked_fill(~allowed, -torch.inf)
    if extra is not None and extra.shape[1] > 0:
        ex = extra if extra_allowed is None else extra.masked_fill(~extra_allowed, -torch.inf)
        lse = torch.logsumexp(torch.cat([row, ex], dim=1), dim=1)
    else:
        lse = torch.logsumexp(row, dim=1)  # finite: column r is always allowed
    log_p = (logits - lse[:, None]).masked_fill(~same_anchor, 0.0)  # only target columns are read
    ce = -(targets * log_p).sum(dim=1)  # (B,): CE_r (0 for non-anchors)

    # average the rows of one anchor, then over distinct anchors: row r weighs 1 / (|R_q| |Q|)
    group_size = (same_anchor & positive[None, :]).sum(dim=1).to(logits.dtype)  # |R_q(r)|
    share = torch.where(anchors, 1.0 / group_size.clamp_min(1.0), torch.zeros_like(group_size))
    return (share * ce).sum() / share.sum()


def soft_target_loss(
    logits: Tensor,
    weights: Tensor,
    *,
    query_ids: Tensor | None,
    doc_ids: Tensor | None,
    same_doc: str,
    symmetric: bool,
    target_temperature: float,
    hard_logits: Tensor | None = None,
    hard_neg_doc_ids: Tensor | None = None,
) -> Tensor:
    """The soft-target loss on ``logits`` (B, B) = ``q . d^T / T`` (and q->d hard negatives
    ``hard_logits`` (B, N)): ``loss_q->d``, or its mean with ``loss_d->q`` when ``symmetric``."""
    mask = same_doc == "mask"
    loss = soft_target_direction(logits, weights, query_ids, doc_ids, mask_copies=mask,
                                 target_temperature=target_temperature, extra=hard_logits,
                                 extra_ids=hard_neg_doc_ids)
    if symmetric:
        loss_dq = soft_target_direction(logits.T, weights, doc_ids, query_ids, mask_copies=mask,
                                        target_temperature=target_temperature)
        loss = (loss + loss_dq) / 2
    return loss
