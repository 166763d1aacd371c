"""The service's encoders: query text, documents (fused multi-field), and images when there is a tower.

One lock serialises calls into the model: Hugging Face fast tokenizers are not safe to call from
several threads at once ("Already borrowed"), and on a small CPU concurrent forwards only
compete for the same cores. Query texts that arrive while the model is busy are encoded together
in one call when it frees up (:class:`MicroBatcher`): one forward of n short queries costs far
less than n forwards. (Padding to the longest query in a batch changes an embedding by float
rounding only, ~1e-7.)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gcl.errors import ConfigError, DataError
from gcl.encoders.query import check_encoder_dim, encode_query_texts, load_index_encoder


class MicroBatcher:
    """``submit(x)`` -> ``fn([x, ...])[i]``: callers that arrive while ``fn`` runs share the next call.

    No extra thread: the first caller to find ``fn`` idle runs it on up to ``max_batch`` waiting
    items (its own among them, in arrival order) and hands each caller its row; the others wait.
    An exception in ``fn`` is raised in every caller of that batch.
    """

    def __init__(self, fn: Callable[[list], Sequence], *, max_batch: int = 32) -> None:
        self._fn = fn
        self._max = max_batch
        self._cond = threading.Condition()
        self._pending: list[list] = []  # [item, done, result, error]
        self._running = False
        self.calls = 0  # how many times fn ran (for tests and metrics)

    def submit(self, item):
        slot = [item, False, None, None]
        with self._cond:
            self._pending.append(slot)
            while not slot[1]:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                batch, self._pending = self._pending[: self._max], self._pending[self._max:]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if slot[3] is not None:
            raise slot[3]
        return slot[2]

    def _run(self, batch: list[list]) -> None:
        self.calls += 1
        try:
            out = self._fn([s[0] for s in batch])
            for s, row in zip(batch, out):
                s[2] = row
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch
            for s in batch:
                s[3] = exc
        for s in batch:
            s[1] = True


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class ServiceEncoders:
    """``ServiceEncoders.load(index_dim, index_model, override)`` or ``ServiceEncoders(model, index_dim)``.

    ``model`` is any :class:`gcl.encoders.base.EmbeddingModel` (a text bi-encoder or a
    multi-field model with image fields), loaded by :func:`gcl.encoders.base.load_model`. Query
    text fills its first text query field; a document is encoded from its document fields (an
    image field holds a path relative to ``image_root``); an uploaded image is encoded by
    ``model.encode_images`` when ``model.image_search`` is true. ``image_tower`` (optional) is a
    separate :class:`gcl.encoders.image.ImageTower` for image queries, for a model without one;
    its ``out_dim`` must be the index's dimension.
    """

    def __init__(self, model, index_dim: int, *, name: str = "the model", image_tower=None,
                 image_root: str | Path | None = None) -> None:
        check_encoder_dim(model, index_dim, name)
        self.model = model
        self.name = name
        self.image_root = str(image_root) if image_root is not None else None
        self.image_tower = image_tower
        if self.image_tower is not None:
            if int(self.image_tower.out_dim) != int(index_dim):
                raise ConfigError(f"the image tower of {name} makes {self.image_tower.out_dim}-d vectors but the index "
                                  f"holds {index_dim}-d ones")
            self.image_tower.eval()
        self._lock = threading.Lock()
        self._query_batcher = MicroBatcher(self._encode_queries)

    @classmethod
    def load(cls, index_dim: int, index_model: str | None, override: str | None = None, *,
             image_root: str | Path | None = None, backend: str | None = None) -> "ServiceEncoders":
        model = load_index_encoder(index_dim, index_model, override, backend=backend)
        return cls(model, index_dim, name=str(override or index_model), image_root=image_root)

    @property
    def doc_fields(self) -> list[str]:
        return list(self.model.doc_field_names)

    @property
    def has_image_tower(self) -> bool:
        return self.image_tower is not None or bool(self.model.image_search)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) query embeddings; concurrent callers are encoded in one model call."""
        if len(texts) != 1:
            return self._encode_queries(texts)
        return self._query_batcher.submit(texts[0])[None, :]

    def _encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return encode_query_texts(self.model, list(texts))

    def documents(self, ids: Sequence[str], fields: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The fused document embedding of each document from the model's document fields.

        Text fields are read as text; an image field holds an image path relative to the image
        root. A document with none of those fields (or all of them blank) is a DataError naming it.
        """
        import pandas as pd

        names = self.doc_fields
        kinds = self.model.field_kinds("doc")
        for doc_id, f in zip(ids, fields):
            if not any(_text(f.get(n)).strip() for n in names):
                raise DataError(f"document has none of the model's document fields {names} (or all are blank)",
                                source=f"document {doc_id!r}")
        table = pd.DataFrame({n: [(_text(f.get(n)) if kinds[n] == "text" else (_text(f.get(n)).strip() or None))
                                  for f in fields] for n in names})
        if self.image_root is not None:
            table.attrs["image_root"] = self.image_root
        with self._lock:
            return self.model.encode_documents(table)

    def image(self, data: bytes) -> np.ndarray:
        """(1, d) embedding of an uploaded image; DataError when the bytes are not a decodable image."""
        if not self.has_image_tower:
            raise ConfigError(f"{self.name} has no image tower; search by image is not available")
        if self.image_tower is None:
            with self._lock:
                return np.asarray(self.model.encode_images([bytes(data)]), dtype=np.float32)
        import torch

        from gcl.encoders.base import decode_images

        pixels = decode_images([bytes(data)], self.image_tower.preprocess_spec)
        with self._lock, torch.inference_mode():
            return self.image_tower(pixels.to(self.image_tower.device)).cpu().numpy().astype(np.float32)
