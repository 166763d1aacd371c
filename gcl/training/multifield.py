"""Training inputs and loss of multi-field models (text and image fields on both sides).

:class:`FieldInputs` holds, for every field of a side, what the trainer needs to embed a batch of
unique queries or documents (given as integer codes):

* text fields -- a :class:`~gcl.training.batching.TokenCache` (pre-tokenised, padded per batch)
  with the field's tower tokenizer; present = non-empty text;
* image fields of a **frozen** tower -- the backbone's features of every image, computed once
  (DataLoader workers, optional on-disk :class:`~gcl.data.images.EmbeddingCache`); a step only
  runs the trainable projection on them;
* image fields of a **trained** tower -- an :class:`~gcl.data.images.ImageDataset`; each step
  decodes the batch's images with DataLoader workers and runs the whole tower.

Missing or corrupt images are counted (``stats``), warned about once, and are absent fields
(fusion weight 0). :func:`multi_field_loss` is the loss on fused embeddings plus optional
per-field-pair terms (equations in its docstring and in docs/multimodal.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from gcl.errors import DataError
from gcl.data.images import ImageDataset, ImageStats
from gcl.encoders.config import FieldConfig
from gcl.encoders.multifield import MultiFieldModel
from gcl.training.batching import TokenCache


@dataclass
class _TextInput:
    tokens: TokenCache  # or any object with collate(codes) -> tower features
    present: torch.Tensor  # (n,) bool


@dataclass
class _ImageInput:
    present: torch.Tensor  # (n,) bool; for trained towers: False until a step finds the image missing
    features: torch.Tensor | None = None  # (n, F) frozen backbone features (zero rows where absent)
    dataset: ImageDataset | None = None  # trained towers: decoded per step


class FieldInputs:
    """Per-field inputs of one side's unique items (queries or documents) in code order."""

    def __init__(self, model: MultiFieldModel, table: pd.DataFrame, fields: Sequence[FieldConfig], *,
                 root: Path | None, workers: int = 0, image_batch_size: int = 32, source: str = "training data") -> None:
        self.model = model
        self.fields = list(fields)
        self.workers = workers
        self.stats = ImageStats()
        self._warned = False
        self.inputs: list[_TextInput | _ImageInput] = []
        missing = [f.name for f in self.fields if f.name not in table.columns]
        if missing:
            raise DataError(f"the model's field(s) {missing} are not in the data (columns {list(table.columns)})",
                            source=source)
        for f in self.fields:
            values = table[f.name].tolist()
            tower = model.tower(f)
            if model.field_kind(f) == "text":
                texts = ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
                self.inputs.append(_TextInput(tower.make_token_cache(texts),
                                              torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool)))
            elif tower.image_frozen:
                enc = model.image_features(f, values, root=root, batch_size=image_batch_size, warn=False)
                self._count(enc.stats)
                self.inputs.append(_ImageInput(torch.from_numpy(enc.present), features=torch.from_numpy(enc.embeddings)))
            else:
                ds = ImageDataset(values, root=root, spec=tower.preprocess_spec)
                self.inputs.append(_ImageInput(torch.ones(len(values), dtype=torch.bool), dataset=ds))
        self.warn(source)

    def _count(self, stats: ImageStats) -> None:
        for name in ("loaded", "empty", "missing", "corrupt", "cached"):
            setattr(self.stats, name, getattr(self.stats, name) + getattr(stats, name))
        self.stats.examples.extend(stats.examples[: max(0, ImageStats.MAX_EXAMPLES - len(self.stats.examples))])

    def warn(self, source: str) -> None:
        if not self._warned and self.stats.warn(source, stacklevel=3):
            self._warned = True

    def _load_images(self, inp: _ImageInput, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the images of ``codes`` with DataLoader workers: (pixels of present, present)."""
        uniq, inverse = np.unique(codes, return_inverse=True)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(inp.dataset, uniq.tolist()), batch_size=len(uniq),
                                             num_workers=self.workers, collate_fn=inp.dataset.collate)
        batch = next(iter(loader))
        stats = ImageStats()
        for r, s, m in zip(batch.rows.tolist(), batch.status.tolist(), batch.messages):
            stats.add(s, r, m)
        self._count(stats)
        self.warn("training images")
        inp.present[torch.as_tensor(uniq)] = batch.present
        # rows of the batch in ``codes`` order: position of each code's pixels among the present ones
        slot = torch.full((len(uniq),), -1, dtype=torch.long)
        slot[batch.present] = torch.arange(int(batch.present.sum()))
        return batch.pixels, slot[torch.as_tensor(inverse)]

    def embed(self, codes: np.ndarray, autocast) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Field embeddings (len(codes), dim) each (zero rows where absent, graph where trainable)
        and presence masks, for the items ``codes``."""
        device = self.model.device
        embs, present = [], []
        idx = torch.as_tensor(codes)
        for f, inp in zip(self.fields, self.inputs):
            tower = self.model.tower(f)
            if isinstance(inp, _TextInput):
                with autocast():
                    e = tower.embed_text(inp.tokens.collate(codes)).float()
                p = inp.present[idx]
            elif inp.features is not None:
                p = inp.present[idx]
                with autocast():
                    e = tower.project_image(inp.features[idx].to(device)).float()
            else:
                pixels, slot = self._load_images(inp, codes)
                p = slot >= 0
                with autocast():
                    got = tower.embed_image(pixels.to(device)).float()
                e = got.new_zeros((len(codes), got.shape[1]))
                if len(got):
                    e = got[slot.clamp_min(0).to(device)]
            e = e * p.to(device=device, dtype=e.dtype)[:, None]  # absent -> the zero vector (no gradient)
            embs.append(e)
            present.append(p)
        return embs, present


def multi_field_loss(loss_fn, q_fused: torch.Tensor, d_fused: torch.Tensor, weights: torch.Tensor, *,
                     fused_weight: float = 1.0,
                     field_terms: Sequence[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]] = (),
                     **meta) -> torch.Tensor:
    r"""Loss of a multi-field model on one batch.

    .. math::

        L = \lambda_0 \, \mathrm{GCL}(\hat q, \hat d; w)
            + \sum_t \lambda_t \, \mathrm{GCL}(q^{(a_t)}, d^{(b_t)}; w \odot p^{(a_t)} \odot p^{(b_t)})

    ``q_fused`` / ``d_fused`` are the fused side embeddings, ``weights`` the pairs' GCL weights
    ``w``. Each field term ``(lambda_t, q_field, d_field, present)`` compares the field embeddings
    of query field ``a_t`` and document field ``b_t`` (zero vectors where a field is absent;
    ``present = p^(a_t) * p^(b_t)``): a pair missing either field has no term of its own (weight
    0) and its zero vector scores 0 against every other row. A term whose weights are all 0 is
    skipped. ``meta`` (ids, scores, hard negatives) goes to every term, except hard negatives,
    which are fused document embeddings and are used by the fused term only.
    """
    total = fused_weight * loss_fn(q_fused, d_fused, weights, **meta) if fused_weight > 0 else q_fused.new_zeros(())
    plain = {k: v for k, v in meta.items() if not k.startswith("hard_neg")}
    for lam, q_f, d_f, present in field_terms:
        w = weights.to(q_f.dtype) * present.to(device=weights.device, dtype=q_f.dtype)
        if lam > 0 and float(w.sum()) > 0:
            total = total + lam * loss_fn(q_f, d_f, w, **plain)
    return total
