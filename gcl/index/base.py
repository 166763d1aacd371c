"""What every gcl vector index offers, and the input checks they share.

Two backends satisfy :class:`SearchIndex`: the embedded :class:`gcl.index.store.VectorIndex`
(faiss, one directory) and :class:`gcl.index.milvus.MilvusIndex` (a Milvus collection, embedded
milvus-lite file or a cluster). Code written against this interface - ``gcl search``, the HTTP
service - runs on either; :func:`gcl.index.open_index` picks the backend from a location.

Contract (both backends, tested by the same tests):

* ids are strings; vectors are L2-normalised on the way in (a zero or non-finite vector, a wrong
  width, a repeated id in one call are :class:`DataError`); scores are cosines;
* ``add`` refuses an id already present, ``upsert`` replaces vector *and* fields, ``delete``
  refuses unknown ids unless ``missing_ok``;
* ``search(query_vectors, k, filters=...)`` returns one best-first list of :class:`SearchHit`
  per query; equal scores are ordered by write order (earlier first); ``filters`` keep documents
  whose named fields equal the given strings;
* ``flush()`` makes every write so far durable where the index lives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from gcl.errors import ConfigError, DataError, check_k  # noqa: F401 - check_k: the index modules import it from here


KINDS = ("exact", "hnsw", "sq8", "hnsw_sq8", "ivfpq", "binary", "binary_hnsw")
# compressed codes in RAM, float32 vectors on disk, exact re-scoring (gcl.index.quantized)
QUANTIZED_KINDS = ("sq8", "hnsw_sq8", "ivfpq", "binary", "binary_hnsw")
BINARY_KINDS = ("binary", "binary_hnsw")  # sign-bit codes searched by Hamming distance (gcl.index.binary)


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class IndexParams:
    """How an index is built and searched: the one place these defaults live.

    ``kind``: ``exact`` (inner product over every vector), ``hnsw`` (approximate graph search), or
    a compressed kind of :data:`QUANTIZED_KINDS` (settings in :class:`QuantParams`).
    HNSW: ``hnsw_m`` links per node (graph degree M), ``ef_construction`` candidates kept while
    inserting, ``ef_search`` candidates kept while searching (recall grows with it, QPS falls).
    Every backend, ``build_index`` and ``gcl index build`` take their defaults from here.
    """

    kind: Literal["exact", "hnsw", "sq8", "hnsw_sq8", "ivfpq", "binary", "binary_hnsw"] = "exact"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown index kind {self.kind!r}; choose from {list(KINDS)}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.hnsw_m < 2:
            raise ConfigError(f"hnsw_m must be >= 2, got {self.hnsw_m}")


@dataclass(frozen=True)
class QuantParams:
    """Settings of the compressed kinds (``sq8``, ``hnsw_sq8``, ``ivfpq``, ``binary``, ``binary_hnsw``;
    see :mod:`gcl.index.quantized` and :mod:`gcl.index.binary`).

    ``rescore``: the compressed index proposes ``rescore * k`` candidates, which are re-scored
    exactly from the float32 vectors on disk (recall grows with it, QPS falls).
    ``train_size``: the quantiser is trained on the first ``train_size`` vectors written (or on all
    of them at the first save, if fewer) and never retrained except by ``compact()``.
    (The binary kinds' sign bits need no training: ``train_size`` does not apply to them.)
    IVF-PQ: ``nlist`` coarse cells, ``nprobe`` cells scanned per query, ``pq_m`` sub-vectors of
    ``pq_nbits`` bits each (``pq_m`` must divide the dimension; a code is ``pq_m * pq_nbits / 8`` bytes).
    """

    rescore: int = 4
    train_size: int = 100_000
    nlist: int = 1024
    nprobe: int = 32
    pq_m: int = 48
    pq_nbits: int = 8

    def __post_init__(self) -> None:
        for name in ("rescore", "train_size", "nlist", "nprobe", "pq_m", "pq_nbits"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.pq_nbits > 16:
            raise ConfigError(f"pq_nbits must be between 1 and 16, got {self.pq_nbits}")

    def check_dim(self, dim: int) -> None:
        """``pq_m`` must divide the vector dimension (a ConfigError naming the option otherwise)."""
        if dim % self.pq_m:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0 and m <= 128]
            raise ConfigError(f"--pq-m {self.pq_m} does not divide the vector dimension {dim}; "
                              f"choose one of {divisors}")

    def min_train(self, kind: str) -> int:
        """Fewest vectors the quantiser of ``kind`` can be trained on (k-means needs a point per centroid)."""
        return max(self.nlist, 2 ** self.pq_nbits) if kind == "ivfpq" else 1


class SearchIndex(ABC):
    """The index interface shared by the faiss and Milvus backends (see the module docstring)."""

    model: str | None = None  # the encoder that made the vectors (path or name), kept in the manifest

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def kind(self) -> str: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, doc_id: object) -> bool: ...

    @abstractmethod
    def add(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]] | None = None) -> None: ...

    @abstractmethod
    def upsert(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]] | None = None) -> None: ...

    @abstractmethod
    def delete(self, ids: Sequence[str], *, missing_ok: bool = False) -> int: ...

    @abstractmethod
    def get(self, doc_id: str): ...

    @abstractmethod
    def search(self, query_vectors: Any, k: int, *, filters: Mapping[str, str] | None = None) -> list: ...

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def manifest(self) -> dict[str, Any]: ...

    @property
    @abstractmethod
    def ef_search(self) -> int:
        """HNSW search breadth (implementations give the setter, which checks it)."""

    @property
    @abstractmethod
    def n_tombstones(self) -> int:
        """Deleted or replaced vectors still taking room until :meth:`compact` (0 where the database hides them)."""

    @abstractmethod
    def compact(self) -> int:
        """Reclaim the room of deleted vectors; returns how many were dropped."""

    def close(self) -> None:
        """Release the connection (nothing to release for an in-process index)."""


def check_filters(filters: Mapping[str, str] | None) -> dict[str, str]:
    filters = dict(filters or {})
    for name, value in filters.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigError(f"filters map field names to strings, got {name!r}: {value!r}")
    return filters


def normalise(vectors: Any, dim: int, what: str) -> np.ndarray:
    """``(n, dim)`` float32 rows scaled to unit length; a 1-D vector is one row."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise DataError(f"{what} vectors must have shape (n, {dim}), got {tuple(np.shape(vectors))}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise DataError(f"{what} vector {bad} has a NaN or infinite component")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise DataError(f"{what} vector {bad} is all zeros and cannot be normalised")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def check_ids(ids: Iterable[str]) -> list[str]:
    """A list of plain ``str`` ids, none repeated (a single string is one id)."""
    ids = list(ids) if not isinstance(ids, str) else [ids]
    for doc_id in ids:
        if not isinstance(doc_id, str):
            raise DataError(f"document ids must be strings, got {doc_id!r} ({type(doc_id).__name__})")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(d for d in ids if d in seen or seen.add(d))
        raise DataError(f"document id {dup!r} appears twice in one call")
    return [str(d) for d in ids]  # numpy/pandas str subclasses -> plain str


def matches(fields: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    """The filter rule: every named field present and ``str(value) == wanted``."""
    for name, value in filters.items():
        got = fields.get(name)
        if got is None or str(got) != value:
            return False
    return True


# ---------------------------------------------------------------- result types and shared helpers
def check_exact(kind: str) -> None:
    """``exact=True`` (``gcl search --exact``, the API's ``exact``) is served only by the exact kind."""
    if kind == "exact":
        return
    why = ("a compressed index: it scores codes and re-scores only the top rescore*k candidates from the "
           "float32 vectors on disk; raise --rescore for better recall" if kind in QUANTIZED_KINDS
           else "an approximate index")
    raise ConfigError(f"exact search asked of a {kind} index ({why}); build one with --kind exact for exact results")


@dataclass(frozen=True)
class SearchHit:
    """One search result: the document id, its cosine score and (a copy of) its stored fields."""

    doc_id: str
    score: float
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexedDocument:
    """What :meth:`VectorIndex.get` returns: the stored (normalised) vector and fields."""

    doc_id: str
    vector: np.ndarray
    fields: dict[str, Any]


def load_faiss():
    """The faiss module (a ConfigError naming the [index] extra when it is not installed)."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("the vector index needs faiss: pip install 'gcl[index]' (faiss-cpu)") from exc
    return faiss


def json_value(value: Any, *, doc_id: str, name: str) -> Any:
    """A JSON-safe copy of one field value (numpy scalars -> Python, NaN/NA -> None)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, np.generic):
        return json_value(value.item(), doc_id=doc_id, name=name)
    if isinstance(value, (list, tuple)):
        return [json_value(v, doc_id=doc_id, name=name) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v, doc_id=doc_id, name=name) for k, v in value.items()}
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    raise DataError(f"field value of type {type(value).__name__} cannot be stored (JSON types only)",
                    source=f"document {doc_id!r}", field=name)


def check_fields(ids: list[str], fields: Sequence[Mapping[str, Any] | None] | None) -> list[dict[str, Any]]:
    """One JSON-safe field dict per id (``{}`` for None); a count mismatch or a non-dict is a DataError."""
    if fields is None:
        return [{} for _ in ids]
    fields = list(fields)
    if len(fields) != len(ids):
        raise DataError(f"got {len(fields)} field dicts for {len(ids)} ids")
    out = []
    for doc_id, f in zip(ids, fields):
        if f is not None and not isinstance(f, Mapping):
            raise DataError(f"fields must be a dict, got {type(f).__name__}", source=f"document {doc_id!r}")
        out.append({str(k): json_value(v, doc_id=doc_id, name=str(k)) for k, v in (f or {}).items()})
    return out
