"""GCL for sentence-transformers users: a loss and a batch sampler for ``SentenceTransformerTrainer``.

* :class:`GCLLoss` -- sentence-transformers' loss interface (``__init__(model, ...)``,
  ``forward(sentence_features, labels)``, ``get_config_dict``, ``citation``) around gcl's own
  :class:`gcl.losses.GCLLoss` and score-to-weight functions (:mod:`gcl.losses.weights`);
* :class:`CachedGCLLoss` -- the same loss with GradCache (sentence-transformers' own
  ``CachedLossMixin``, as ``CachedMultipleNegativesRankingLoss`` uses it);
* :class:`GCLBatchSampler` -- query-grouped batches (gcl's :class:`QueryGroupedSampler`) for
  ``SentenceTransformerTrainingArguments(batch_sampler=GCLBatchSampler)``;
* :func:`to_st_dataset` / :func:`check_dataset` -- build / check the training ``datasets.Dataset``;
* :func:`freeze_lower_layers` -- train only the top layers of the model, the lower layers frozen
  and (by default) their outputs computed once per distinct text (gcl's ``model.cache_frozen``).

The sampler and the dataset functions live in :mod:`gcl.st_datasets` and are re-exported here.

Dataset layout (column order matters, as everywhere in sentence-transformers)::

    query (str) | document (str) | score (float)             query identity = the query text
    query (str) | document (str) | label ([score, query_id])  query identity = the integer query_id

The trainer's collator tokenises every column except the label column (the first of ``label``,
``labels``, ``score``, ``scores``), so a query id can reach the loss only inside the label, as the
second element of a pair. Document identity is always the document text.

Per batch of ``B`` rows (query ``q_i``, document ``d_i``, score ``s_i``) the loss is gcl's::

    e = normalise(model(text))                 (cosine similarity, as MultipleNegativesRankingLoss)
    w = weight_fn(batch judgments)             (gcl.losses.weights; see ``score_range``)
    loss = GCLLoss(e_q, e_d, w, query_ids, doc_ids, scores)     (gcl.losses.gcl_loss)

``query_ids`` / ``doc_ids`` are equal exactly for rows whose texts tokenise identically (or, for
queries, equal explicit ids), so duplicated texts in a batch are masked, never false negatives.
Constant weights and ``symmetric=False`` give ``MultipleNegativesRankingLoss(scale=1/T)``;
``symmetric=True`` its ``directions=("query_to_doc", "doc_to_query"),
partition_mode="per_direction"`` variant. See ``docs/sentence_transformers.md``.

Needs ``pip install -e .[st]`` (``datasets``, ``accelerate``; sentence-transformers >= 6.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import Tensor, nn

from gcl.errors import DataError
from gcl.losses import get_weight_fn
from gcl.losses.gcl_loss import GCLLoss as _GCLCore
from gcl.st_datasets import (  # noqa: F401 - re-exported: the public names of this integration
    LABEL_COLUMNS,
    MISSING_SCORE,
    DatasetLayout,
    GCLBatchSampler,
    check_dataset,
    to_st_dataset,
)
from gcl.training.config import LossConfig

__all__ = ["GCLLoss", "CachedGCLLoss", "GCLBatchSampler", "check_dataset", "to_st_dataset", "freeze_lower_layers"]


CITATION = """
@misc{zhu2024generalized,
    title={Generalized Contrastive Learning for Multi-Modal Retrieval and Ranking},
    author={Tianyu Zhu and Myong Chol Jung and Jesse Clark},
    year={2024},
    eprint={2404.08535},
    archivePrefix={arXiv},
    primaryClass={cs.IR}
}
"""


@dataclass
class _Batch:
    """What the GCL maths needs of a batch besides the embeddings (all ``(B,)``)."""

    scores: Tensor
    query_ids: Tensor
    doc_ids: Tensor


# --------------------------------------------------------------------------- loss
class GCLLoss(nn.Module):
    r"""Generalized Contrastive Learning (graded relevance, in-batch negatives) for sentence-transformers.

    For a batch of ``B`` graded pairs ``(q_i, d_i, s_i)`` with L2-normalised embeddings, weights
    ``w = weight_fn(judgments)`` and logits ``L_ij = q_i . d_j / T``::

        loss_q->d = sum_i w_i * -log( exp(L_ii) / sum_{j in C_i} exp(L_ij) ) / sum_i w_i
        loss      = (loss_q->d + loss_d->q) / 2   if symmetric,   else loss_q->d

    ``C_i`` is ``i`` plus the allowed negatives: ``same_query`` decides the batch's other
    documents of the same query (``"mask"``: never; ``"lower"``: only strictly lower-scored ones,
    a Plackett-Luce / ListMLE term over the query's graded documents; ``"keep"``: always) and
    ``same_doc`` the same document in another row. The maths is gcl's
    :class:`gcl.losses.GCLLoss` (equations and reductions: ``docs/losses.md``); this class embeds
    the two text columns, derives ids and weights per batch, and calls it.

    Args:
        model: the SentenceTransformer to train.
        weight_fn: a name of :data:`gcl.losses.WEIGHT_FUNCTIONS` or ``"package.module:function"``.
        weight_params: keyword parameters of the weight function (e.g. ``{"floor": 0.1}``).
        score_range: ``(lowest, highest)`` score of the training table. The weight function runs
            on each batch's judgments; with ``score_range`` two phantom rows holding these scores
            (under fresh query ids) join them, so min-max weights (``linear``, ``power``,
            ``exponential``) equal the whole-table weights ``gcl train`` uses. ``None``: the range
            of the batch. ``reciprocal_rank`` always ranks among the batch's documents of a query.
        temperature, learnable_temperature, symmetric, same_query, same_doc, targets,
            target_temperature: as in :class:`gcl.losses.GCLLoss` (defaults:
            :class:`gcl.training.config.LossConfig`); ``targets="soft"`` gives each query of the
            batch one soft-target distribution over the batch's documents (``docs/losses.md``).
        lambda_weight: ``λ`` of gcl's ΔnDCG-weighted pairwise term (``docs/losses.md``); ``λ > 0``
            needs ``score_range`` (the term's gains are the scores normalised to it).
        cosent_weight: ``μ`` of gcl's cross-query CoSENT term on the batch's positive pairs
            (``docs/losses.md``; 0: off).

    Inputs:

    ================================================ =================================
    texts (columns, in order)                        labels
    ================================================ =================================
    (query, document)                                score ``(B,)``
    (query, document)                                ``[score, query_id]`` ``(B, 2)``
    ================================================ =================================

    Recommended: ``batch_sampler=GCLBatchSampler`` (several graded documents of a query per
    batch), ``same_query="lower"``.

    Example::

        loss = GCLLoss(model, weight_fn="linear", same_query="lower", temperature=0.05, score_range=(1, 3))
        args = SentenceTransformerTrainingArguments(output_dir="out", batch_sampler=GCLBatchSampler)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        weight_fn: str = LossConfig.weight_fn,
        weight_params: dict[str, Any] | None = None,
        score_range: tuple[float, float] | None = None,
        temperature: float = LossConfig.temperature,
        learnable_temperature: bool = LossConfig.learnable_temperature,
        symmetric: bool = LossConfig.symmetric,
        same_query: str = LossConfig.same_query,
        same_doc: str = LossConfig.same_doc,
        targets: str = LossConfig.targets,
        target_temperature: float = LossConfig.target_temperature,
        lambda_weight: float = LossConfig.lambda_weight,
        cosent_weight: float = LossConfig.cosent_weight,
    ) -> None:
        super().__init__()
        self.model = model
        self.weight_fn = weight_fn
        self.weight_params = dict(weight_params or {})
        self._weights = get_weight_fn(weight_fn, **self.weight_params)
        self.score_range = _check_range(score_range)
        # Not named ``loss``: the model card would list an attribute of that name as a second loss.
        self.gcl_loss = _GCLCore(
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            symmetric=symmetric,
            same_query=same_query,
            same_doc=same_doc,
            targets=targets,
            target_temperature=target_temperature,
            lambda_weight=lambda_weight,
            score_range=self.score_range if lambda_weight else None,
            cosent_weight=cosent_weight,
        )

    # ------------------------------------------------------------------ ST interface
    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        features = _two_columns(sentence_features)
        batch = self._batch(features, labels)
        embeddings = [self.model(f)["sentence_embedding"] for f in features]
        return self.compute_loss_from_embeddings(embeddings, batch)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], batch: _Batch) -> Tensor:
        """gcl's loss on ``[query_emb, doc_emb]`` (normalised here) with the batch's weights."""
        q, d = (F.normalize(e, p=2, dim=-1) for e in embeddings)
        weights = self.batch_weights(batch)
        return self.gcl_loss(q, d, weights, query_ids=batch.query_ids, doc_ids=batch.doc_ids, scores=batch.scores)

    def batch_weights(self, batch: _Batch) -> Tensor:
        """``weight_fn`` over the batch's judgments (plus the ``score_range`` phantom rows)."""
        scores = batch.scores.detach().to("cpu", torch.float64).numpy()
        qid = batch.query_ids.cpu().numpy()
        did = batch.doc_ids.cpu().numpy()
        if self.score_range is not None:
            lo, hi = self.score_range
            scores = _clip_to_range(scores, lo, hi)
            qid = np.concatenate([qid, [qid.max() + 1, qid.max() + 2]])
            did = np.concatenate([did, [did.max() + 1, did.max() + 2]])
            scores = np.concatenate([scores, [lo, hi]])
        table = pd.DataFrame({"query_id": qid, "doc_id": did, "score": scores})
        w = self._weights(table)[: len(batch.scores)]
        return torch.as_tensor(w, dtype=torch.float64, device=batch.scores.device)

    def get_config_dict(self) -> dict[str, Any]:
        core = self.gcl_loss
        return {
            "weight_fn": self.weight_fn,
            "weight_params": self.weight_params,
            "score_range": None if self.score_range is None else list(self.score_range),
            "temperature": core.temperature,
            "learnable_temperature": core.logit_scale is not None,
            "symmetric": core.symmetric,
            "same_query": core.same_query,
            "same_doc": core.same_doc,
            "targets": core.targets,
            "target_temperature": core.target_temperature,
            "lambda_weight": core.lambda_weight,
            "cosent_weight": core.cosent_weight,
        }

    @property
    def temperature(self) -> float:
        return self.gcl_loss.temperature

    @property
    def citation(self) -> str:
        return CITATION

    # ------------------------------------------------------------------ helpers
    def _batch(self, features: list[dict[str, Tensor]], labels: Tensor | None) -> _Batch:
        n = _rows(features[0])
        scores, query_ids = _split_labels(labels, n)
        doc_ids = text_ids(features[1])
        if query_ids is None:
            query_ids = text_ids(features[0])
        return _Batch(scores=scores, query_ids=query_ids, doc_ids=doc_ids)


class CachedGCLLoss(CachedLossMixin, GCLLoss):
    """:class:`GCLLoss` with GradCache (Gao et al., 2021): memory of one mini-batch, same gradient.

    sentence-transformers' ``CachedLossMixin`` (the machinery of
    ``CachedMultipleNegativesRankingLoss``): (1) embed every ``mini_batch_size`` rows without a
    graph, saving each mini-batch's RNG state; (2) compute the GCL loss over the whole batch and
    back-propagate it to the embeddings; (3) re-embed each mini-batch with a graph, RNG replayed
    (dropout masks equal), and back-propagate the cached embedding gradients. Every row stays a
    negative for every other; the cost is one extra forward pass without a graph. With dropout off
    the gradient equals :class:`GCLLoss`'s (tested).

    Args: those of :class:`GCLLoss`, plus ``mini_batch_size`` (rows per forward) and
    ``show_progress_bar``.
    """

    def __init__(self, model: nn.Module, *, mini_batch_size: int = 32, show_progress_bar: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if int(mini_batch_size) < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        self.mini_batch_size = int(mini_batch_size)
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        features = _two_columns(sentence_features)
        # The ids come from the token ids, so they are taken before any forward pass; they travel
        # to calculate_loss as its "labels".
        return self.forward_cached(features, self._batch(features, labels))

    def calculate_loss(self, reps: list[list[Tensor]], labels: _Batch | None = None, *,
                       with_backward: bool = False) -> Tensor:
        loss = self.compute_loss_from_embeddings([torch.cat(r) for r in reps], labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "mini_batch_size": self.mini_batch_size}


def text_ids(features: dict[str, Tensor]) -> Tensor:
    """``(B,)`` int64 ids, equal exactly for rows with equal token ids (equal text after truncation)."""
    ids = features.get("input_ids")
    if not isinstance(ids, Tensor) or ids.dim() != 2:
        raise DataError("GCLLoss needs tokenised text columns (features with a 2-D 'input_ids')")
    mask = features.get("attention_mask")
    if isinstance(mask, Tensor) and mask.shape == ids.shape:
        ids = ids.masked_fill(mask == 0, -1)
    return torch.unique(ids, dim=0, return_inverse=True)[1]


def _two_columns(sentence_features: Iterable[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    features = list(sentence_features)
    if len(features) != 2:
        raise DataError(
            f"GCLLoss takes exactly 2 text columns (query, then document) plus the label column "
            f"'score' (or 'label'), got {len(features)} text column(s); a query id must go in 'label' "
            "as [score, query_id], not in a column of its own (check_dataset names the columns)"
        )
    return features


def _rows(features: dict[str, Tensor]) -> int:
    ids = features.get("input_ids")
    return int(ids.shape[0]) if isinstance(ids, Tensor) else len(next(iter(features.values())))


def _split_labels(labels: Tensor | None, n: int) -> tuple[Tensor, Tensor | None]:
    """``(scores, query_ids or None)`` from a ``(B,)`` score or a ``(B, 2)`` [score, query_id] label."""
    if labels is None:
        raise DataError(MISSING_SCORE, field="score")
    if labels.dim() == 1 and labels.shape[0] == n:
        return labels, None
    if labels.dim() == 2 and tuple(labels.shape) == (n, 2):
        ids = labels[:, 1]
        if not bool(torch.equal(ids, ids.round())):
            raise DataError("the query ids (second element of each label) must be integers", field="label")
        return labels[:, 0], ids.long()
    raise DataError(
        f"GCLLoss labels must be one score per row or [score, query_id] pairs; got shape "
        f"{tuple(labels.shape)} for {n} rows", field="label",
    )


def _check_range(score_range: tuple[float, float] | None) -> tuple[float, float] | None:
    if score_range is None:
        return None
    lo, hi = (float(x) for x in score_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"score_range must be finite (lowest, highest) with lowest <= highest, got {score_range}")
    return lo, hi


def _clip_to_range(scores: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Scores clipped into ``[lo, hi]``; beyond float32 rounding of the labels outside is an error."""
    tol = 1e-6 * max(1.0, abs(lo), abs(hi))
    bad = (scores < lo - tol) | (scores > hi + tol)
    if bad.any():
        raise DataError(
            f"score {scores[bad][0]!r} lies outside score_range ({lo:g}, {hi:g}); pass the training "
            "table's lowest and highest score", field="score",
        )
    return np.clip(scores, lo, hi)


# --------------------------------------------------------------------------- frozen lower layers
class _TowerView:
    """What :class:`gcl.training.frozen_cache.FrozenBottom` reads of a model, for a plain
    ``SentenceTransformer`` (a gcl ``BiEncoder`` has it already)."""

    def __init__(self, tower: nn.Module) -> None:
        self.tower = tower

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    def parameters(self):
        return self.tower.parameters()


def freeze_lower_layers(model, n_layers: int, *, cache: bool = True, store=None,
                        max_memory_bytes: int | None = None):
    """Freeze the embeddings and the lower ``n_layers`` transformer layers of ``model`` and train the rest.

    ``model``: a ``SentenceTransformer`` whose first module wraps a BERT-like encoder (or a gcl
    ``BiEncoder``). The frozen part ``B`` gets ``requires_grad=False`` and stays in eval mode (no
    dropout) even when the trainer calls ``model.train()``, the split of ``gcl train``'s
    ``model.freeze_layers``. With ``cache`` (gcl's ``model.cache_frozen``) the encoder's forward is
    replaced by :class:`gcl.training.frozen_reuse.CachedBottomForward`: ``B(x)`` is computed once
    per distinct text (kept in memory; ``store``, a :class:`gcl.hidden_store.HiddenStore` of ``B``'s
    fingerprint, shares it across runs; ``max_memory_bytes`` caps the memory, default
    :data:`gcl.training.frozen_reuse.MAX_MEMORY_BYTES`) and a step runs only the top layers, with the same loss and
    gradient as without the cache (up to float rounding). Returns ``(frozen, forward)``: the
    :class:`~gcl.training.frozen_cache.FrozenBottom` and the installed forward (``None`` without
    ``cache``); ``forward.uninstall()`` restores the encoder's own.

    Example::

        model = SentenceTransformer("all-MiniLM-L6-v2")
        freeze_lower_layers(model, 4)      # MiniLM: train layers 4-5, cache the outputs of 0-3
        trainer = SentenceTransformerTrainer(model=model, ...)
    """
    import types

    from gcl.training.frozen_cache import FrozenBottom
    from gcl.training.frozen_reuse import MAX_MEMORY_BYTES, CachedBottomForward

    view = model if hasattr(model, "tower") else _TowerView(model)
    frozen = FrozenBottom(view, n_layers)  # requires_grad False, eval mode; a ConfigError for a bad depth
    for module in frozen.bottom.modules():
        module.train = types.MethodType(_stay_in_eval, module)
    frozen.bottom.eval()
    limit = MAX_MEMORY_BYTES if max_memory_bytes is None else max_memory_bytes
    forward = CachedBottomForward(frozen, store=store, max_memory_bytes=limit).install() if cache else None
    return frozen, forward


def _stay_in_eval(self, mode: bool = True):
    return nn.Module.train(self, False)
