"""Compressed index kinds for corpora beyond RAM: faiss codes in memory, float32 vectors on disk.

At Marqo-GS scale (~10M documents) 384-d float32 vectors are 15 GB (768-d: 30 GB). A
:class:`QuantizedIndex` keeps only compact codes in RAM and the full vectors in one
memory-mapped file, and answers a query in two stages:

1. the compressed faiss index proposes ``R = rescore * k`` candidates by approximate score;
2. each candidate is re-scored exactly, ``s(q, d) = <q, x_d>`` with the stored float32 unit
   vector ``x_d`` (a cosine), and the top ``k`` by exact score are returned (ties by write order).

So the returned scores are exact cosines; only *which* documents reach the top ``R`` is
approximate. Recall@k against exact search is ``|top_k(exact) ∩ top_k(returned)| / k``.

Kinds (faiss, inner-product metric, under ``IndexIDMap2`` for string ids):

* ``sq8``: ``IndexScalarQuantizer(QT_8bit)``, one byte per dimension (4x smaller than float32),
  scanned exhaustively. Sound to ~1M; at 10M each query scans 3.8 GB of codes.
* ``hnsw_sq8``: ``IndexHNSWSQ(QT_8bit, M)``, the HNSW graph over SQ8 codes (d + ~8M bytes per
  vector). Deletes leave tombstones, as on ``hnsw``.
* ``ivfpq``: ``IndexIVFPQ(nlist, pq_m, pq_nbits)``, the kind for 1M-10M: a code is
  ``pq_m * pq_nbits / 8`` bytes (48 at the defaults, 32x smaller than 384-d float32) plus an 8-byte
  id, and a query scans only ``nprobe / nlist`` of the codes. Deletes leave tombstones
  (``IndexIDMap2`` cannot remove from an IVF index without scrambling ids).

Training rule: the quantiser (SQ8 ranges, IVF centroids, PQ codebooks) is trained once, on the
first ``train_size`` vectors written, as soon as that many are in the index, or at the first
save if there are fewer (at least :meth:`QuantParams.min_train`). Vectors written later are
encoded with that quantiser, never retrained; :meth:`compact` rebuilds (and retrains on the
first ``train_size`` live vectors). An index not yet trained (fewer vectors than the minimum)
answers by scoring every stored vector exactly.

Files (beside the ``VectorIndex`` ones, written in the same atomic save): ``vectors.npy``, the
float32 vectors of the live documents in label (write) order; ``vector_labels.npy``, their
labels. After :meth:`load` (and after each save) ``vectors.npy`` is an ``np.memmap``: the OS
pages in only the rows re-scored. Vectors written since the last save are held in RAM until the
next save. A save writes the whole vector file again (15 GB at 10M x 384).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gcl.errors import DataError
from gcl.index.base import IndexParams, QuantParams, SearchHit, load_faiss
from gcl.index.store import VectorIndex

VECTORS_FILE = "vectors.npy"
VECTOR_LABELS_FILE = "vector_labels.npy"
WRITE_ROWS = 65536  # rows per block when writing the vector file or adding to faiss


def exact_scores(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``<x_i, q>`` for each row, computed row by row (``einsum``), so equal rows get bit-equal scores and
    tie (then ordered by label). A BLAS ``rows @ q`` may round a row differently by its position in
    the block (measured: 2-3 distinct values for 7-163 copies of one row)."""
    return np.einsum("ij,j->i", rows, q)


class FloatStore:
    """Float32 unit vectors by label: a memory-mapped saved part plus rows written since (in RAM).

    ``labels`` are increasing (labels are handed out in write order), so a label's row is found
    by binary search. Rows of deleted documents stay until the next save, which keeps only the
    live ones.
    """

    def __init__(self, dim: int, labels: np.ndarray | None = None, mapped: np.ndarray | None = None) -> None:
        self.dim = dim
        self._labels = [np.asarray(labels if labels is not None else [], dtype=np.int64)]
        self._parts = [mapped if mapped is not None else np.zeros((0, dim), dtype=np.float32)]
        self._joined: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def mapped(self) -> np.ndarray:
        """The saved part (an ``np.memmap`` after a load or save)."""
        return self._parts[0]

    def append(self, labels: np.ndarray, x: np.ndarray) -> None:
        self._labels.append(np.asarray(labels, dtype=np.int64))
        self._parts.append(np.ascontiguousarray(x, dtype=np.float32))
        self._joined = None

    def _view(self) -> tuple[np.ndarray, np.ndarray]:
        """(all labels, the rows written since the save, concatenated); cached until the next append."""
        if self._joined is None:
            extra = np.concatenate(self._parts[1:]) if len(self._parts) > 1 else np.zeros((0, self.dim), np.float32)
            self._joined = (np.concatenate(self._labels), extra)
        return self._joined

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """The vectors of ``labels`` (each must be stored), in the order given."""
        all_labels, extra = self._view()
        labels = np.asarray(labels, dtype=np.int64)
        pos = np.searchsorted(all_labels, labels)
        if len(pos) and (pos.max(initial=0) >= len(all_labels) or not np.array_equal(all_labels[pos], labels)):
            raise DataError("a label has no stored vector (the index files disagree; rebuild the index)")
        out = np.empty((len(labels), self.dim), dtype=np.float32)
        n_mapped = len(self.mapped)
        old = pos < n_mapped
        if old.any():
            order = np.argsort(pos[old], kind="stable")  # read the file front to back
            idx = np.flatnonzero(old)[order]
            out[idx] = self.mapped[pos[old][order]]
        if (~old).any():
            out[~old] = extra[pos[~old] - n_mapped]
        return out

    def save(self, directory: Path, live: np.ndarray) -> np.ndarray:
        """Write the rows of the (sorted) ``live`` labels to ``directory``; returns the new memory map."""
        out = np.lib.format.open_memmap(directory / VECTORS_FILE, mode="w+", dtype=np.float32,
                                        shape=(len(live), self.dim))
        for start in range(0, len(live), WRITE_ROWS):
            out[start : start + WRITE_ROWS] = self.rows(live[start : start + WRITE_ROWS])
        out.flush()
        del out
        with open(directory / VECTORS_FILE, "rb+") as fh:
            os.fsync(fh.fileno())
        np.save(directory / VECTOR_LABELS_FILE, live)
        return np.load(directory / VECTORS_FILE, mmap_mode="r")


class QuantizedIndex(VectorIndex):
    """A :class:`VectorIndex` of a compressed kind with exact re-scoring (see the module docstring).

    Made by ``VectorIndex(dim=..., kind="sq8" | "hnsw_sq8" | "ivfpq", ...)`` or by loading such
    an index; the extra keywords are the fields of :class:`gcl.index.base.QuantParams`.

    >>> index = VectorIndex(dim=4, kind="sq8", rescore=2)
    >>> index.add(["a", "b"], [[1, 0, 0, 0], [0, 1, 1, 0]])
    >>> [(h.doc_id, round(h.score, 4)) for h in index.search([[0, 1, 0, 0]], k=1)[0]]
    [('b', 0.7071)]
    """

    def __init__(self, *, dim: int, kind: str, model: str | None = None, hnsw_m: int = IndexParams.hnsw_m,
                 ef_construction: int = IndexParams.ef_construction, ef_search: int = IndexParams.ef_search,
                 **quant: Any) -> None:
        self.quant = QuantParams(**quant)
        if kind == "ivfpq" and isinstance(dim, int):
            self.quant.check_dim(dim)
        super().__init__(dim=dim, kind=kind, hnsw_m=hnsw_m, ef_construction=ef_construction,
                         ef_search=ef_search, model=model)
        self._store = FloatStore(self._dim)
        self._trained = False

    @property
    def params(self) -> dict[str, int]:
        return {**super().params, **self.quant.__dict__}

    @property
    def rescore(self) -> int:
        """Candidates re-scored per result (``rescore * k``); settable for the searches that follow."""
        return self.quant.rescore

    @rescore.setter
    def rescore(self, value: int) -> None:
        from dataclasses import replace

        checked = replace(self.quant, rescore=value)  # QuantParams checks it
        with self._lock.write():
            self.quant = checked

    @property
    def is_trained(self) -> bool:
        """Whether the quantiser is trained (before that, searches score every vector exactly)."""
        return self._trained

    @property
    def vectors(self) -> np.ndarray:
        """The saved float32 vectors (an ``np.memmap`` after a load or save), rows in label order."""
        return self._store.mapped

    def __repr__(self) -> str:
        return (f"QuantizedIndex(dim={self._dim}, kind={self._kind!r}, len={len(self)}, "
                f"trained={self._trained}, tombstones={len(self._tombstones)})")

    # ------------------------------------------------------------------ faiss plumbing
    def _new_faiss_index(self):
        faiss = load_faiss()
        ip = faiss.METRIC_INNER_PRODUCT
        if self._kind == "sq8":
            inner = faiss.IndexScalarQuantizer(self._dim, faiss.ScalarQuantizer.QT_8bit, ip)
        elif self._kind == "hnsw_sq8":
            inner = faiss.IndexHNSWSQ(self._dim, faiss.ScalarQuantizer.QT_8bit, self._hnsw_m, ip)
            inner.hnsw.efConstruction = self._ef_construction
            inner.hnsw.efSearch = self._ef_search
        else:
            q = self.quant
            inner = faiss.IndexIVFPQ(faiss.IndexFlatIP(self._dim), self._dim, q.nlist, q.pq_m, q.pq_nbits, ip)
            inner.nprobe = q.nprobe
        return faiss.IndexIDMap2(inner)

    def _search_params(self, fetch: int):
        faiss = load_faiss()
        if self._kind == "hnsw_sq8":
            return faiss.SearchParametersHNSW(efSearch=int(max(fetch, self._ef_search)))
        if self._kind == "ivfpq":
            return faiss.SearchParametersIVF(nprobe=int(self.quant.nprobe))
        return None

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """What faiss is given for float32 unit vectors ``x`` (the vectors themselves; binary kinds: sign bits)."""
        return x

    def _live_labels(self) -> np.ndarray:
        return np.fromiter(sorted(self._doc_of), dtype=np.int64, count=len(self._doc_of))

    def _train(self) -> bool:
        """Train on the first ``train_size`` live vectors and encode every live vector (see the rule)."""
        live = self._live_labels()
        if self._trained or len(live) < self.quant.min_train(self._kind):
            return False
        self._faiss_index = self._new_faiss_index()
        self._faiss_index.train(self._encode(self._store.rows(live[: self.quant.train_size])))
        for start in range(0, len(live), WRITE_ROWS):
            block = live[start : start + WRITE_ROWS]
            self._faiss_index.add_with_ids(self._encode(self._store.rows(block)), block)
        self._tombstones = set()
        self._trained = True
        return True

    # ------------------------------------------------------------------ writes
    def _append(self, ids: list[str], x: np.ndarray, fields: list[dict[str, Any]]) -> None:
        if not ids:
            return
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._store.append(labels, x)
        if self._trained:
            self._faiss_index.add_with_ids(self._encode(x), labels)
        self._register(ids, labels, fields)
        if len(self._label_of) >= self.quant.train_size:
            self._train()

    def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        labels = self._forget(ids)
        if not self._trained:
            return  # nothing in faiss yet; the float rows are dropped at the next save
        if self._kind == "sq8":  # flat codes: faiss removes them physically
            self._faiss_index.remove_ids(np.asarray(labels, dtype=np.int64))
        else:
            self._tombstones.update(labels)

    def _compact(self) -> int:
        """Rebuild the codes from the stored vectors of the live documents (retraining the quantiser)."""
        dropped = len(self._tombstones)
        if not dropped:
            return 0
        self._trained = False
        if not self._train():
            self._faiss_index = self._new_faiss_index()
        self._tombstones = set()
        return dropped

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str):
        from gcl.index.store import IndexedDocument

        with self._lock.read():
            label = self._label_of.get(doc_id)
            if label is None:
                return None
            vector = self._store.rows(np.asarray([label]))[0]
            return IndexedDocument(doc_id=doc_id, vector=vector, fields=dict(self._fields[label]))

    def _stored_labels(self) -> np.ndarray:
        if not self._trained:
            return self._live_labels()
        return super()._stored_labels()

    def _search(self, q: np.ndarray, k: int, filters: dict[str, str]) -> list[list[SearchHit]]:
        if not self._label_of or not len(q):
            return [[] for _ in range(len(q))]
        if not self._trained:
            return [self._exact(row, k, filters) for row in q]
        if not filters and not self._tombstones:  # the common case, without building candidate hits
            fetch = min(int(self._faiss_index.ntotal), k * self.quant.rescore)
            _, labels = self._faiss_index.search(q, fetch, params=self._search_params(fetch))
            return [self._rescore_labels(row, lab[lab >= 0], k) for row, lab in zip(q, labels)]
        candidates = super()._search(q, k * self.quant.rescore, filters)
        return [self._rescore(row, hits, k) for row, hits in zip(q, candidates)]

    def _rescore_labels(self, q: np.ndarray, labels: np.ndarray, k: int) -> list[SearchHit]:
        scores = exact_scores(self._store.rows(labels), q)
        order = np.lexsort((labels, -scores))[:k]
        return [SearchHit(doc_id=self._doc_of[label], score=score, fields=dict(self._fields[label]))
                for label, score in zip(labels[order].tolist(), scores[order].tolist())]

    def _rescore(self, q: np.ndarray, hits: list[SearchHit], k: int) -> list[SearchHit]:
        """The candidates' exact cosines from the float32 vectors; best ``k``, ties by label."""
        if not hits:
            return []
        labels = np.asarray([self._label_of[h.doc_id] for h in hits], dtype=np.int64)
        scores = exact_scores(self._store.rows(labels), q)
        order = np.lexsort((labels, -scores))[:k]
        return [SearchHit(doc_id=hits[i].doc_id, score=float(scores[i]), fields=hits[i].fields) for i in order.tolist()]

    def _exact(self, q: np.ndarray, k: int, filters: dict[str, str]) -> list[SearchHit]:
        """Every live vector scored (an untrained index is small: fewer vectors than the quantiser needs)."""
        labels = self._live_labels()
        if filters:
            labels = labels[[self._matches(self._fields[int(x)], filters) for x in labels]]
        scores = exact_scores(self._store.rows(labels), q)
        order = np.lexsort((labels, -scores))[:k]
        return [SearchHit(doc_id=self._doc_of[int(labels[i])], score=float(scores[i]),
                          fields=dict(self._fields[int(labels[i])])) for i in order.tolist()]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Train the quantiser if it is not yet (the training rule), then save atomically."""
        if not self._trained:
            with self._lock.write():
                self._train()
        return super().save(directory)

    def manifest(self) -> dict[str, Any]:
        return {**super().manifest(), "trained": self._trained, "vectors_file": VECTORS_FILE}

    def _write_extra(self, tmp: Path) -> None:
        mapped = self._store.save(tmp, self._live_labels())
        # the new file is renamed into place with its directory; an open map survives the rename
        self._store = FloatStore(self._dim, np.load(tmp / VECTOR_LABELS_FILE), mapped)

    def _load_extra(self, directory: Path) -> None:
        for name in (VECTORS_FILE, VECTOR_LABELS_FILE):
            if not (directory / name).is_file():
                raise DataError(f"index file {name} is missing", source=str(directory))
        try:
            mapped = np.load(directory / VECTORS_FILE, mmap_mode="r")
            labels = np.load(directory / VECTOR_LABELS_FILE)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the stored vectors ({exc}); rebuild the index", source=str(directory)) from exc
        if mapped.shape != (len(self._doc_of), self._dim) or not np.array_equal(labels, self._live_labels()):
            raise DataError(f"{VECTORS_FILE} holds {mapped.shape} vectors but the index has {len(self._doc_of)} "
                            f"documents of dimension {self._dim}", source=str(directory))
        self._store = FloatStore(self._dim, labels, mapped)
        self._trained = bool(self._faiss_index.is_trained)
        if self._kind == "hnsw_sq8":
            self._inner().hnsw.efSearch = self._ef_search
