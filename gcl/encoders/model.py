"""The bi-encoder: one text tower shared by queries and documents, with weighted field fusion.

``BiEncoder`` is what the trainer optimises, what the evaluator encodes with and what is saved.
A saved model is a sentence-transformers directory (``SentenceTransformer(path)`` loads it
unchanged, weights in safetensors) plus ``gcl_model.json`` with the field lists and fusion
weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gcl.data.errors import ConfigError
from gcl.encoders.text import DEFAULT_TEXT_MODEL, load_sentence_transformer
from gcl.fusion import field_weights, fuse

MODEL_CONFIG_FILE = "gcl_model.json"


@dataclass
class BiEncoderConfig:
    """What a saved model needs besides its tower weights."""

    text_model: str = DEFAULT_TEXT_MODEL
    query_fields: list[str] = field(default_factory=lambda: ["query"])
    doc_fields: list[str] = field(default_factory=lambda: ["title"])
    query_field_weights: dict[str, float] = field(default_factory=dict)
    doc_field_weights: dict[str, float] = field(default_factory=dict)
    max_seq_length: int | None = 64


class BiEncoder(nn.Module):
    """Shared text tower + per-side field fusion. ``forward`` returns fused, L2-normalised embeddings."""

    def __init__(self, config: BiEncoderConfig | None = None, *, device: str = "cpu", tower=None) -> None:
        super().__init__()
        self.config = config or BiEncoderConfig()
        self.tower = tower if tower is not None else load_sentence_transformer(self.config.text_model, device=device)
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
        emb = self.tower.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return emb.astype(np.float32, copy=False)

    def _encode_side(
        self, table: pd.DataFrame, names: list[str], weights: list[float], batch_size: int, show_progress: bool
    ) -> np.ndarray:
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise ConfigError(f"model expects field(s) {missing}, data has {list(table.columns)}")
        if len(names) == 1:
            return self.encode_texts(
                table[names[0]].fillna("").astype(str).tolist(), batch_size=batch_size, show_progress=show_progress
            )
        embs, present = [], []
        for n in names:
            texts = table[n].fillna("").astype(str).tolist()
            embs.append(torch.from_numpy(self.encode_texts(texts, batch_size=batch_size, show_progress=show_progress)))
            present.append(torch.tensor([bool(t.strip()) for t in texts]))
        return fuse(embs, weights, present).numpy()

    def encode_queries(self, queries: pd.DataFrame, *, batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
        return self._encode_side(queries, self.config.query_fields, self._q_weights, batch_size, show_progress)

    def encode_documents(
        self, documents: pd.DataFrame, *, batch_size: int = 256, show_progress: bool = False
    ) -> np.ndarray:
        return self._encode_side(documents, self.config.doc_fields, self._d_weights, batch_size, show_progress)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tower.save(str(path), safe_serialization=True)
        cfg = asdict(self.config)
        cfg["text_model"] = "."  # the tower now lives in this directory
        (path / MODEL_CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        return path

    @classmethod
    def load(cls, path_or_name: str | Path, *, device: str = "cpu") -> "BiEncoder":
        """Load a saved gcl model, or wrap any sentence-transformers model by name/path.

        A directory saved by :class:`gcl.encoders.multifield.MultiFieldModel` (``"format":
        "multifield"`` in ``gcl_model.json``) loads as that class, which has the same
        ``encode_queries`` / ``encode_documents`` / ``dim`` interface.
        """
        p = Path(path_or_name)
        cfg_file = p / MODEL_CONFIG_FILE
        if cfg_file.is_file():
            raw = json.loads(cfg_file.read_text())
            if raw.get("format") == "multifield":
                from gcl.encoders.multifield import MultiFieldModel

                return MultiFieldModel.load(p, device=device)  # type: ignore[return-value]
            try:
                cfg = BiEncoderConfig(**{**raw, "text_model": str(p)})
            except TypeError as exc:
                raise ConfigError(f"{cfg_file}: {exc}") from exc
            return cls(cfg, device=device)
        return cls(BiEncoderConfig(text_model=str(path_or_name)), device=device)
