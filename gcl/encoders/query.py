"""The query side of a built index: load the model an index was made with, encode query text.

Shared by ``gcl search`` (:mod:`gcl.cli.index`) and the HTTP service (:mod:`gcl.service`), so
both pick the same model and build the same query table. Any model kind works
(:class:`gcl.encoders.base.EmbeddingModel`, loaded by :func:`gcl.encoders.base.load_model`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from gcl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from gcl.encoders.base import EmbeddingModel


def load_index_encoder(index_dim: int, index_model: str | None, override: str | None = None, *,
                       where: str = "the index", backend: str | None = None) -> "EmbeddingModel":
    """The model named by ``override``, else the one the index manifest records (``index_model``),
    built with ``backend`` (:func:`gcl.encoders.onnx.load_backend`; ``None``: its default).

    ConfigError when neither names a model, or when the model's dimension is not the index's.
    """
    from gcl.encoders.onnx import load_backend

    name = override or index_model
    if not name:
        raise ConfigError(f"{where} records no model; pass --model")
    model = load_backend(name, backend) if backend else load_backend(name)
    check_encoder_dim(model, index_dim, name)
    return model


def check_encoder_dim(model, index_dim: int, name: str = "the model") -> None:
    if int(model.dim) != int(index_dim):
        raise ConfigError(f"model {name} makes {model.dim}-d vectors but the index holds {index_dim}-d ones; "
                          "search with the model that built the index")


def encode_query_texts(model: "EmbeddingModel", texts: Sequence[str]) -> np.ndarray:
    """(n, d) query embeddings: each text fills the model's first text query field, the others stay empty."""
    from gcl.encoders.base import query_table

    return model.encode_queries(query_table(model, texts))
