"""The service's encoders: query text, documents (fused multi-field), and images when there is a tower.

One lock serialises calls into the model: Hugging Face fast tokenizers are not safe to call from
several threads at once ("Already borrowed"), and on a small CPU concurrent forwards only
compete for the same cores.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gcl.data.errors import ConfigError, DataError
from gcl.encoders.query import check_encoder_dim, encode_query_texts, load_index_encoder


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class ServiceEncoders:
    """``ServiceEncoders.load(index_dim, index_model, override)`` or ``ServiceEncoders(model, index_dim)``.

    ``model`` is a :class:`gcl.encoders.model.BiEncoder` (or anything with ``config.query_fields``,
    ``config.doc_fields``, ``encode_queries``, ``encode_documents`` and ``dim``). An image tower
    is taken from ``model.image_tower`` when the model has one, or from ``image_tower.json`` in
    the model directory (:class:`gcl.encoders.image.ImageTower`); its ``out_dim`` must be the
    index's dimension.
    """

    def __init__(self, model, index_dim: int, *, name: str = "the model", image_tower=None) -> None:
        check_encoder_dim(model, index_dim, name)
        self.model = model
        self.name = name
        self.image_tower = image_tower if image_tower is not None else getattr(model, "image_tower", None)
        if self.image_tower is not None:
            if int(self.image_tower.out_dim) != int(index_dim):
                raise ConfigError(f"the image tower of {name} makes {self.image_tower.out_dim}-d vectors but the index "
                                  f"holds {index_dim}-d ones")
            self.image_tower.eval()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, index_dim: int, index_model: str | None, override: str | None = None) -> "ServiceEncoders":
        model = load_index_encoder(index_dim, index_model, override)
        name = override or index_model
        tower = None
        from gcl.encoders.image import IMAGE_CONFIG_FILE

        if name and (Path(name) / IMAGE_CONFIG_FILE).is_file():
            from gcl.encoders.image import ImageTower

            tower = ImageTower.load(name)
        return cls(model, index_dim, name=str(name), image_tower=tower)

    @property
    def doc_fields(self) -> list[str]:
        return list(self.model.config.doc_fields)

    @property
    def has_image_tower(self) -> bool:
        return self.image_tower is not None

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return encode_query_texts(self.model, texts)

    def documents(self, ids: Sequence[str], fields: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The fused document embedding of each document from the model's document fields.

        A document with none of those fields (or all of them blank) is a DataError naming it.
        """
        import pandas as pd

        names = self.doc_fields
        for doc_id, f in zip(ids, fields):
            if not any(_text(f.get(n)).strip() for n in names):
                raise DataError(f"document has none of the model's document fields {names} (or all are blank)",
                                source=f"document {doc_id!r}")
        table = pd.DataFrame({n: [_text(f.get(n)) for f in fields] for n in names})
        with self._lock:
            return self.model.encode_documents(table)

    def image(self, data: bytes) -> np.ndarray:
        """(1, d) embedding of an uploaded image; DataError when the bytes are not a decodable image."""
        import torch

        from gcl.data.images import load_image, preprocess

        if self.image_tower is None:
            raise ConfigError(f"{self.name} has no image tower; search by image is not available")
        img = load_image(bytes(data), root=None)
        if img is None:
            raise DataError("the uploaded image is empty")
        pixels = preprocess([img], self.image_tower.preprocess_spec)
        with self._lock, torch.inference_mode():
            return self.image_tower(pixels.to(self.image_tower.device)).cpu().numpy().astype(np.float32)
