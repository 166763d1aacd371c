"""The multi-field model: named text and image fields on both sides, per-field towers, fusion.

A :class:`MultiFieldConfig` names the towers (:class:`~gcl.encoders.towers.TowerConfig`) and,
for each side (query, document), a list of fields -- ``(name, tower, kind, weight)``. Fields
that name the same tower share it (``query`` and ``title`` through one text tower); a field
naming its own tower has separate weights. Every tower ends in the shared dimension ``dim``.

For an item with fields ``j`` (embeddings ``e_j``, weights ``w_j``, presence ``p_j``: non-empty
text, an image that loaded) the side's embedding is the one fusion rule of :mod:`gcl.fusion`::

    e = normalise( sum_j w'_j * normalise(e_j) ),   w'_j = w_j p_j / sum_k w_k p_k

computed by :meth:`MultiFieldModel.fuse_side` in training (with gradients), in
:meth:`encode_queries` / :meth:`encode_documents` (evaluation, indexing, serving) alike.

``save(dir)`` writes ``gcl_model.json`` (``"format": "multifield"``, the config, ``dim``) and
``towers/<name>/`` per tower (safetensors weights + ``tower.json``); :meth:`MultiFieldModel.load`
(and :func:`gcl.encoders.base.load_model`, which dispatches on the format) rebuilds it with no
hub access. The model implements :class:`gcl.encoders.base.EmbeddingModel`; ``encode_images``
(image queries) runs the first image document field's tower.

Image fields hold paths relative to an image root, or bytes. The root used when encoding is,
first, ``documents.attrs["image_root"]``, then ``$GCL_IMAGE_ROOT``, then ``config.image_root``
(the trainer records the absolute root of its training data there).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gcl.atomic import write_atomic
from gcl.encoders.base import MODEL_CONFIG_FILE, FieldKind, Side, decode_images, read_model_config, state_fingerprint
from gcl.encoders.config import FieldConfig, MultiFieldConfig
from gcl.encoders.tower_factory import build_tower, load_tower, save_tower
from gcl.encoders.towers import Tower
from gcl.errors import ConfigError
from gcl.fusion import fuse

FORMAT = "multifield"


def _side_weights(fields: Sequence[FieldConfig]) -> list[float]:
    return [float(f.weight) for f in fields]


class _ImageFeatures(nn.Module):
    """Adapter for :func:`gcl.data.images.encode_images`: pixels -> a tower's image features."""

    def __init__(self, tower: Tower) -> None:
        super().__init__()
        self.tower = tower
        self.preprocess_spec = tower.preprocess_spec
        self.out_dim = int(tower.image_feature_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tower.image_features(pixels)


class MultiFieldModel(nn.Module):
    """Per-field towers + per-side fusion; ``encode_queries`` / ``encode_documents`` on DataFrames."""

    def __init__(self, config: MultiFieldConfig | None = None, *, device: str = "cpu",
                 towers: dict[str, Tower] | None = None) -> None:
        super().__init__()
        self.config = config = config or MultiFieldConfig()
        self._check_config()
        built: dict[str, Tower] = dict(towers or {})
        dim = config.dim
        # text towers first: without an explicit dim the first one decides it
        rank = {"text": 0, "hf_clip": 1, "open_clip": 1, "efficientnet": 2}
        order = sorted(config.towers, key=lambda n: rank[config.towers[n].type])
        for name in order:
            if name not in built:
                built[name] = build_tower(config.towers[name], dim, device=device)
            dim = built[name].dim if dim is None else dim
            if built[name].dim != dim:
                raise ConfigError(f"tower {name!r} makes {built[name].dim}-d vectors, the model {dim}-d")
        self.towers = nn.ModuleDict({n: built[n] for n in config.towers})
        self._dim = int(dim)
        for f in config.fields():
            kind = self.field_kind(f)
            if kind not in self.towers[f.tower].modalities:
                raise ConfigError(f"field {f.name!r}: tower {f.tower!r} does not encode {kind}")
        self.image_cache_dir: str | None = None  # optional: EmbeddingCache of frozen image features
        self._source: str | None = None  # the directory it was loaded from
        self.image_workers = 0  # DataLoader workers when encoding images

    def _check_config(self) -> None:
        cfg = self.config
        if not cfg.towers:
            raise ConfigError("a multi-field model needs at least one tower")
        for side, fields in (("query", cfg.query_fields), ("document", cfg.doc_fields)):
            if not fields:
                raise ConfigError(f"the {side} side needs at least one field")
            names = [f.name for f in fields]
            if len(set(names)) != len(names):
                raise ConfigError(f"duplicate {side} field names: {names}")
            for f in fields:
                if f.tower not in cfg.towers:
                    raise ConfigError(f"{side} field {f.name!r} names tower {f.tower!r}; towers: {sorted(cfg.towers)}")
                if not (f.weight >= 0):
                    raise ConfigError(f"{side} field {f.name!r}: weight must be >= 0, got {f.weight}")
            if sum(f.weight for f in fields) <= 0:
                raise ConfigError(f"the {side} field weights sum to 0")
            for f in fields:
                cfg.kind_of(f)  # a CLIP tower's field must say text or image

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def query_fields(self) -> list[FieldConfig]:
        return self.config.query_fields

    @property
    def doc_fields(self) -> list[FieldConfig]:
        return self.config.doc_fields

    def field_kind(self, f: FieldConfig) -> str:
        return self.config.kind_of(f)

    def tower(self, f: FieldConfig) -> Tower:
        return self.towers[f.tower]

    # ------------------------------------------------------------------ the EmbeddingModel protocol
    @property
    def query_field_names(self) -> list[str]:
        return [f.name for f in self.query_fields]

    @property
    def doc_field_names(self) -> list[str]:
        return [f.name for f in self.doc_fields]

    def field_kinds(self, side: Side) -> dict[str, FieldKind]:
        return {f.name: self.field_kind(f) for f in (self.query_fields if side == "query" else self.doc_fields)}

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def image_search(self) -> bool:
        return any(self.field_kind(f) == "image" for f in self.doc_fields)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[bytes]) -> np.ndarray:
        """(n, dim) embeddings of raw images through the first image document field's tower."""
        field = next((f for f in self.doc_fields if self.field_kind(f) == "image"), None)
        if field is None:
            raise ConfigError(f"model {self.source} has no image document field; it cannot encode images")
        tower = self.tower(field)
        was = tower.training
        tower.eval()
        try:
            pixels = decode_images(images, tower.preprocess_spec)
            return tower.embed_image(pixels.to(self.device)).float().cpu().numpy()
        finally:
            tower.train(was)

    def fingerprint(self) -> str:
        """sha1 of the config (towers, fields, weights, dim) and every weight of every tower."""
        cfg = dataclasses.asdict(self.config)
        cfg.pop("image_root", None)  # where images are read from is not part of the model
        return state_fingerprint(self, json.dumps({**cfg, "dim": self.dim}, sort_keys=True))

    # ------------------------------------------------------------------ fusion (training and inference)
    def fuse_side(self, side: Literal["query", "doc"], embs: Sequence[torch.Tensor],
                  present: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fuse a side's field embeddings (in field order) with presence masks: see the module doc."""
        fields = self.query_fields if side == "query" else self.doc_fields
        return fuse(list(embs), _side_weights(fields), [p.to(embs[0].device) for p in present])

    # ------------------------------------------------------------------ inference
    def image_root(self, table: pd.DataFrame | None = None) -> Path | None:
        root = (table.attrs.get("image_root") if table is not None else None) or os.environ.get("GCL_IMAGE_ROOT") \
            or self.config.image_root
        return Path(root) if root else None

    @torch.inference_mode()
    def encode_text_field(self, f: FieldConfig, texts: Sequence[str], *, batch_size: int = 256,
                          show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float32 embeddings of one text field and (n,) presence (non-empty text)."""
        tower = self.tower(f)
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        was = tower.training
        tower.eval()
        try:
            for s in range(0, len(texts), batch_size):
                chunk = texts[s : s + batch_size]
                out[s : s + len(chunk)] = tower.embed_text(tower.tokenize(chunk)).float().cpu().numpy()
        finally:
            tower.train(was)
        return out, np.array([bool(t.strip()) for t in texts], dtype=bool)

    def image_feature_cache(self, tower: Tower):
        if not (self.image_cache_dir and tower.image_frozen):
            return None
        from gcl.data.images import EmbeddingCache

        return EmbeddingCache.open_or_warn(self.image_cache_dir, namespace=tower.backbone_fingerprint())

    @torch.inference_mode()
    def image_features(self, f: FieldConfig, values: Sequence, *, root: Path | None, batch_size: int = 32,
                       warn: bool = True):
        """Backbone features of one image field: :class:`gcl.data.images.EncodedImages` (features)."""
        from gcl.data.images import encode_images

        tower = self.tower(f)
        return encode_images(_ImageFeatures(tower), list(values), root=root, batch_size=batch_size,
                             num_workers=self.image_workers, cache=self.image_feature_cache(tower), warn=warn)

    @torch.inference_mode()
    def encode_image_field(self, f: FieldConfig, values: Sequence, *, root: Path | None,
                           batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float32 embeddings of one image field (zero rows where absent) and presence."""
        tower = self.tower(f)
        enc = self.image_features(f, values, root=root, batch_size=batch_size)
        out = np.zeros((len(values), self.dim), dtype=np.float32)
        if enc.present.any():
            was = tower.training
            tower.eval()
            try:
                feats = torch.from_numpy(enc.embeddings[enc.present]).to(self.device)
                out[enc.present] = tower.project_image(feats).float().cpu().numpy()
            finally:
                tower.train(was)
        return out, enc.present

    def encode_fields(self, table: pd.DataFrame, fields: Sequence[FieldConfig], *, batch_size: int = 256,
                      show_progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
        missing = [f.name for f in fields if f.name not in table.columns]
        if missing:
            names = ",".join(f.name for f in fields)
            raise ConfigError(f"model expects field(s) {missing}, data has {list(table.columns)} "
                              f"(gcl evaluate / index: pass --doc-fields {names})")
        embs, present = [], []
        for f in fields:
            values = table[f.name].tolist()
            if self.field_kind(f) == "text":
                e, p = self.encode_text_field(f, [("" if v is None or v != v else v) for v in values],
                                              batch_size=batch_size, show_progress=show_progress)
            else:
                e, p = self.encode_image_field(f, values, root=self.image_root(table), batch_size=min(batch_size, 64))
            embs.append(e)
            present.append(p)
        return embs, present

    def _encode_side(self, table: pd.DataFrame, side: Literal["query", "doc"], batch_size: int,
                     show_progress: bool) -> np.ndarray:
        fields = self.query_fields if side == "query" else self.doc_fields
        embs, present = self.encode_fields(table, fields, batch_size=batch_size, show_progress=show_progress)
        fused = self.fuse_side(side, [torch.from_numpy(e) for e in embs], [torch.from_numpy(p) for p in present])
        return fused.numpy().astype(np.float32, copy=False)

    def encode_queries(self, queries: pd.DataFrame, *, batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        """(n, dim) fused, L2-normalised query embeddings (zero rows where no field is present)."""
        return self._encode_side(queries, "query", batch_size, show_progress)

    def encode_documents(self, documents: pd.DataFrame, *, batch_size: int = 256,
                         show_progress: bool = False) -> np.ndarray:
        """(n, dim) fused, L2-normalised document embeddings (zero rows where no field is present)."""
        return self._encode_side(documents, "doc", batch_size, show_progress)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, tower in self.towers.items():
            save_tower(tower, path / "towers" / name)
        cfg = dataclasses.asdict(self.config)  # tower sources are kept for the record; weights load from towers/
        cfg["dim"] = self.dim
        text = json.dumps({"format": FORMAT, "version": 1, "config": cfg}, indent=2)
        write_atomic(path / MODEL_CONFIG_FILE, lambda fh: fh.write(text.encode()))
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> "MultiFieldModel":
        from gcl.config import from_dict

        path = Path(path)
        raw = read_model_config(path)
        if raw is None:
            raise ConfigError(f"{path} is not a saved gcl model (no {MODEL_CONFIG_FILE})")
        if raw.get("format") != FORMAT or not isinstance(raw.get("config"), dict):
            raise ConfigError(f"{path / MODEL_CONFIG_FILE} is not a multi-field model")
        config = from_dict(MultiFieldConfig, raw["config"])
        towers = {name: load_tower(path / "towers" / name, config.dim, device=device) for name in config.towers}
        model = cls(config, device=device, towers=towers)
        model._source = str(path)
        return model
