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

from gcl.data.errors import ConfigError, DataError
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
        self._query_batcher = MicroBatcher(self._encode_queries)

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
        """(n, d) query embeddings; concurrent callers are encoded in one model call."""
        if len(texts) != 1:
            return self._encode_queries(texts)
        return self._query_batcher.submit(texts[0])[None, :]

    def _encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return encode_query_texts(self.model, list(texts))

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
