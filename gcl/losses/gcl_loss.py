"""The Generalized Contrastive Learning loss (Zhu, Jung & Clark, arXiv 2404.08535)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SAME_QUERY_RULES = ("mask", "lower", "keep")
SAME_DOC_RULES = ("mask", "keep")
TARGETS = ("hard", "soft")


class GCLLoss(nn.Module):
    r"""Weighted, masked InfoNCE over a batch of graded (query, document) pairs.

    Row ``i`` of a batch is a positive pair (query ``q_i``, document ``d_i``) with weight ``w_i``
    (from a score-to-weight function, :mod:`gcl.losses.weights`) and graded score ``s_i``.
    Embeddings must already be L2-normalised (the loss does not normalise them), so ``q_i . d_j`` is
    a cosine similarity. With logits ``L_ij = q_i . d_j / T``::

        l_i(q->d) = -log( exp(L_ii) / sum_{j in C_i} exp(L_ij) ),   C_i = {i} U {allowed negatives of i}
        loss(q->d) = sum_i w_i * l_i(q->d) / sum_i w_i

    ``loss(d->q)`` is the same on the transposed logits (document ``d_i`` must pick out query ``q_i``
    among the batch's queries), and the loss is ``(loss(q->d) + loss(d->q)) / 2`` when ``symmetric``,
    else ``loss(q->d)``. Weights are normalised over the batch, so only their ratios matter and a
    zero weight removes a row's own term (its embeddings still serve as negatives for other rows).

    Which columns ``j != i`` are allowed negatives of row ``i`` (q->d; a column is allowed unless a
    rule excludes it):

    * ``same_doc="mask"``: ``doc_id[j] == doc_id[i]`` -> excluded (it is the positive document
      itself, not a negative). ``"keep"``: no such rule.
    * ``query_id[j] == query_id[i]`` (another graded document of the same query):
      ``same_query="mask"`` -> excluded; ``"lower"`` -> allowed only if ``s_j < s_i`` (strictly
      lower grade); ``"keep"`` -> allowed (plain CLIP, which pushes true positives away).
    * ids ``None`` -> that rule never fires (every other column is a negative).

    d->q mirrors this with the roles of query and document swapped: for document ``d_i``,
    ``same_doc`` governs query columns with ``query_id[j] == query_id[i]`` (the positive query
    itself) and ``same_query`` governs query columns with ``doc_id[j] == doc_id[i]`` (the same
    document judged for another query); under ``"lower"`` such a query stays a negative only if it
    gave the document a strictly lower score, ``s_j < s_i``.

    With a query's graded documents together in one batch, ``same_query="lower"`` makes the q->d
    term the Plackett-Luce (ListMLE) log-likelihood of the graded order, with in-batch negatives
    added to every denominator: the top document competes with all lower ones, the bottom one only
    with other queries' documents.

    Hard negatives (``hard_neg_emb``, ``N`` extra documents: low-scored documents of the same
    queries or mined ones) are extra columns ``L_ik = q_i . h_k / T`` of the q->d direction only.
    They are negatives of every row, except, when ``same_doc="mask"`` and both ``doc_ids`` and
    ``hard_neg_doc_ids`` are given, for rows whose positive document has the same id.

    Soft targets (``targets="soft"``; ListNet-style, :mod:`gcl.losses.soft_targets`): instead of
    one row per positive, each query ``q`` of the batch gets one target distribution over all
    columns, ``p_j = w_j^(1/tau_t) / sum_{k: query_id[k] = q} w_k^(1/tau_t)`` on its own rows' documents
    and 0 elsewhere (``tau_t = target_temperature``), and::

        CE_r = - sum_{j: query_id[j] = q(r)} p_j * ( L_rj - log sum_{k in C(r)} exp(L_rk) )
        loss(q->d) = (1 / |Q|) sum_q (1 / |R_q|) sum_{r in R_q} CE_r      (R_q: rows of q with w_r > 0)

    ``C(r)``: every column and hard negative except copies of a target document under
    ``same_doc="mask"``. ``d->q`` mirrors it (each distinct document's targets are the queries that
    judged it, weighted alike); ``symmetric`` averages the two. ``same_query`` must stay
    ``"mask"`` (every document of the query is a target, so no rule is left to choose). One
    softmax both retrieves (judged vs the rest) and ranks (targets follow the grades), and unlike
    ``"lower"`` the bottom document competes with its own query's documents too.

    Pairwise term (``lambda_weight = λ > 0``, :mod:`gcl.losses.lambda_pairs`): with gains
    ``G = (s - s_min) / (s_max - s_min)`` (``score_range``) and anchor ``r``'s current ranking of
    its query's in-batch documents (discount ``D(k) = 1 / log2(1 + k)``, no cut-off)::

        loss = loss_GCL + λ * sum_{r,i,j} a_rij * log(1 + exp(-(L_ri - L_rj))) / sum_{r,i,j} a_rij
        a_rij = |G_i - G_j| * |D(rank_r(i)) - D(rank_r(j))| / IDCG_r / |R_q(r)|     (no gradient)

    over rows ``r`` (``w_r > 0``) and pairs of its query's documents with ``s_i > s_j`` (LambdaRank's
    ``|ΔNDCG|`` weights on RankNet's logistic loss; q->d, in-batch documents only). ``λ = 0``
    (default) leaves the loss exactly as without the term.

    Cross-query term (``cosent_weight = μ > 0``, :mod:`gcl.losses.cosent_term`): CoSENT on the
    batch's positive pairs, across queries (rows with ``w > 0``)::

        loss = loss_GCL + μ * log(1 + sum_{(i, j): s_i > s_j} exp(L_jj - L_ii))

    ``μ = 0`` (default) leaves the loss exactly as without it.

    Reduces to: constant weights and no duplicated ids (or ids ``None``) -> InfoNCE; with
    ``symmetric=True`` exactly CLIP's ``(CE(L, arange) + CE(L.T, arange)) / 2``, with
    ``symmetric=False`` sentence-transformers' ``MultipleNegativesRankingLoss`` at
    ``scale = 1 / T`` (hard negatives included).

    Args (keyword-only):
        temperature: ``T > 0``; the initial value when learnable.
        learnable_temperature: learn ``logit_scale = log(1 / T)`` (CLIP). Before each use it is
            clamped in place (no grad) to ``log(max_logit_scale)``, so ``1 / T <= max_logit_scale``.
        max_logit_scale: upper bound of ``1 / T`` when learnable (CLIP: 100).
        symmetric: average the q->d and d->q terms.
        same_query: ``"mask"`` | ``"lower"`` | ``"keep"`` (``"lower"`` needs ``scores``).
        same_doc: ``"mask"`` | ``"keep"``.
        targets: ``"hard"`` (the paper's GCL, above) | ``"soft"`` (soft targets).
        target_temperature: ``tau_t > 0`` of the soft targets (1: proportional to the weights);
            must stay 1 with ``targets="hard"``.
        lambda_weight: ``λ >= 0`` of the pairwise term (0: off).
        score_range: ``(s_min, s_max)`` of the training scores; required when ``λ > 0`` (gains).
        cosent_weight: ``μ >= 0`` of the cross-query CoSENT term (0: off; needs ``scores``).

    Inputs of :meth:`forward`:

    ======================== ========== ==============================================
    name                     shape      meaning
    ======================== ========== ==============================================
    ``query_emb``            (B, D)     L2-normalised query embeddings
    ``doc_emb``              (B, D)     L2-normalised positive document embeddings
    ``weights``              (B,)       finite, >= 0, positive sum
    ``query_ids``            (B,) int   query identity per row, or ``None``
    ``doc_ids``              (B,) int   document identity per row, or ``None``
    ``scores``               (B,)       graded score per row (``same_query="lower"``)
    ``hard_neg_emb``         (N, D)     extra negative documents (q->d only)
    ``hard_neg_doc_ids``     (N,) int   their document ids
    ======================== ========== ==============================================

    Returns a scalar tensor (float32, or float64 for float64 inputs). Logits and the softmax are
    computed with autocast disabled, in float32 at least.

    Reference: Zhu, Jung & Clark, "Generalized Contrastive Learning for Multi-Modal Retrieval and
    Ranking", arXiv:2404.08535. Equations, masking rules and reductions: ``docs/losses.md``.

    Example::

        loss_fn = GCLLoss(temperature=0.05, same_query="lower")
        loss = loss_fn(q, d, w, query_ids=qid, doc_ids=did, scores=s)
    """

    def __init__(
        self,
        *,
        temperature: float = 0.05,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        symmetric: bool = True,
        same_query: str = "mask",
        same_doc: str = "mask",
        targets: str = "hard",
        target_temperature: float = 1.0,
        lambda_weight: float = 0.0,
        score_range: tuple[float, float] | None = None,
        cosent_weight: float = 0.0,
    ) -> None:
        super().__init__()
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if same_query not in SAME_QUERY_RULES:
            raise ValueError(f"same_query must be one of {SAME_QUERY_RULES}, got {same_query!r}")
        if same_doc not in SAME_DOC_RULES:
            raise ValueError(f"same_doc must be one of {SAME_DOC_RULES}, got {same_doc!r}")
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        target_temperature = float(target_temperature)
        if not (math.isfinite(target_temperature) and target_temperature > 0):
            raise ValueError(f"target_temperature must be a finite number > 0, got {target_temperature}")
        if targets == "hard" and target_temperature != 1.0:
            raise ValueError("target_temperature applies to targets='soft' only (with 'hard' it must stay 1)")
        if targets == "soft" and same_query != "mask":
            raise ValueError(f"same_query={same_query!r} has no effect with targets='soft' (every document of a "
                             "query is a target); leave it 'mask'")
        self.targets = targets
        self.target_temperature = target_temperature
        self.lambda_weight, self.score_range = _check_lambda(lambda_weight, score_range)
        self.cosent_weight = float(cosent_weight)
        if not (math.isfinite(self.cosent_weight) and self.cosent_weight >= 0):
            raise ValueError(f"cosent_weight must be a finite number >= 0, got {cosent_weight}")
        self.symmetric = bool(symmetric)
        self.same_query = same_query
        self.same_doc = same_doc
        self.max_logit_scale = float(max_logit_scale)
        self.logit_scale: nn.Parameter | None
        if learnable_temperature:
            if not (math.isfinite(self.max_logit_scale) and self.max_logit_scale > 0):
                raise ValueError(f"max_logit_scale must be a finite number > 0, got {max_logit_scale}")
            if 1.0 / temperature > self.max_logit_scale:
                raise ValueError(
                    f"temperature {temperature} gives logit scale {1.0 / temperature:g} > "
                    f"max_logit_scale {self.max_logit_scale:g}"
                )
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        else:
            self.logit_scale = None
            self._fixed_scale = 1.0 / temperature

    # ------------------------------------------------------------------ temperature
    @property
    def temperature(self) -> float:
        """The current temperature ``T`` (after clamping when learnable)."""
        if self.logit_scale is None:
            return 1.0 / self._fixed_scale
        log_max = math.log(self.max_logit_scale)
        return math.exp(-min(float(self.logit_scale.detach()), log_max))

    def _scale(self, dtype: torch.dtype) -> Tensor | float:
        """``1 / T``: a float, or ``exp(logit_scale)`` after CLIP's in-place clamp (no grad)."""
        if self.logit_scale is None:
            return self._fixed_scale
        with torch.no_grad():
            self.logit_scale.clamp_(max=math.log(self.max_logit_scale))
        return self.logit_scale.to(dtype).exp()

    def extra_repr(self) -> str:
        learn = self.logit_scale is not None
        return (
            f"temperature={self.temperature:g}, learnable_temperature={learn}, symmetric={self.symmetric}, "
            f"same_query={self.same_query!r}, same_doc={self.same_doc!r}, targets={self.targets!r}"
            + (f", target_temperature={self.target_temperature:g}" if self.targets == "soft" else "")
            + (f", lambda_weight={self.lambda_weight:g}, score_range={self.score_range}" if self.lambda_weight else "")
            + (f", cosent_weight={self.cosent_weight:g}" if self.cosent_weight else "")
        )

    # ------------------------------------------------------------------ masks
    def _allowed(
        self,
        anchor_ids: Tensor | None,
        cand_ids: Tensor | None,
        scores: Tensor | None,
        b: int,
        device: torch.device,
    ) -> Tensor:
        """(B, B) bool, True where column j is in C_i.

        ``anchor_ids`` identify the row's anchor (query ids for q->d, doc ids for d->q): equal ids
        fall under ``same_query``. ``cand_ids`` identify the row's positive candidate (doc ids for
        q->d, query ids for d->q): equal ids fall under ``same_doc``.
        """
        allowed = torch.ones(b, b, dtype=torch.bool, device=device)
        if self.same_doc == "mask" and cand_ids is not None:
            allowed &= cand_ids[:, None] != cand_ids[None, :]
        if anchor_ids is not None and self.same_query != "keep":
            same_anchor = anchor_ids[:, None] == anchor_ids[None, :]
            if self.same_query == "mask":
                allowed &= ~same_anchor
            else:  # "lower" (forward checked that scores are given): a negative only if s_j < s_i
                allowed &= ~same_anchor | (scores[None, :] < scores[:, None])
        allowed.fill_diagonal_(True)
        return allowed

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        query_emb: Tensor,
        doc_emb: Tensor,
        weights: Tensor,
        *,
        query_ids: Tensor | None = None,
        doc_ids: Tensor | None = None,
        scores: Tensor | None = None,
        hard_neg_emb: Tensor | None = None,
        hard_neg_doc_ids: Tensor | None = None,
    ) -> Tensor:
        _check_inputs(query_emb, doc_emb, weights, query_ids, doc_ids, scores, hard_neg_emb, hard_neg_doc_ids)
        if self.same_query == "lower" and scores is None:
            raise ValueError('same_query="lower" needs scores (the graded score of each row)')
        if self.lambda_weight > 0:
            _check_scores_in_range(scores, self.score_range)
        if self.cosent_weight > 0 and scores is None:
            raise ValueError("cosent_weight > 0 needs scores (the graded score of each row)")
        device = query_emb.device
        dtype = torch.promote_types(torch.promote_types(query_emb.dtype, doc_emb.dtype), torch.float32)
        with torch.autocast(device_type=device.type, enabled=False):
            scale = self._scale(dtype)
            q = query_emb.to(dtype)
            d = doc_emb.to(dtype)
            w = weights.to(device=device, dtype=dtype)
            s = None if scores is None else scores.to(device)
            qid = None if query_ids is None else query_ids.to(device)
            did = None if doc_ids is None else doc_ids.to(device)

            logits = (q @ d.T) * scale  # (B, B): L_ij = q_i . d_j / T
            if self.targets == "soft":
                loss = self._soft(logits, q, w, qid, did, scale, hard_neg_emb, hard_neg_doc_ids)
            else:
                loss = self._hard(logits, q, w, qid, did, s, scale, hard_neg_emb, hard_neg_doc_ids)
            if self.lambda_weight > 0:
                from gcl.losses.lambda_pairs import lambda_pair_loss

                loss = loss + self.lambda_weight * lambda_pair_loss(logits, w, s, qid, self.score_range)
            if self.cosent_weight > 0:
                from gcl.losses.cosent_term import cosent_loss

                loss = loss + self.cosent_weight * cosent_loss(logits, w, s.to(dtype))
        return loss

    def _hard(self, logits: Tensor, q: Tensor, w: Tensor, qid: Tensor | None, did: Tensor | None, s: Tensor | None,
              scale: Tensor | float, hard_neg_emb: Tensor | None, hard_neg_doc_ids: Tensor | None) -> Tensor:
        """``targets="hard"``: the paper's GCL (the class docstring's equation)."""
        b, device, dtype = logits.shape[0], logits.device, logits.dtype
        pos = logits.diagonal()

        # q->d: each query against the batch's documents (+ hard negatives).
        qd = logits.masked_fill(~self._allowed(qid, did, s, b, device), float("-inf"))
        if hard_neg_emb is not None and hard_neg_emb.shape[0] > 0:
            hard = (q @ hard_neg_emb.to(dtype).T) * scale  # (B, N)
            if self.same_doc == "mask" and did is not None and hard_neg_doc_ids is not None:
                same = did[:, None] == hard_neg_doc_ids.to(device)[None, :]
                hard = hard.masked_fill(same, float("-inf"))
            qd = torch.cat([qd, hard], dim=1)
        w_norm = w / w.sum()
        loss = (w_norm * (torch.logsumexp(qd, dim=1) - pos)).sum()

        if self.symmetric:  # d->q: each document against the batch's queries, roles swapped.
            dq = logits.T.masked_fill(~self._allowed(did, qid, s, b, device), float("-inf"))
            loss_dq = (w_norm * (torch.logsumexp(dq, dim=1) - pos)).sum()
            loss = (loss + loss_dq) / 2
        return loss

    def _soft(self, logits: Tensor, q: Tensor, w: Tensor, qid: Tensor | None, did: Tensor | None,
              scale: Tensor | float, hard_neg_emb: Tensor | None, hard_neg_doc_ids: Tensor | None) -> Tensor:
        """``targets="soft"``: :func:`gcl.losses.soft_targets.soft_target_loss` on the logits."""
        from gcl.losses.soft_targets import soft_target_loss

        hard = hard_ids = None
        if hard_neg_emb is not None and hard_neg_emb.shape[0] > 0:
            hard = (q @ hard_neg_emb.to(q.dtype).T) * scale  # (B, N)
            hard_ids = None if hard_neg_doc_ids is None else hard_neg_doc_ids.to(q.device)
        return soft_target_loss(logits, w, query_ids=qid, doc_ids=did, same_doc=self.same_doc,
                                symmetric=self.symmetric, target_temperature=self.target_temperature,
                                hard_logits=hard, hard_neg_doc_ids=hard_ids)


def _check_inputs(
    query_emb: Tensor,
    doc_emb: Tensor,
    weights: Tensor,
    query_ids: Tensor | None,
    doc_ids: Tensor | None,
    scores: Tensor | None,
    hard_neg_emb: Tensor | None,
    hard_neg_doc_ids: Tensor | None,
) -> int:
    """Raise ``ValueError`` on malformed inputs; return the batch size."""
    if not (isinstance(query_emb, Tensor) and query_emb.dim() == 2):
        raise ValueError(f"query_emb must be a (B, D) tensor, got {_shape(query_emb)}")
    b, dim = query_emb.shape
    if b == 0:
        raise ValueError("empty batch: query_emb has 0 rows")
    if not (isinstance(doc_emb, Tensor) and tuple(doc_emb.shape) == (b, dim)):
        raise ValueError(f"doc_emb must have the shape of query_emb {(b, dim)}, got {_shape(doc_emb)}")
    _check_vector("weights", weights, b, integer=False)
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights must be finite")
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0")
    if not bool(weights.sum() > 0):
        raise ValueError("weights must have a positive sum (at least one row with weight > 0)")
    for name, ids in (("query_ids", query_ids), ("doc_ids", doc_ids)):
        if ids is not None:
            _check_vector(name, ids, b, integer=True)
    if scores is not None:
        _check_vector("scores", scores, b, integer=False)
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("scores must be finite")
    if hard_neg_emb is None:
        if hard_neg_doc_ids is not None:
            raise ValueError("hard_neg_doc_ids given without hard_neg_emb")
        return b
    if not (isinstance(hard_neg_emb, Tensor) and hard_neg_emb.dim() == 2 and hard_neg_emb.shape[1] == dim):
        raise ValueError(f"hard_neg_emb must be an (N, {dim}) tensor, got {_shape(hard_neg_emb)}")
    n = hard_neg_emb.shape[0]
    if hard_neg_doc_ids is not None:
        _check_vector("hard_neg_doc_ids", hard_neg_doc_ids, n, integer=True)
    return b


def _check_lambda(lambda_weight: float, score_range) -> tuple[float, tuple[float, float] | None]:
    lam = float(lambda_weight)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lambda_weight must be a finite number >= 0, got {lambda_weight}")
    if score_range is None:
        if lam > 0:
            raise ValueError("lambda_weight > 0 needs score_range=(lowest, highest) score of the training data "
                             "(the gains of the pairwise term are normalised to it)")
        return lam, None
    try:
        lo, hi = (float(x) for x in score_range)
    except (TypeError, ValueError):
        raise ValueError(f"score_range must be (lowest, highest), got {score_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"score_range must be finite (lowest, highest) with lowest <= highest, got {score_range!r}")
    return lam, (lo, hi)


def _check_scores_in_range(scores: Tensor | None, score_range: tuple[float, float]) -> None:
    if scores is None:
        raise ValueError("lambda_weight > 0 needs scores (the graded score of each row)")
    lo, hi = score_range
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))  # float32 rounding of the scores
    if bool((scores < lo - tol).any()) or bool((scores > hi + tol).any()):
        raise ValueError(f"scores must lie in score_range {score_range} (lowest, highest of the training data), "
                         f"got {float(scores.min()):g}..{float(scores.max()):g}")


def _check_vector(name: str, t: object, n: int, *, integer: bool) -> None:
    if not (isinstance(t, Tensor) and tuple(t.shape) == (n,)):
        raise ValueError(f"{name} must be a ({n},) tensor, got {_shape(t)}")
    if integer and (t.is_floating_point() or t.is_complex()):
        raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")


def _shape(t: object) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
