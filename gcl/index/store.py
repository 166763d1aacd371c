"""A persistent vector index over string document ids, backed by faiss.

``VectorIndex`` stores L2-normalised float32 vectors (inner product = cosine similarity) under
string document ids, with a small dict of fields per document, and searches them either exactly
(``kind="exact"``: ``IndexIDMap2(IndexFlatIP)``) or approximately (``kind="hnsw"``:
``IndexIDMap2(IndexHNSWFlat(METRIC_INNER_PRODUCT))``). Each document gets an int64 *label*, handed
out in write order and never reused; faiss only ever sees labels. The compressed kinds (``sq8``,
``hnsw_sq8``, ``ivfpq``: codes in RAM, float32 vectors memory-mapped from disk, exact re-scoring)
are :class:`gcl.index.quantized.QuantizedIndex`, which ``VectorIndex(kind=...)`` and :meth:`load` return.

Behaviour worth knowing:

* **Normalisation.** Document vectors are L2-normalised on the way in, and so are query vectors,
  so scores are cosines in [-1, 1]. A zero or non-finite vector is a :class:`DataError`.
* **Ordering.** Hits are sorted by score descending; equal scores are ordered by label ascending
  (the document written earlier first). On the exact index this makes results equal to
  :func:`gcl.evaluation.search.exact_search` over the vectors in write order, ties included.
* **Deletes and updates.** The exact index removes vectors physically. HNSW graphs cannot remove
  a node, so on an HNSW index ``delete`` (and the replaced half of ``upsert``) puts the label in a
  *tombstone* set: the vector stays in the graph, is skipped at search time, and each search
  over-fetches ``k + len(tombstones)`` candidates (raising the HNSW search breadth ``ef_search``
  to the fetch size when that is larger). Many tombstones cost search time and keep dead nodes
  in the graph; :meth:`VectorIndex.compact` rebuilds it without them.
* **Filters** are exact matches on stored fields (``str(fields[name]) == value`` for every pair;
  a missing field never matches), applied *after* the vector search: the index over-fetches and
  doubles the fetch until ``k`` hits pass or the whole index has been fetched. On the exact index
  the result is therefore the true filtered top-k (slow for a very selective filter on a large
  index). On HNSW the doubling stops at ``max(k + len(tombstones), HNSW_MAX_FETCH)`` candidates
  (4,096), so a very selective filter can return fewer than ``k`` hits or miss some: the graph
  search itself knows nothing of the filter.
* **Persistence.** :meth:`save` writes the directory atomically (files and swap:
  :mod:`gcl.index.store_files`); :meth:`flush` saves again to the directory last saved to or loaded from.
* **Threads.** One index may be used from several threads: searches and reads (``search``,
  ``get``, ``save``) share a readers/writer lock, writes (``add``, ``upsert``, ``delete``,
  ``compact``, setting ``ef_search``) hold it alone, so a search never sees half of a write
  (faiss itself is not safe against an add during a search). The lock is not reentrant and is
  held only inside these methods.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from gcl.errors import ConfigError, DataError
from gcl.index.base import (BINARY_KINDS, QUANTIZED_KINDS, IndexedDocument, IndexParams, SearchHit, SearchIndex, check_exact,  # noqa: F401 - re-exported
                            check_fields, check_filters, check_ids, check_k, load_faiss, matches, normalise)
from gcl.index.locks import ReadWriteLock

from gcl.index.store_files import (DOCUMENTS_FILE, FAISS_FILE, FORMAT, FORMAT_VERSION,  # noqa: F401 - re-exported
                                   MANIFEST_FILE, TOMBSTONES_FILE)
HNSW_MAX_FETCH = 4096  # HNSW filtered search stops widening here (see the module docstring)


class VectorIndex(SearchIndex):
    """String-keyed cosine vector index: exact (flat) or HNSW, with fields, filters and persistence.

    >>> index = VectorIndex(dim=3)
    >>> index.add(["a", "b"], [[1, 0, 0], [0, 1, 1]], [{"title": "A"}, {"title": "B"}])
    >>> [h.doc_id for h in index.search([[0, 1, 0]], k=2)[0]]
    ['b', 'a']
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "VectorIndex":
        """A compressed ``kind`` (``sq8``, ``hnsw_sq8``, ``ivfpq``) makes a :class:`gcl.index.quantized.QuantizedIndex`,
        a binary one (``binary``, ``binary_hnsw``) a :class:`gcl.index.binary.BinaryIndex`."""
        if cls is VectorIndex and kwargs.get("kind") in BINARY_KINDS:
            from gcl.index.binary import BinaryIndex

            cls = BinaryIndex
        elif cls is VectorIndex and kwargs.get("kind") in QUANTIZED_KINDS:
            from gcl.index.quantized import QuantizedIndex

            cls = QuantizedIndex
        return super().__new__(cls)

    def __init__(
        self,
        *,
        dim: int,
        kind: Literal["exact", "hnsw"] = IndexParams.kind,
        hnsw_m: int = IndexParams.hnsw_m,
        ef_construction: int = IndexParams.ef_construction,
        ef_search: int = IndexParams.ef_search,
        model: str | None = None,
    ) -> None:
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        IndexParams(kind=kind, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)  # checks
        self._dim = int(dim)
        self._kind = kind
        self._hnsw_m = int(hnsw_m)
        self._ef_construction = int(ef_construction)
        self._ef_search = int(ef_search)
        self.model = model  # the encoder that made the vectors (path or name), kept in the manifest
        self._faiss_index = self._new_faiss_index()
        self._label_of: dict[str, int] = {}
        self._doc_of: dict[int, str] = {}
        self._fields: dict[int, dict[str, Any]] = {}
        self._tombstones: set[int] = set()
        self._next_label = 0
        self._lock = ReadWriteLock()
        self._save_lock = threading.Lock()
        self._path: Path | None = None  # where save()/load() last put it; flush() saves there

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def params(self) -> dict[str, int]:
        """Construction/search parameters (HNSW ones are recorded for the exact kind too)."""
        return {"hnsw_m": self._hnsw_m, "ef_construction": self._ef_construction, "ef_search": self._ef_search}

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"ef_search must be a positive integer, got {value!r}")
        with self._lock.write():
            self._ef_search = int(value)
            if self._kind == "hnsw":
                self._inner().hnsw.efSearch = self._ef_search

    @property
    def n_tombstones(self) -> int:
        """Deleted or replaced vectors still in the HNSW graph (always 0 for the exact kind)."""
        return len(self._tombstones)

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._label_of

    def __repr__(self) -> str:
        return f"VectorIndex(dim={self._dim}, kind={self._kind!r}, len={len(self)}, tombstones={len(self._tombstones)})"

    # ------------------------------------------------------------------ faiss plumbing
    def _new_faiss_index(self):
        faiss = load_faiss()
        if self._kind == "exact":
            inner = faiss.IndexFlatIP(self._dim)
        else:
            inner = faiss.IndexHNSWFlat(self._dim, self._hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self._ef_construction
            inner.hnsw.efSearch = self._ef_search
        return faiss.IndexIDMap2(inner)  # the Python wrapper keeps `inner` alive with it

    def _inner(self):
        return load_faiss().downcast_index(self._faiss_index.index)

    def _stored_labels(self) -> np.ndarray:
        """Labels in faiss storage order (live and tombstoned)."""
        return load_faiss().vector_to_array(self._faiss_index.id_map).astype(np.int64, copy=False)

    # ------------------------------------------------------------------ input checks
    def _prepare(self, vectors: Any, what: str) -> np.ndarray:
        return normalise(vectors, self._dim, what)

    @staticmethod
    def _check_ids(ids: Iterable[str]) -> list[str]:
        return check_ids(ids)

    # ------------------------------------------------------------------ writes
    def add(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add new documents; an id already in the index is a :class:`DataError` (use :meth:`upsert`)."""
        ids = self._check_ids(ids)
        x = self._prepare(vectors, "document")
        if len(ids) != len(x):
            raise DataError(f"got {len(ids)} ids for {len(x)} vectors")
        checked = check_fields(ids, fields)
        with self._lock.write():
            present = [d for d in ids if d in self._label_of]
            if present:
                raise DataError(f"document id {present[0]!r} is already in the index ({len(present)} such); use upsert")
            self._append(ids, x, checked)

    def upsert(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add or replace documents: an existing id gets the new vector *and* the new fields (``None`` -> ``{}``)."""
        ids = self._check_ids(ids)
        x = self._prepare(vectors, "document")
        if len(ids) != len(x):
            raise DataError(f"got {len(ids)} ids for {len(x)} vectors")
        checked = check_fields(ids, fields)
        with self._lock.write():
            self._remove([d for d in ids if d in self._label_of])
            self._append(ids, x, checked)

    def delete(self, ids: Sequence[str], *, missing_ok: bool = False) -> int:
        """Remove documents; returns how many were removed. Unknown ids raise unless ``missing_ok``."""
        ids = self._check_ids(ids)
        with self._lock.write():
            missing = [d for d in ids if d not in self._label_of]
            if missing and not missing_ok:
                raise DataError(f"document id {missing[0]!r} is not in the index ({len(missing)} such)")
            known = [d for d in ids if d in self._label_of]
            self._remove(known)
        return len(known)

    def _append(self, ids: list[str], x: np.ndarray, fields: list[dict[str, Any]]) -> None:
        if not ids:
            return
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._faiss_index.add_with_ids(x, labels)
        self._register(ids, labels, fields)

    def _register(self, ids: list[str], labels: np.ndarray, fields: list[dict[str, Any]]) -> None:
        """Record new documents' labels and fields (the id <-> label maps every kind keeps)."""
        self._next_label += len(ids)
        for doc_id, label, f in zip(ids, labels.tolist(), fields):
            self._label_of[doc_id] = label
            self._doc_of[label] = doc_id
            self._fields[label] = f

    def _forget(self, ids: list[str]) -> list[int]:
        """Drop documents from the id <-> label maps; returns their labels."""
        labels = [self._label_of.pop(d) for d in ids]
        for label in labels:
            del self._doc_of[label]
            del self._fields[label]
        return labels

    def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        labels = self._forget(ids)
        if self._kind == "exact":
            self._faiss_index.remove_ids(np.asarray(labels, dtype=np.int64))
        else:
            self._tombstones.update(labels)

    def compact(self) -> int:
        """Rebuild the faiss index without tombstoned vectors; returns how many were dropped."""
        with self._lock.write():
            return self._compact()

    def _compact(self) -> int:
        dropped = len(self._tombstones)
        if not dropped:
            return 0
        labels = self._stored_labels()
        vectors = self._inner().reconstruct_n(0, self._faiss_index.ntotal)
        keep = ~np.isin(labels, np.fromiter(self._tombstones, dtype=np.int64))
        self._faiss_index = self._new_faiss_index()
        if keep.any():
            self._faiss_index.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(labels[keep]))
        self._tombstones = set()
        return dropped

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str) -> IndexedDocument | None:
        """The stored vector and fields of ``doc_id``, or ``None`` if it is not in the index."""
        with self._lock.read():
            label = self._label_of.get(doc_id)
            if label is None:
                return None
            vector = self._faiss_index.reconstruct(label)
            return IndexedDocument(doc_id=doc_id, vector=vector, fields=dict(self._fields[label]))

    @property
    def write_version(self) -> tuple[int, int]:
        """``(next label, live documents)``: different after every write that changed something (an
        add or upsert takes new labels; a delete alone lowers the count). Derived indexes (the
        lexical one of :mod:`gcl.index.lexical`) compare it to know they are stale."""
        with self._lock.read():
            return self._next_label, len(self._label_of)

    def live_documents(self) -> tuple[tuple[int, int], np.ndarray, list[str], list[dict[str, Any]]]:
        """A consistent snapshot ``(write_version, labels, ids, fields)`` of the live documents in
        write (label) order. The field dicts are the index's own (a write stores new ones, never
        edits them): read them, do not change them."""
        with self._lock.read():
            labels = sorted(self._doc_of)
            return ((self._next_label, len(self._label_of)), np.asarray(labels, dtype=np.int64),
                    [self._doc_of[x] for x in labels], [self._fields[x] for x in labels])

    def search(
        self, query_vectors: Any, k: int, *, filters: Mapping[str, str] | None = None, exact: bool = False
    ) -> list[list[SearchHit]]:
        """Top-``k`` documents per query (one list per query row, best first; shorter if fewer match).

        ``filters`` keeps documents whose every named field equals the given string (see the
        module docstring for how post-filtering and tombstones over-fetch). ``exact=True`` asks for
        exact results: a :class:`ConfigError` on any kind but ``exact``.
        """
        if exact:
            check_exact(self._kind)
        k = check_k(k)
        q = self._prepare(query_vectors, "query")
        filters = check_filters(filters)
        with self._lock.read():
            return self._search(q, k, filters)

    def _search(self, q: np.ndarray, k: int, filters: dict[str, str]) -> list[list[SearchHit]]:
        results: list[list[SearchHit]] = [[] for _ in range(len(q))]
        n_stored = int(self._faiss_index.ntotal)
        if not self._label_of or not len(q):
            return results
        # exact: one extra candidate shows whether the k-th score is tied with one beyond the cut
        fetch = min(n_stored, int(k) + len(self._tombstones) + (self._kind == "exact"))
        limit = n_stored if self._kind == "exact" else min(n_stored, max(fetch, HNSW_MAX_FETCH))
        if filters:
            fetch = min(limit, max(fetch, 4 * int(k)))
        dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
        pending = np.arange(len(q))
        while len(pending):
            scores, labels = self._faiss_index.search(q[pending], fetch, params=self._search_params(fetch))
            retry = []
            for row, s, lab in zip(pending.tolist(), scores, labels):
                hits, complete = self._collect(s, lab, int(k), filters, dead)
                if complete or fetch >= limit:
                    results[row] = hits
                else:
                    retry.append(row)
            pending = np.asarray(retry, dtype=np.int64)
            fetch = min(limit, 2 * fetch)
        return results

    def _search_params(self, fetch: int):
        """HNSW returns at most ``efSearch`` results, so an over-fetch widens the search to match."""
        if self._kind != "hnsw" or fetch <= self._ef_search:
            return None
        return load_faiss().SearchParametersHNSW(efSearch=int(fetch))

    def _collect(
        self, scores: np.ndarray, labels: np.ndarray, k: int, filters: dict[str, str], dead: np.ndarray
    ) -> tuple[list[SearchHit], bool]:
        """Hits of one query from its raw candidates (``dead``: tombstoned labels), and whether they are final."""
        keep = labels >= 0
        if len(dead):
            keep &= ~np.isin(labels, dead)
        s, lab = scores[keep], labels[keep]
        if filters:
            ok = np.fromiter((self._matches(self._fields[int(x)], filters) for x in lab), dtype=bool, count=len(lab))
            s, lab = s[ok], lab[ok]
        order = np.lexsort((lab, -s))  # score descending, then label ascending
        s, lab = s[order], lab[order]
        complete = len(s) >= k
        if complete and self._kind == "exact" and labels[-1] >= 0 and scores[-1] == s[k - 1]:
            complete = False  # the fetch cut through a group of tied scores: fetch more to order them
        hits = [
            SearchHit(doc_id=self._doc_of[label], score=float(score), fields=dict(self._fields[label]))
            for score, label in zip(s[:k].tolist(), lab[:k].tolist())
        ]
        return hits, complete

    @staticmethod
    def _matches(fields: dict[str, Any], filters: dict[str, str]) -> bool:
        return matches(fields, filters)

    # ------------------------------------------------------------------ persistence
    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dim": self._dim,
            "kind": self._kind,
            "metric": "cosine",
            "params": self.params,
            "model": self.model,
            "count": len(self),
            "tombstones": len(self._tombstones),
            "next_label": self._next_label,
            "faiss_version": load_faiss().__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` atomically (temp sibling, then rename over the old one).

        An existing ``directory`` is replaced only if it is empty or holds an index (a
        ``manifest.json``); anything else is refused rather than deleted.
        """
        with self._save_lock, self._lock.read():  # saves one at a time; searches go on
            out = self._save(Path(directory))
        self._path = out
        return out

    def flush(self) -> None:
        """Save again to the directory last saved to or loaded from (a :class:`ConfigError` if none)."""
        if self._path is None:
            raise ConfigError("this index has never been saved or loaded; call save(directory) first")
        self.save(self._path)

    def _save(self, directory: Path) -> Path:
        from gcl.index.store_files import save_files

        return save_files(self, directory)

    def _write_faiss(self, path: Path) -> None:
        """Write the faiss index to ``path`` (the binary kinds write a binary faiss index)."""
        load_faiss().write_index(self._faiss_index, str(path))

    def _read_faiss(self, path: Path):
        """Read what :meth:`_write_faiss` wrote (faiss raises RuntimeError on a corrupt file)."""
        return load_faiss().read_index(str(path))

    def _faiss_fits(self, raw) -> bool:
        """Whether a read faiss index is what this index keeps (an id map of the right dimension)."""
        return isinstance(raw, load_faiss().IndexIDMap2) and raw.d == self._dim

    def _write_extra(self, tmp: Path) -> None:
        """Files a subclass keeps beside the faiss index (written into the temporary directory)."""

    def _load_extra(self, directory: Path) -> None:
        """Read what :meth:`_write_extra` wrote (before the consistency check of :meth:`load`)."""

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        """Read an index written by :meth:`save`; a missing or inconsistent one is a :class:`DataError`."""
        from gcl.index.store_files import load_files

        return load_files(cls, directory)
