"""The bi-encoder: one text tower shared by queries and documents, with weighted field fusion.

``BiEncoder`` is what the trainer optimises, what the evaluator encodes with and what is saved.
A saved model is a sentence-transformers directory (``SentenceTransformer(path)`` loads it
unchanged, weights in safetensors) plus ``gcl_model.json`` with the field lists and fusion
weights. It implements :class:`gcl.encoders.base.EmbeddingModel` with text fields only (the
one-field ``query`` / ``title`` model is the default); load any saved model with
:func:`gcl.encoders.base.load_model`.

An image tower saved beside it (``image_tower.json``, :class:`gcl.encoders.image.ImageTower`, as
older versions of the service read it) is loaded with it and gives it ``encode_images``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from gcl.atomic import write_atomic

from gcl.encoders.base import MODEL_CONFIG_FILE, TextFieldsModel, decode_images, read_model_config, state_fingerprint
from gcl.encoders.config import BiEncoderConfig
from gcl.encoders.text import load_sentence_transformer
from gcl.errors import ConfigError
from gcl.fusion import field_weights


class BiEncoder(TextFieldsModel, nn.Module):
    """Shared text tower + per-side field fusion. ``forward`` returns fused, L2-normalised embeddings."""

    def __init__(self, config: BiEncoderConfig | None = None, *, device: str = "cpu", tower=None,
                 image_tower=None) -> None:
        super().__init__()
        self.config = config or BiEncoderConfig()
        self.tower = tower if tower is not None else load_sentence_transformer(self.config.text_model, device=device)
        self.image_tower = image_tower  # optional ImageTower: image queries in the same space
        # optional CachedBottomEncoder (gcl.training.frozen_reuse): lower layers frozen in training,
        # texts encoded through their stored outputs (set by the trainer, or at load from gcl_frozen.json)
        self.cached_bottom = None
        if self.config.max_seq_length:
            self.tower.max_seq_length = self.config.max_seq_length
        self._q_weights = field_weights(self.config.query_fields, self.config.query_field_weights or None)
        self._d_weights = field_weights(self.config.doc_fields, self.config.doc_field_weights or None)

    @property
    def dim(self) -> int:
        getter = getattr(self.tower, "get_embedding_dimension", None) or self.tower.get_sentence_embedding_dimension
        return int(getter())

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    # ------------------------------------------------------------------ the EmbeddingModel protocol
    # (field names, kinds, encode_queries / encode_documents: TextFieldsModel)
    @property
    def source(self) -> str | None:
        return self.config.text_model

    @property
    def image_search(self) -> bool:
        return self.image_tower is not None

    @torch.inference_mode()
    def encode_images(self, images: Sequence[bytes]) -> np.ndarray:
        """(n, d) embeddings of raw images through the image tower saved beside the model."""
        if self.image_tower is None:
            raise ConfigError(f"model {self.source} has no image tower; it cannot encode images")
        if int(self.image_tower.out_dim) != self.dim:
            raise ConfigError(f"the image tower of {self.source} makes {self.image_tower.out_dim}-d vectors, "
                              f"the text tower {self.dim}-d")
        self.image_tower.eval()
        pixels = decode_images(images, self.image_tower.preprocess_spec)
        return self.image_tower(pixels.to(self.image_tower.device)).cpu().numpy().astype(np.float32)

    def fingerprint(self) -> str:
        """sha1 of the config (field lists, weights, token limit) and every weight of the model."""
        cfg = {k: v for k, v in asdict(self.config).items() if k != "text_model"}
        return state_fingerprint(self, json.dumps(cfg, sort_keys=True))

    # ------------------------------------------------------------------ training path (grads)
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        prep = getattr(self.tower, "preprocess", None) or self.tower.tokenize
        return prep(list(texts))

    def embed_tokens(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tower forward on tokenised features -> (n, d) L2-normalised embeddings (with grads)."""
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        out = self.tower(features)["sentence_embedding"]
        return torch.nn.functional.normalize(out, dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed_tokens(self.tokenize(texts))

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed_texts(texts)

    # ------------------------------------------------------------------ inference path
    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        """(n, d) float32, L2-normalised. Empty strings are encoded too; fusion decides their weight."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.cached_bottom is not None:
            return self.cached_bottom.encode_texts(texts, batch_size=batch_size)
        emb = self.tower.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return emb.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tower.save(str(path), safe_serialization=True)
        if self.image_tower is not None:
            self.image_tower.save(path)
        cfg = asdict(self.config)
        cfg["text_model"] = "."  # the tower now lives in this directory
        write_atomic(path / MODEL_CONFIG_FILE, lambda fh: fh.write(json.dumps(cfg, indent=2).encode()))
        if self.cached_bottom is not None:
            from gcl.training.frozen_reuse import write_record

            write_record(self, path)
        return path

    @classmethod
    def load(cls, path_or_name: str | Path, *, device: str = "cpu") -> "BiEncoder":
        """Load a saved bi-encoder, or wrap any sentence-transformers model by name/path.

        A multi-field model's directory is refused: :func:`gcl.encoders.base.load_model` loads
        either kind.
        """
        p = Path(path_or_name)
        raw = read_model_config(p)
        if raw is None:
            return cls(BiEncoderConfig(text_model=str(path_or_name)), device=device)
        if raw.get("format") is not None:
            raise ConfigError(f"{p / MODEL_CONFIG_FILE} is a {raw.get('format')!r} model, not a text bi-encoder; "
                              "load it with gcl.encoders.base.load_model")
        try:
            cfg = BiEncoderConfig(**{**raw, "text_model": str(p)})
        except TypeError as exc:
            raise ConfigError(f"{p / MODEL_CONFIG_FILE}: {exc}") from exc
        model = cls(cfg, device=device, image_tower=_saved_image_tower(p, device))
        from gcl.embedding_cache import default_cache_dir
        from gcl.training.frozen_reuse import attach_saved

        attach_saved(model, p, cache_dir=default_cache_dir())  # lower layers frozen in training: gcl_frozen.json
        return model


def _saved_image_tower(path: Path, device: str):
    """The :class:`~gcl.encoders.image.ImageTower` saved in a model directory, if there is one."""
    from gcl.encoders.image import IMAGE_CONFIG_FILE

    if not (path / IMAGE_CONFIG_FILE).is_file():
        return None
    from gcl.encoders.image import ImageTower

    return ImageTower.load(path, device=device)
