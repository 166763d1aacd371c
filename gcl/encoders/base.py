"""The one model abstraction: what every consumer needs of an embedding model, and ``load_model``.

Two kinds of model satisfy :class:`EmbeddingModel`:

* :class:`gcl.encoders.model.BiEncoder` -- one text tower shared by queries and documents
  (text fields only; the single-field ``query`` / ``title`` model is its default);
* :class:`gcl.encoders.multifield.MultiFieldModel` -- per-field towers, text and image fields.

Evaluation, dev evaluation, ``gcl index build``, ``gcl search`` and ``gcl serve`` take a model
only through this protocol and load one only through :func:`load_model`; none of them branches
on the concrete class.

A side (query or document) is a list of named fields, each of kind ``text`` or ``image``. For an
item with field embeddings ``e_j``, fusion weights ``w_j`` and presence ``p_j`` the side's
embedding is the fusion rule of :mod:`gcl.fusion`::

    e = normalise( sum_j w'_j * normalise(e_j) ),   w'_j = w_j p_j / sum_k w_k p_k

A text-only, one-field model is the case ``m = 1``: ``e = normalise(e_1)``.

A saved model is a directory holding :data:`MODEL_CONFIG_FILE` (``gcl_model.json``). Its
``"format"`` says which class reads it (``"multifield"``; absent for the text bi-encoder). A
directory without that file, or a name, is a sentence-transformers model wrapped as a
one-field :class:`BiEncoder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence, runtime_checkable

from gcl.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    import torch

MODEL_CONFIG_FILE = "gcl_model.json"
Side = Literal["query", "doc"]
FieldKind = Literal["text", "image"]


@runtime_checkable
class EmbeddingModel(Protocol):
    """What evaluation, indexing, search and the service use of a model (see the module docstring).

    ``encode_queries`` / ``encode_documents`` take a table with one column per field of the side
    and return ``(n, dim)`` float32 fused, L2-normalised rows (zero rows where no field is
    present). ``encode_images`` embeds raw images (bytes) into the same space, when
    ``image_search`` is true. ``fingerprint()`` is equal only for models with equal weights and
    configuration. ``source`` is where the model was loaded from (recorded in index manifests).
    """

    @property
    def dim(self) -> int: ...

    @property
    def query_field_names(self) -> list[str]: ...

    @property
    def doc_field_names(self) -> list[str]: ...

    def field_kinds(self, side: Side) -> dict[str, FieldKind]: ...

    @property
    def image_search(self) -> bool: ...

    @property
    def source(self) -> str | None: ...

    def encode_queries(self, queries: "pd.DataFrame", *, batch_size: int = 256,
                       show_progress: bool = False) -> "np.ndarray": ...

    def encode_documents(self, documents: "pd.DataFrame", *, batch_size: int = 256,
                         show_progress: bool = False) -> "np.ndarray": ...

    def encode_images(self, images: Sequence[bytes]) -> "np.ndarray": ...

    def save(self, path: str | Path) -> Path: ...

    def fingerprint(self) -> str: ...


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in the file ``path``; ``None`` when there is no such file. Anything else
    (invalid JSON, not an object) is a :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return raw


def read_model_config(path: str | Path) -> dict[str, Any] | None:
    """The parsed ``gcl_model.json`` of a saved model directory; ``None`` when there is none."""
    return read_json_object(Path(path) / MODEL_CONFIG_FILE)


class TextFieldsModel:
    """The text-field half of :class:`EmbeddingModel` for models whose fields are all text and
    share one text encoder (:class:`gcl.encoders.model.BiEncoder` and its ONNX export).

    Needs ``self.config`` (``query_fields`` / ``doc_fields``), the fusion weights
    ``self._q_weights`` / ``self._d_weights`` and ``self.encode_texts(texts, batch_size=,
    show_progress=)`` returning L2-normalised float32 rows. A side with several fields is fused
    by :func:`gcl.fusion.fuse`, an empty or blank text counting as an absent field.
    """

    @property
    def query_field_names(self) -> list[str]:
        return list(self.config.query_fields)

    @property
    def doc_field_names(self) -> list[str]:
        return list(self.config.doc_fields)

    def field_kinds(self, side: Side) -> dict[str, FieldKind]:
        return {n: "text" for n in (self.config.query_fields if side == "query" else self.config.doc_fields)}

    def _encode_side(
        self, table: "pd.DataFrame", names: list[str], weights: list[float], batch_size: int, show_progress: bool
    ) -> "np.ndarray":
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise ConfigError(f"model expects field(s) {missing}, data has {list(table.columns)}")
        texts = [table[n].fillna("").astype(str).tolist() for n in names]
        if len(names) == 1:
            return self.encode_texts(texts[0], batch_size=batch_size, show_progress=show_progress)
        import torch

        from gcl.fusion import fuse

        embs = [torch.from_numpy(self.encode_texts(t, batch_size=batch_size, show_progress=show_progress)) for t in texts]
        present = [torch.tensor([bool(s.strip()) for s in t]) for t in texts]
        return fuse(embs, weights, present).numpy()

    def encode_queries(self, queries: "pd.DataFrame", *, batch_size: int = 256, show_progress: bool = False) -> "np.ndarray":
        return self._encode_side(queries, self.config.query_fields, self._q_weights, batch_size, show_progress)

    def encode_documents(
        self, documents: "pd.DataFrame", *, batch_size: int = 256, show_progress: bool = False
    ) -> "np.ndarray":
        return self._encode_side(documents, self.config.doc_fields, self._d_weights, batch_size, show_progress)


def load_model(path_or_name: str | Path, *, device: str = "cpu") -> EmbeddingModel:
    """Load any gcl model: a saved directory (either kind) or a sentence-transformers name/path."""
    raw = read_model_config(path_or_name)
    if raw is not None and raw.get("format") == "multifield":
        from gcl.encoders.multifield import MultiFieldModel

        return MultiFieldModel.load(path_or_name, device=device)
    from gcl.encoders.model import BiEncoder

    return BiEncoder.load(path_or_name, device=device)


def text_fields(model: EmbeddingModel, side: Side) -> list[str]:
    """The side's text fields, in field order."""
    return [n for n, k in model.field_kinds(side).items() if k == "text"]


def query_table(model: EmbeddingModel, texts: Sequence[str]) -> "pd.DataFrame":
    """A queries table for free text: each text fills the first text query field, the others stay empty."""
    import pandas as pd

    texts = [str(t) for t in texts]
    first = text_fields(model, "query")
    if not first:
        raise ConfigError("the model has no text query field, so it cannot encode query text")
    return pd.DataFrame({n: (texts if n == first[0] else [None] * len(texts)) for n in model.query_field_names})


def decode_images(images: Sequence[bytes], spec) -> "torch.Tensor":
    """Uploaded image bytes -> ``(n, 3, S, S)`` pixels; DataError for empty or undecodable bytes."""
    from gcl.data.images import load_image, preprocess

    decoded = []
    for data in images:
        img = load_image(bytes(data), root=None)
        if img is None:
            raise DataError("the uploaded image is empty")
        decoded.append(img)
    return preprocess(decoded, spec)


def state_fingerprint(module: "torch.nn.Module", extra: str = "") -> str:
    """sha1 of ``extra`` then every weight and buffer (name, dtype, bytes) in name order."""
    import hashlib

    import torch

    h = hashlib.sha1(extra.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
