"""Binary-code index kinds: one sign bit per dimension in RAM, float32 vectors on disk, exact re-scoring.

A unit vector ``x`` in ``d`` dimensions is kept in RAM as its sign bits

.. math::
    b(x)_i = [x_i > 0], \\qquad i = 1..d

packed into ``ceil(d / 8)`` bytes (48 bytes for 384-d MiniLM: 32x smaller than float32; the bits
that pad ``d`` to a multiple of 8 are 0 for every vector, so they never count). A query ``q`` is
answered in two stages, like the other compressed kinds (:mod:`gcl.index.quantized`):

1. candidates: the ``R = rescore * k`` live documents nearest to ``q`` in Hamming distance

   .. math::
       h(q, x) = \\operatorname{popcount}(b(q) \\oplus b(x)),

   ties broken by label (write order, earlier first). ``binary`` finds them exactly
   (faiss ``IndexBinaryFlat``, a scan of every code); ``binary_hnsw`` approximately (faiss
   ``IndexBinaryHNSW``, a graph over the codes; ``ef_search`` raised to the fetch size);
2. each candidate is re-scored exactly, ``s(q, x) = <q, x>`` with the stored float32 unit
   vector (a cosine), and the best ``k`` are returned, ties by label.

Sign bits are the cheapest code there is (no training, no codebook: a vector's code does not
depend on the others), but they keep only the orthant of each vector: two documents on the
same side of every coordinate plane are indistinguishable before re-scoring. They work when
embeddings spread over the coordinates (the fraction of differing bits then tracks the angle,
as in random-hyperplane hashing, Charikar 2002); how deep the re-scoring must go on real
embeddings is measured in docs/index.md.

Writes: ``binary`` removes codes physically (a delete or the replaced half of an upsert);
``binary_hnsw`` leaves tombstones, dropped by :meth:`compact`, as the other HNSW kinds. Filters
and tombstones widen the Hamming fetch until ``R`` live matching candidates are found.

Files: as :class:`~gcl.index.quantized.QuantizedIndex` (``vectors.npy`` memory-mapped,
``vector_labels.npy``), with ``vectors.faiss`` a faiss *binary* index
(``faiss.write_index_binary``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gcl.index.base import IndexParams, load_faiss
from gcl.index.quantized import QuantizedIndex
from gcl.index.store import HNSW_MAX_FETCH


def sign_codes(x: np.ndarray) -> np.ndarray:
    """``(n, ceil(d / 8))`` uint8: bit ``i`` of row ``r`` is ``x[r, i] > 0`` (``np.packbits``, zero-padded)."""
    return np.packbits(np.asarray(x) > 0, axis=1)


def code_bits(dim: int) -> int:
    """Bits per code: ``dim`` rounded up to a multiple of 8 (faiss binary indexes work in bytes)."""
    return 8 * -(-int(dim) // 8)


class BinaryIndex(QuantizedIndex):
    """A :class:`~gcl.index.store.VectorIndex` of kind ``binary`` or ``binary_hnsw`` (module docstring).

    >>> from gcl.index import VectorIndex
    >>> index = VectorIndex(dim=4, kind="binary", rescore=2)
    >>> index.add(["a", "b"], [[1, 0, 0, 0], [0, 1, 1, 0]])
    >>> [(h.doc_id, round(h.score, 4)) for h in index.search([[0, 1, 0, 0]], k=1)[0]]
    [('b', 0.7071)]
    """

    def __init__(self, *, dim: int, kind: str, model: str | None = None, hnsw_m: int = IndexParams.hnsw_m,
                 ef_construction: int = IndexParams.ef_construction, ef_search: int = IndexParams.ef_search,
                 **quant: Any) -> None:
        super().__init__(dim=dim, kind=kind, model=model, hnsw_m=hnsw_m, ef_construction=ef_construction,
                         ef_search=ef_search, **quant)
        self._trained = True  # sign bits need no training: codes go into faiss from the first add

    def __repr__(self) -> str:
        return f"BinaryIndex(dim={self._dim}, kind={self._kind!r}, len={len(self)}, tombstones={len(self._tombstones)})"

    # ------------------------------------------------------------------ faiss plumbing
    def _new_faiss_index(self):
        faiss = load_faiss()
        bits = code_bits(self._dim)
        if self._kind == "binary":
            inner = faiss.IndexBinaryFlat(bits)
        else:
            inner = faiss.IndexBinaryHNSW(bits, self._hnsw_m)
            inner.hnsw.efConstruction = self._ef_construction
            inner.hnsw.efSearch = self._ef_search
        return faiss.IndexBinaryIDMap2(inner)

    def _inner(self):
        return load_faiss().downcast_IndexBinary(self._faiss_index.index)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return sign_codes(x)

    def _search_params(self, fetch: int):
        if self._kind != "binary_hnsw":
            return None
        return load_faiss().SearchParametersHNSW(efSearch=int(max(fetch, self._ef_search)))

    def _write_faiss(self, path: Path) -> None:
        load_faiss().write_index_binary(self._faiss_index, str(path))

    def _read_faiss(self, path: Path):
        return load_faiss().read_index_binary(str(path))

    def _faiss_fits(self, raw) -> bool:
        return isinstance(raw, load_faiss().IndexBinaryIDMap2) and raw.d == code_bits(self._dim)

    def manifest(self) -> dict[str, Any]:
        return {**super().manifest(), "code_bits": code_bits(self._dim)}

    # ------------------------------------------------------------------ writes
    def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        labels = self._forget(ids)
        if self._kind == "binary":  # flat codes: faiss removes them physically
            self._faiss_index.remove_ids(np.asarray(labels, dtype=np.int64))
        else:  # an HNSW graph cannot lose a node
            self._tombstones.update(labels)

    def _compact(self) -> int:
        dropped = super()._compact()  # re-encodes the live vectors (an empty index stays empty)
        self._trained = True
        return dropped

    # ------------------------------------------------------------------ reads
    def _search(self, q: np.ndarray, k: int, filters: dict[str, str]):
        if not self._label_of or not len(q):
            return [[] for _ in range(len(q))]
        candidates = self._candidates(sign_codes(q), k * self.quant.rescore, filters)
        return [self._rescore_labels(row, labels, k) for row, labels in zip(q, candidates)]

    def _candidates(self, codes: np.ndarray, r: int, filters: dict[str, str]) -> list[np.ndarray]:
        """Per query, the labels of the ``r`` nearest live documents matching ``filters`` (Hamming
        distance, then label). Exact on ``binary``: the fetch widens until it reaches past the
        ``r``-th distance, so a group of equal distances at the cut is ordered by label, not by faiss."""
        n_stored = int(self._faiss_index.ntotal)
        dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
        fetch = min(n_stored, 2 * r + len(dead))  # twice r: one fetch usually passes the ties at the cut
        limit = n_stored if self._kind == "binary" else min(n_stored, max(fetch, HNSW_MAX_FETCH))
        if filters:
            fetch = min(limit, max(fetch, 4 * r))
        out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(codes)
        pending = np.arange(len(codes))
        while len(pending):
            dist, labels = self._faiss_index.search(codes[pending], fetch, params=self._search_params(fetch))
            retry = []
            for row, d, lab in zip(pending.tolist(), dist, labels):
                nearest, complete = self._nearest(d, lab, r, filters, dead)
                if complete or fetch >= limit:
                    out[row] = nearest
                else:
                    retry.append(row)
            pending = np.asarray(retry, dtype=np.int64)
            fetch = min(limit, 2 * fetch)
        return out

    def _nearest(self, dist: np.ndarray, labels: np.ndarray, r: int, filters: dict[str, str],
                 dead: np.ndarray) -> tuple[np.ndarray, bool]:
        """The best ``r`` of one query's raw candidates by (distance, label), and whether they are final."""
        valid = labels >= 0
        keep = valid.copy()
        if len(dead):
            keep &= ~np.isin(labels, dead)
        d, lab = dist[keep], labels[keep]
        if filters:
            ok = np.fromiter((self._matches(self._fields[int(x)], filters) for x in lab), dtype=bool, count=len(lab))
            d, lab = d[ok], lab[ok]
        order = np.lexsort((lab, d))
        d, lab = d[order], lab[order]
        if not valid.all():  # faiss had no more codes to give
            return lab[:r], True
        if len(lab) < r:
            return lab, False
        # binary: final once the fetch reached past the r-th distance (nothing unseen can tie with it)
        complete = self._kind != "binary" or int(dist[valid].max()) > int(d[r - 1])
        return lab[:r], complete
