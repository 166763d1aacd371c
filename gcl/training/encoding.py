"""How the trainer encodes a batch, per model kind: one strategy object instead of branches.

The trainer's micro-step is the same for every model (:meth:`gcl.training.trainer.Trainer._micro_step`):
shared inputs (ids, scores, weights, fixed negatives), then the strategy's :meth:`step`, which
embeds this process's slice of the batch, gathers it, computes the loss and back-propagates.

* :class:`TextEncoding` -- a :class:`~gcl.encoders.model.BiEncoder`: the pairs' texts are
  tokenised once (:class:`~gcl.training.batching.TokenCache`); a step encodes with
  length-bucketed padding, or with GradCache (``batch.grad_cache_chunk``);
* :class:`FieldEncoding` -- a :class:`~gcl.encoders.multifield.MultiFieldModel`: per-field inputs
  (:class:`~gcl.training.multifield.FieldInputs`), fused sides, plus optional per-field-pair loss
  terms (:func:`~gcl.training.multifield.multi_field_loss`).

A strategy also says which data to read (:meth:`data_config`), builds a fresh model
(:meth:`build_model`), prepares the training pairs (:meth:`prepare`) and embeds fixed
negatives (:meth:`fixed_documents`). ``code_tables`` are the training queries and documents in
code order for the negative miner (empty: the miner reads the pairs' texts).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gcl.errors import ConfigError
from gcl.training import distributed as D
from gcl.training.batching import TokenCache, TrainPairs

if TYPE_CHECKING:  # pragma: no cover
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer


class TextEncoding:
    """A text bi-encoder (the ``model:`` spec without ``multifield``)."""

    def __init__(self, cfg: "TrainConfig") -> None:
        self.cfg = cfg
        self.code_tables: dict = {}
        self.q_tokens: TokenCache | None = None  # or HiddenCache (model.cache_frozen)
        self.d_tokens: TokenCache | None = None
        self.frozen = None  # FrozenBottom (model.freeze_layers)

    def data_config(self):
        return self.cfg.data

    def build_model(self, device: str):
        from gcl.encoders.config import BiEncoderConfig
        from gcl.encoders.model import BiEncoder

        spec = BiEncoderConfig(**{f.name: getattr(self.cfg.model, f.name) for f in dataclasses.fields(BiEncoderConfig)})
        return BiEncoder(spec, device=device)

    def prepare(self, model, train, weights) -> TrainPairs:
        mc = self.cfg.model
        pairs = TrainPairs.from_dataset(train, weights, query_field=mc.query_fields[0], doc_field=mc.doc_fields[0])
        tok = model.tower.tokenizer
        limit = mc.max_seq_length or model.tower.max_seq_length  # None: the tower's own
        self.q_tokens = TokenCache(tok, pairs.query_texts, limit)
        self.d_tokens = TokenCache(tok, pairs.doc_texts, limit)
        if mc.freeze_layers:
            self._freeze(model)
        return pairs

    def _freeze(self, model) -> None:
        """Freeze embeddings + the lower ``freeze_layers`` layers; with ``cache_frozen`` replace the
        token caches by their frozen layers' outputs (:mod:`gcl.training.frozen_cache`)."""
        from gcl.training.frozen_cache import CACHE_DTYPES, FrozenBottom, HiddenCache

        from gcl.embedding_cache import default_cache_dir
        from gcl.training.frozen_reuse import CachedBottomEncoder

        mc = self.cfg.model
        self.frozen = FrozenBottom(model, mc.freeze_layers)
        # dev evaluation (and the saved model, gcl_frozen.json) encode through the stored outputs of B
        model.cached_bottom = CachedBottomEncoder(model, mc.freeze_layers,
                                                  cache_dir=default_cache_dir() if mc.persist_frozen else None)
        if mc.cache_frozen:
            dtype, store = CACHE_DTYPES[mc.cache_dtype], model.cached_bottom.store()
            self.q_tokens = HiddenCache.build(self.frozen, self.q_tokens, dtype=dtype, store=store)
            self.d_tokens = HiddenCache.build(self.frozen, self.d_tokens, dtype=dtype, store=store)

    def train_mode(self, model) -> None:
        """``model.train()``, frozen layers kept in eval mode (no dropout: a fixed function)."""
        model.train()
        if self.frozen is not None:
            self.frozen.eval_frozen()

    def fixed_documents(self, tr: "Trainer", codes: np.ndarray) -> torch.Tensor:
        return tr.encode_tokens(self.d_tokens, codes)

    def step(self, tr: "Trainer", rows: np.ndarray, local: np.ndarray, weights: torch.Tensor, meta: dict,
             loss_scale: float) -> float:
        q_codes, d_codes = tr.pairs.query_code[local], tr.pairs.doc_code[local]
        if self.cfg.batch.grad_cache_chunk:
            q_emb, q_plan = tr.embed_with_grad_cache(self.q_tokens, q_codes)
            d_emb, d_plan = tr.embed_with_grad_cache(self.d_tokens, d_codes)
            q_all = D.gather_rows(q_emb, tr.dist).requires_grad_(True)
            d_all = D.gather_rows(d_emb, tr.dist).requires_grad_(True)
            loss = tr.loss_fn(q_all, d_all, weights, **meta)
            (loss * loss_scale).backward()
            sl = tr.dist.rows(len(rows))
            tr.replay_grad_cache(self.q_tokens, q_codes, q_plan, q_all.grad[sl])
            tr.replay_grad_cache(self.d_tokens, d_codes, d_plan, d_all.grad[sl])
        else:
            q_all = D.gather_rows(tr.encode_bucketed(self.q_tokens, q_codes), tr.dist)
            d_all = D.gather_rows(tr.encode_bucketed(self.d_tokens, d_codes), tr.dist)
            loss = tr.loss_fn(q_all, d_all, weights, **meta)
            (loss * loss_scale).backward()
        return float(loss.detach())


class FieldEncoding:
    """A multi-field model (``model.multifield``): text and image fields, fused per side."""

    def __init__(self, cfg: "TrainConfig") -> None:
        if cfg.batch.grad_cache_chunk:
            raise ConfigError("batch.grad_cache_chunk is not supported with multi-field models yet")
        if cfg.model.freeze_layers:
            raise ConfigError("model.freeze_layers is not supported with multi-field models yet")
        self.cfg = cfg
        self.code_tables: dict = {}
        self.q_inputs = None
        self.d_inputs = None

    def data_config(self):
        """``cfg.data`` with the model's document fields typed text/image."""
        from gcl.data.schema import Field, FieldKind

        mf, data = self.cfg.model.multifield, self.cfg.data
        fields = [Field(f.name, FieldKind(mf.kind_of(f))) for f in mf.doc_fields]
        names = {f.name for f in fields}
        extra = [f for f in data.doc_fields if (f if isinstance(f, str) else f.name) not in names]
        return dataclasses.replace(data, doc_fields=fields + extra)

    def image_root(self) -> str | None:
        """``images.root``, else the data source's directory (a Marqo-GS directory, a file's folder)."""
        if self.cfg.images.root:
            return str(Path(self.cfg.images.root).resolve())
        src = Path(self.cfg.data.source)
        if self.cfg.data.source in ("homedepot", "synthetic") or not src.exists():
            return None
        return str((src if src.is_dir() else src.parent).resolve())

    def build_model(self, device: str):
        from gcl.encoders.multifield import MultiFieldModel

        mf = self.cfg.model.multifield
        if mf.image_root is None:
            mf = dataclasses.replace(mf, image_root=self.image_root())
        return MultiFieldModel(mf, device=device)

    def prepare(self, model, train, weights) -> TrainPairs:
        import pandas as pd

        from gcl.data.schema import DOC_ID, QUERY_ID
        from gcl.training.multifield import FieldInputs

        cfg = self.cfg
        q_names, d_names = model.query_field_names, model.doc_field_names
        for pair in cfg.loss.field_pairs:
            if pair.query not in q_names or pair.doc not in d_names:
                raise ConfigError(f"loss.field_pairs: ({pair.query!r}, {pair.doc!r}) is not (query field, document "
                                  f"field) of the model; query fields {q_names}, document fields {d_names}")
        if model.config.image_root is None:
            model.config.image_root = self.image_root()
        model.image_workers = cfg.images.workers
        model.image_cache_dir = cfg.images.cache_dir
        q_text = [n for n, k in model.field_kinds("query").items() if k == "text"]
        d_text = [n for n, k in model.field_kinds("doc").items() if k == "text"]
        pairs = TrainPairs.from_dataset(train, weights, query_field=(q_text or q_names)[0],
                                        doc_field=(d_text or d_names)[0])
        _, q_uniques = pd.factorize(train.judgments[QUERY_ID])  # the order of pairs.query_code
        _, d_uniques = pd.factorize(train.judgments[DOC_ID])
        queries, documents = train.queries.loc[q_uniques], train.documents.loc[d_uniques]
        self.code_tables = dict(queries=queries, documents=documents)
        kw = dict(root=model.image_root(), workers=cfg.images.workers, image_batch_size=cfg.images.batch_size)
        self.q_inputs = FieldInputs(model, queries, model.query_fields, source="training queries", **kw)
        self.d_inputs = FieldInputs(model, documents, model.doc_fields, source="training documents", **kw)
        return pairs

    def train_mode(self, model) -> None:
        model.train()

    def fixed_documents(self, tr: "Trainer", codes: np.ndarray) -> torch.Tensor:
        return tr.model.fuse_side("doc", *self.d_inputs.embed(codes, tr.autocast))

    def step(self, tr: "Trainer", rows: np.ndarray, local: np.ndarray, weights: torch.Tensor, meta: dict,
             loss_scale: float) -> float:
        """Fused loss + per-field-pair terms (:func:`gcl.training.multifield.multi_field_loss`)."""
        from gcl.training.multifield import multi_field_loss

        p, model, lc, dist = tr.pairs, tr.model, self.cfg.loss, tr.dist
        q_embs, q_present = self.q_inputs.embed(p.query_code[local], tr.autocast)
        d_embs, d_present = self.d_inputs.embed(p.doc_code[local], tr.autocast)
        q_all = D.gather_rows(model.fuse_side("query", q_embs, q_present), dist)
        d_all = D.gather_rows(model.fuse_side("doc", d_embs, d_present), dist)
        q_names, d_names = model.query_field_names, model.doc_field_names
        terms = []
        for pair in lc.field_pairs:
            a, b = q_names.index(pair.query), d_names.index(pair.doc)
            both = (q_present[a] & d_present[b]).float()
            terms.append((pair.weight, D.gather_rows(q_embs[a], dist), D.gather_rows(d_embs[b], dist),
                          D.gather_rows(both.to(model.device), dist).cpu()))
        loss = multi_field_loss(tr.loss_fn, q_all, d_all, weights, fused_weight=lc.fused_weight,
                                field_terms=terms, **meta)
        (loss * loss_scale).backward()
        return float(loss.detach())
