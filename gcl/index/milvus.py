"""The gcl index interface on Milvus (pymilvus): an embedded milvus-lite file or a Milvus cluster.

``MilvusIndex`` keeps one document per row of a Milvus collection::

    id      VARCHAR primary key   the document id (any string up to 65,535 bytes)
    label   INT64                 write order (see "Ordering"), for deterministic ties
    vector  FLOAT_VECTOR(dim)     the L2-normalised vector; metric IP, so scores are cosines
    fields  JSON                  the stored fields

and its own settings (kind, HNSW parameters, model path) in the collection property
``gcl.meta``. ``kind="exact"`` is a Milvus ``FLAT`` index, ``kind="hnsw"`` an ``HNSW`` index
(``M``, ``efConstruction``; ``ef`` at search time). The compressed kinds map to ``sq8`` ->
``IVF_SQ8`` (``nlist``; ``nprobe``), ``hnsw_sq8`` -> ``HNSW_SQ`` (``sq_type`` SQ8) and ``ivfpq`` ->
``IVF_PQ`` (``nlist``, ``m``, ``nbits``); their top ``rescore * k`` candidates are re-scored
exactly with the float vectors the collection stores. milvus-lite 3.2 builds IVF_SQ8 and
HNSW_SQ (tested) but not IVF_PQ (refused; the mapping is untested against a Milvus server). The
binary kinds are refused (milvus-lite has no BINARY_VECTOR type; see ``check_kind``).
Note that Milvus' ``IVF_SQ8`` partitions into cells, unlike faiss ``sq8`` (a flat scan). Where the code runs is decided by the URI
alone: a path ending in ``.db`` is milvus-lite (embedded, one process), ``http(s)://host:19530``
a Milvus server or cluster (``token`` = ``"user:password"`` or an API key, ``db_name`` a
database); nothing else changes.

Behaviour matches :class:`gcl.index.store.VectorIndex` (the shared tests run on both):

* **Normalisation, ids, fields, errors**: the same checks (:mod:`gcl.index.base`); ``add`` of a
  present id and ``delete`` of an unknown one are refused before anything is written.
* **Ordering.** Score descending, then ``label`` ascending. Labels come from the wall clock in
  nanoseconds, kept increasing within a process (``max(time_ns, last + 1)``), so equal scores
  are ordered by write time; an upsert gets a new label, as in ``VectorIndex``. Milvus returns
  tied scores in no fixed order, so the index fetches one more candidate than asked and widens
  the fetch while the cut falls inside a group of equal scores.
* **Filters** are pushed into Milvus as an expression that keeps a superset of the matches
  (``fields["brand"] == "acme"``, plus the numeric or boolean literal when the value reads as
  one), then checked with the exact rule of ``VectorIndex`` (``str(value) == wanted``). Unlike
  ``VectorIndex``'s post-filtering, Milvus filters *before* the vector search, so a selective
  filter on HNSW still returns ``k`` hits when ``k`` documents match.
* **Deletes** are Milvus deletes (no tombstones to manage here); ``compact()`` asks Milvus to
  compact its segments and returns 0.
* **Durability.** Writes are durable when Milvus acknowledges them (its write-ahead log);
  ``flush()`` seals the segments. Consistency level ``Strong``: a search sees every write
  acknowledged before it.
* A search asks Milvus for at most 16,384 candidates per query (Milvus's ``topk`` limit).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from gcl.errors import ConfigError, DataError
from gcl.index.base import (QUANTIZED_KINDS, IndexedDocument, IndexParams, QuantParams, SearchHit, SearchIndex,
                            check_exact, check_fields, check_filters, check_ids, check_k, matches, normalise)
from gcl.index.milvus_syntax import (INDEX_TYPES, build_params, check_kind, filter_expression, id_expression,  # noqa: F401 - re-exported
                                     is_milvus_uri, load_pymilvus, parse_uri)

DEFAULT_COLLECTION = "gcl_documents"
META_PROPERTY = "gcl.meta"
FORMAT = "gcl-milvus-collection"
MAX_ID_BYTES = 65535  # Milvus VARCHAR limit
MAX_TOPK = 16384  # Milvus search limit
WRITE_CHUNK = 2048  # rows per insert/upsert request (gRPC messages stay well under 64 MB)
ID_CHUNK = 1000  # ids per existence query
TOKEN_ENV = "GCL_MILVUS_TOKEN"
class MilvusIndex(SearchIndex):
    """A gcl index in a Milvus collection (milvus-lite ``.db`` file or a server/cluster URI).

    Opens the collection when it exists (``dim`` and ``kind`` may then be omitted; given, they
    must agree) and creates it otherwise (``dim`` required). Keyword-only, like ``VectorIndex``.

    >>> index = MilvusIndex(uri="indexes/demo.db", dim=3)            # doctest: +SKIP
    >>> index.add(["a", "b"], [[1, 0, 0], [0, 1, 1]], [{"title": "A"}, {"title": "B"}])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        uri: str | os.PathLike,
        collection: str | None = None,
        dim: int | None = None,
        kind: Literal["exact", "hnsw"] | None = None,
        hnsw_m: int = IndexParams.hnsw_m,
        ef_construction: int = IndexParams.ef_construction,
        ef_search: int | None = None,
        model: str | None = None,
        token: str | None = None,
        db_name: str | None = None,
        replace: bool = False,
        **quant: int,
    ) -> None:
        """``replace``: drop an existing gcl collection of that name first (a new, empty index).
        ``quant``: fields of :class:`QuantParams` for a compressed kind (creation only)."""
        quant_params = QuantParams(**quant)
        pm_uri, uri_collection = parse_uri(uri)
        self.collection = collection or uri_collection or DEFAULT_COLLECTION
        if dim is not None or kind is not None:  # same parameter checks as VectorIndex, no faiss needed
            if dim is not None and (not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1):
                raise ConfigError(f"dim must be a positive integer, got {dim!r}")
            IndexParams(kind=kind or IndexParams.kind, hnsw_m=hnsw_m, ef_construction=ef_construction,
                        ef_search=ef_search or IndexParams.ef_search)
        pymilvus = load_pymilvus()
        self.uri = pm_uri
        self._lite = pm_uri.endswith(".db") and "://" not in pm_uri
        if self._lite:
            Path(pm_uri).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"uri": pm_uri}
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        if token:
            kwargs["token"] = token
        if db_name:
            kwargs["db_name"] = db_name
        try:
            self._client = pymilvus.MilvusClient(**kwargs)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises several types for a bad address
            raise ConfigError(f"cannot connect to Milvus at {self._redacted()}: {exc}") from exc
        self._label_lock = threading.Lock()
        self._last_label = 0
        if replace and self._client.has_collection(self.collection):
            self._open(None, None)  # refuses to drop a collection that is not a gcl index
            self._client.drop_collection(self.collection)
        if self._client.has_collection(self.collection):
            self._open(dim, kind)
            if model is not None and model != self.model:
                self.model = model
                self._client.alter_collection_properties(self.collection, properties={META_PROPERTY: json.dumps(self._meta())})
        else:
            if dim is None:
                raise DataError(f"no collection {self.collection!r} at {self._redacted()} (give dim to create one)")
            self._dim, self._kind = int(dim), kind or "exact"
            self._params = {"hnsw_m": int(hnsw_m), "ef_construction": int(ef_construction),
                            "ef_search": int(ef_search or IndexParams.ef_search)}
            if self._kind in QUANTIZED_KINDS:
                if self._kind == "ivfpq":
                    quant_params.check_dim(self._dim)
                self._params.update(quant_params.__dict__)
            self.model = model
            self._create()
        self._ef_search = int(ef_search) if ef_search is not None else int(self._params["ef_search"])

    # ------------------------------------------------------------------ collection plumbing
    def _redacted(self) -> str:
        return self.uri if self._lite else self.uri.split("@")[-1]

    def _create(self) -> None:
        check_kind(self._kind, lite=self._lite)  # ivfpq on milvus-lite, the binary kinds: refused, saying why
        pymilvus = load_pymilvus()
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("label", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        schema.add_field("fields", DataType.JSON)
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=INDEX_TYPES[self._kind], metric_type="IP",
                               params=build_params(self._kind, self._params))
        self._client.create_collection(self.collection, schema=schema, index_params=index_params,
                                       consistency_level="Strong")
        self._client.alter_collection_properties(self.collection, properties={META_PROPERTY: json.dumps(self._meta())})

    def _meta(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self._kind, "params": self._params, "model": self.model}

    def _open(self, dim: int | None, kind: str | None) -> None:
        desc = self._client.describe_collection(self.collection)
        by_name = {f["name"]: f for f in desc.get("fields", [])}
        if set(by_name) != {"id", "label", "vector", "fields"}:
            raise DataError(f"collection {self.collection!r} is not a gcl index (fields {sorted(by_name)})",
                            source=self._redacted())
        self._dim = int(by_name["vector"]["params"]["dim"])
        raw = (desc.get("properties") or {}).get(META_PROPERTY)
        try:
            meta = json.loads(raw) if raw else {}
        except json.JSONDecodeError as exc:
            raise DataError(f"collection property {META_PROPERTY} is not JSON ({exc})", source=self._redacted()) from exc
        index_type = self._client.describe_index(self.collection, "vector").get("index_type", "FLAT")
        self._kind = meta.get("kind") or ("hnsw" if index_type == "HNSW" else "exact")
        self._params = {"hnsw_m": IndexParams.hnsw_m, "ef_construction": IndexParams.ef_construction,
                        "ef_search": IndexParams.ef_search, **meta.get("params", {})}
        if self._kind in QUANTIZED_KINDS:
            self._params = {**QuantParams().__dict__, **self._params}
        self.model = meta.get("model")
        if dim is not None and int(dim) != self._dim:
            raise ConfigError(f"collection {self.collection!r} holds {self._dim}-d vectors, not {dim}-d")
        if kind is not None and kind != self._kind:
            raise ConfigError(f"collection {self.collection!r} is a {self._kind} index, not {kind}")
        self._client.load_collection(self.collection)  # a collection released (e.g. by a killed process) serves nothing

    def _next_labels(self, n: int) -> np.ndarray:
        with self._label_lock:
            start = max(time.time_ns(), self._last_label + 1)
            self._last_label = start + n - 1
        return np.arange(start, start + n, dtype=np.int64)

    def _existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), ID_CHUNK):
            chunk = ids[i : i + ID_CHUNK]
            rows = self._client.query(self.collection, filter=id_expression(chunk), output_fields=["id"])
            found.update(r["id"] for r in rows)
        return found

    def _rows(self, ids: list[str], x: np.ndarray, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = self._next_labels(len(ids)).tolist()
        return [{"id": d, "label": lab, "vector": v, "fields": f} for d, lab, v, f in zip(ids, labels, x.tolist(), fields)]

    def _check(self, ids: Sequence[str], vectors: Any, fields) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        ids = check_ids(ids)
        too_long = [d for d in ids if len(d.encode("utf-8")) > MAX_ID_BYTES]
        if too_long:
            raise DataError(f"document id {too_long[0][:40]!r}... is longer than {MAX_ID_BYTES} bytes")
        x = normalise(vectors, self._dim, "document")
        if len(ids) != len(x):
            raise DataError(f"got {len(ids)} ids for {len(x)} vectors")
        checked = check_fields(ids, fields)
        return ids, x, checked

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def params(self) -> dict[str, int]:
        return {**self._params, "ef_search": self._ef_search}

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"ef_search must be a positive integer, got {value!r}")
        self._ef_search = int(value)

    @property
    def n_tombstones(self) -> int:
        return 0

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and bool(self._existing([doc_id]))

    def __repr__(self) -> str:
        return f"MilvusIndex(uri={self._redacted()!r}, collection={self.collection!r}, dim={self._dim}, kind={self._kind!r})"

    # ------------------------------------------------------------------ writes
    def add(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add new documents; an id already in the collection is a :class:`DataError` (use :meth:`upsert`)."""
        ids, x, checked = self._check(ids, vectors, fields)
        present = self._existing(ids)
        if present:
            first = next(d for d in ids if d in present)
            raise DataError(f"document id {first!r} is already in the index ({len(present)} such); use upsert")
        rows = self._rows(ids, x, checked)
        for i in range(0, len(rows), WRITE_CHUNK):
            self._client.insert(self.collection, rows[i : i + WRITE_CHUNK])

    def upsert(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add or replace documents (vector and fields; ``None`` fields -> ``{}``)."""
        ids, x, checked = self._check(ids, vectors, fields)
        rows = self._rows(ids, x, checked)
        for i in range(0, len(rows), WRITE_CHUNK):
            self._client.upsert(self.collection, rows[i : i + WRITE_CHUNK])

    def delete(self, ids: Sequence[str], *, missing_ok: bool = False) -> int:
        """Remove documents; returns how many were removed. Unknown ids raise unless ``missing_ok``."""
        ids = check_ids(ids)
        known = self._existing(ids)
        missing = [d for d in ids if d not in known]
        if missing and not missing_ok:
            raise DataError(f"document id {missing[0]!r} is not in the index ({len(missing)} such)")
        known_ids = [d for d in ids if d in known]
        for i in range(0, len(known_ids), ID_CHUNK):
            self._client.delete(self.collection, filter=id_expression(known_ids[i : i + ID_CHUNK]))
        return len(known_ids)

    def compact(self) -> int:
        """Ask Milvus to compact the collection's segments (deleted rows are already invisible); returns 0."""
        self._client.compact(self.collection)
        return 0

    def flush(self) -> None:
        """Seal the collection's growing segments (writes are already durable once acknowledged)."""
        self._client.flush(self.collection)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "MilvusIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def drop(self) -> None:
        """Delete the whole collection."""
        self._client.drop_collection(self.collection)

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str) -> IndexedDocument | None:
        """The stored (normalised) vector and fields of ``doc_id``, or ``None``."""
        if not isinstance(doc_id, str):
            return None
        rows = self._client.query(self.collection, filter=id_expression([doc_id]), output_fields=["vector", "fields"])
        if not rows:
            return None
        r = rows[0]
        return IndexedDocument(doc_id=doc_id, vector=np.asarray(r["vector"], dtype=np.float32), fields=dict(r["fields"] or {}))

    def search(self, query_vectors: Any, k: int, *, filters: Mapping[str, str] | None = None,
               exact: bool = False) -> list[list[SearchHit]]:
        """Top-``k`` documents per query, best first (see the module docstring for ties and filters).

        A compressed kind fetches ``rescore * k`` candidates and re-scores them exactly from the
        stored float vectors; ``exact=True`` is refused on every kind but ``exact``."""
        if exact:
            check_exact(self._kind)
        k = check_k(k)
        quantized = self._kind in QUANTIZED_KINDS
        want, k = k, k * int(self._params["rescore"]) if quantized else k
        q = normalise(query_vectors, self._dim, "query")
        filters = check_filters(filters)
        results: list[list[SearchHit]] = [[] for _ in range(len(q))]
        if not len(q):
            return results
        n = len(self)
        if n == 0:
            return results
        limit = min(n, MAX_TOPK)
        fetch = min(limit, k + 1)
        expr = filter_expression(filters) if filters else ""
        pending = np.arange(len(q))
        while len(pending):
            params: dict[str, Any] = {"metric_type": "IP"}
            if self._kind in ("hnsw", "hnsw_sq8"):
                params["params"] = {"ef": max(self._ef_search, fetch)}
            elif self._kind in ("sq8", "ivfpq"):
                params["params"] = {"nprobe": int(self._params["nprobe"])}
            raw = self._client.search(self.collection, data=q[pending].tolist(), limit=fetch, filter=expr,
                                      output_fields=["label", "fields"], search_params=params)
            retry = []
            for row, found in zip(pending.tolist(), raw):
                hits, complete = self._collect(found, k, filters, fetch)
                if complete or fetch >= limit:
                    results[row] = hits
                else:
                    retry.append(row)
            pending = np.asarray(retry, dtype=np.int64)
            fetch = min(limit, 2 * fetch)
        return self._rescore(q, results, want) if quantized else results

    def _rescore(self, q: np.ndarray, results: list[list[SearchHit]], k: int) -> list[list[SearchHit]]:
        """Each query's candidates re-scored with their stored float vectors (exact cosines), best ``k``."""
        ids = sorted({h.doc_id for hits in results for h in hits})
        stored: dict[str, tuple[np.ndarray, int]] = {}
        for i in range(0, len(ids), ID_CHUNK):
            rows = self._client.query(self.collection, filter=id_expression(ids[i : i + ID_CHUNK]),
                                      output_fields=["vector", "label"])
            stored.update((r["id"], (np.asarray(r["vector"], dtype=np.float32), int(r["label"]))) for r in rows)
        out = []
        for row, hits in zip(q, results):
            hits = [h for h in hits if h.doc_id in stored]  # a document deleted since the search is dropped
            if not hits:
                out.append([])
                continue
            scores = np.stack([stored[h.doc_id][0] for h in hits]) @ row
            labels = np.asarray([stored[h.doc_id][1] for h in hits], dtype=np.int64)
            order = np.lexsort((labels, -scores))[:k].tolist()
            out.append([SearchHit(doc_id=hits[i].doc_id, score=float(scores[i]), fields=hits[i].fields) for i in order])
        return out

    @staticmethod
    def _collect(found, k: int, filters: dict[str, str], fetch: int) -> tuple[list[SearchHit], bool]:
        cands = [(float(h["distance"]), int(h["entity"]["label"]), h["id"], h["entity"].get("fields") or {}) for h in found]
        exhausted = len(cands) < fetch  # Milvus had no more (filtered) documents to give
        if filters:
            cands = [c for c in cands if matches(c[3], filters)]
        cands.sort(key=lambda c: (-c[0], c[1]))
        complete = exhausted or (len(cands) > k and cands[k][0] != cands[k - 1][0])
        hits = [SearchHit(doc_id=d, score=s, fields=dict(f)) for s, _, d, f in cands[:k]]
        return hits, complete

    # ------------------------------------------------------------------ description
    def manifest(self) -> dict[str, Any]:
        pymilvus = load_pymilvus()
        return {
            "format": FORMAT,
            "uri": self._redacted(),
            "collection": self.collection,
            "dim": self._dim,
            "kind": self._kind,
            "metric": "cosine",
            "params": self.params,
            "model": self.model,
            "count": len(self),
            "pymilvus_version": pymilvus.__version__,
        }
