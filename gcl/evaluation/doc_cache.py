"""Document (and query) embeddings cached on disk: a second evaluation of the same model encodes nothing.

The key of a document is ``sha1`` of its field names and values (JSON, missing values as
``null``) under the namespace ``docs-<model fingerprint>`` (queries: ``queries-<fingerprint>``)
(:meth:`gcl.encoders.base.EmbeddingModel.fingerprint`: configuration and weights), in a
:class:`gcl.embedding_cache.EmbeddingCache`. A changed text, another field set or another model
(even one retrained step) gets other keys; identical documents share one vector and are encoded
once. Documents with an image field are not cached (an image path says nothing about the file's
bytes today), they are always encoded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from gcl.embedding_cache import EmbeddingCache
from gcl.row_store import put_or_warn


def document_keys(documents: pd.DataFrame, fields: list[str]) -> list[str]:
    """One sha1 hex key per row: of the JSON of the field names, then of the row's values."""
    head = json.dumps(fields, ensure_ascii=False)
    columns = [_column(documents, f) for f in fields]
    rows = zip(*columns) if columns else ([] for _ in range(len(documents)))
    return [hashlib.sha1((head + json.dumps(list(values), ensure_ascii=False)).encode("utf-8")).hexdigest()
            for values in rows]


def _column(documents: pd.DataFrame, field: str) -> list:
    """The field's values as JSON-ready Python values; a missing value (or column) is ``None``."""
    if field not in documents:
        return [None] * len(documents)
    col = documents[field]
    return [None if missing else (v if isinstance(v, (str, bool, int, float)) else str(v))
            for v, missing in zip(col.tolist(), col.isna().tolist())]


def encode_documents_cached(model, documents: pd.DataFrame, *, cache_dir: str | Path, batch_size: int = 256,
                            show_progress: bool = False) -> tuple[np.ndarray, int]:
    """``(embeddings, n_encoded)``: the model's document embeddings, the cached ones read from
    ``cache_dir`` and only the others encoded (then stored). Same rows as
    ``model.encode_documents(documents)``."""
    return encode_cached(model, documents, "doc", cache_dir=cache_dir, batch_size=batch_size,
                         show_progress=show_progress)


def query_fingerprint(model) -> str | None:
    """The fingerprint that identifies ``model``'s *query* encoder, or ``None`` (queries not cached).

    ``fingerprint()`` is the document side's: a wrapper may encode queries another way (e.g. an
    exported ONNX graph for queries, the torch model for documents) under the same fingerprint.
    So queries are cached only for a model that says what its query encoder is
    (``query_fingerprint()``) or for gcl's own models, which encode both sides with the weights
    and configuration their ``fingerprint()`` hashes.
    """
    own = getattr(type(model), "query_fingerprint", None)
    if own is not None:
        return own(model)
    from gcl.encoders.model import BiEncoder
    from gcl.encoders.multifield import MultiFieldModel

    return model.fingerprint() if type(model) in (BiEncoder, MultiFieldModel) else None


def encode_cached(model, table: pd.DataFrame, side: str, *, cache_dir: str | Path, batch_size: int = 256,
                  show_progress: bool = False) -> tuple[np.ndarray, int]:
    """``(embeddings, n_encoded)`` of one side (``"doc"`` or ``"query"``) of ``table``, through
    the cache (namespaces ``docs-<fingerprint>`` and ``queries-<fingerprint>``)."""
    encode = model.encode_documents if side == "doc" else model.encode_queries
    fields = list(model.doc_field_names if side == "doc" else model.query_field_names)

    def encode_all():
        return encode(table, batch_size=batch_size, show_progress=show_progress), len(table)

    fingerprint = model.fingerprint() if side == "doc" else query_fingerprint(model)
    if fingerprint is None or any(kind != "text" for kind in model.field_kinds(side).values()):
        return encode_all()
    cache = EmbeddingCache.open_or_warn(cache_dir, namespace=f"{'docs' if side == 'doc' else 'queries'}-{fingerprint}")
    if cache is None:  # e.g. a read-only home directory (warned about): evaluate without the cache
        return encode_all()
    keys = document_keys(table, fields)
    found, cached = cache.lookup(keys)
    out = np.empty((len(table), model.dim), dtype=np.float32)
    if found.any():
        out[found] = cached
    missing = np.flatnonzero(~found)
    if not len(missing):
        return out, 0
    first: dict[str, int] = {}  # each missing key once: duplicates are encoded one time
    for i in missing.tolist():
        first.setdefault(keys[i], i)
    todo = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    fresh = np.asarray(encode(table.iloc[todo], batch_size=batch_size, show_progress=show_progress), dtype=np.float32)
    put_or_warn(cache, list(first), fresh)  # a full or read-only disk: warned about, the results stand
    slot = {k: n for n, k in enumerate(first)}
    out[missing] = fresh[[slot[keys[i]] for i in missing.tolist()]]
    return out, len(todo)
