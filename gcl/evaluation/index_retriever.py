"""Evaluate retrieval through a gcl vector index of any kind (what ``gcl search`` and ``gcl serve`` answer).

:class:`IndexRetriever` wraps a dense retriever (:class:`~gcl.evaluation.retrievers.DenseRetriever`
or :class:`~gcl.evaluation.retrievers.PrecomputedRetriever`: anything with ``corpus_embeddings``
and ``query_embeddings``): it builds a :class:`gcl.index.VectorIndex` of ``kind`` over the corpus
embeddings (ids = row positions), saves and reloads it (so a compressed kind is trained and
re-scores from its memory-mapped ``vectors.npy``, as a served index does), and answers each
query with ``index.search(q, k)``. With ``kind="exact"`` the ranking equals the evaluator's
exact search (ties by row, both). Built indexes are kept per corpus (splits sharing a corpus
build it once); ``rescore`` and ``ef_search`` may change between searches without a rebuild.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class IndexRetriever:
    """Top-k through a ``kind`` index over a dense retriever's embeddings (module docstring).

    ``params``: keywords of :class:`gcl.index.VectorIndex` (HNSW settings, the fields of
    :class:`gcl.index.base.QuantParams`). ``work_dir``: where indexes are saved (a temporary
    directory by default, removed by :meth:`close`).
    """

    def __init__(self, dense, *, kind: str, name: str | None = None, work_dir: str | Path | None = None,
                 **params: Any) -> None:
        from gcl.index.base import IndexParams

        IndexParams(kind=kind)  # an unknown kind fails here
        self.dense = dense
        self.kind = kind
        self.name = name or f"{getattr(dense, 'name', 'dense')}@{kind}"
        self.params = params
        self.rescore: int | None = None  # override the index's rescore (compressed kinds) for the next searches
        self.ef_search: int | None = None  # override the index's ef_search (HNSW kinds)
        self.last_search_s = 0.0  # seconds of the last index.search call (all queries of one search())
        self._own_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="gcl-eval-index-")) if work_dir is None else Path(work_dir)
        self._built: list[tuple[pd.DataFrame, Any, dict[str, float]]] = []  # (corpus, index, build facts)

    def index_for(self, documents: pd.DataFrame):
        """``(index, facts)`` over ``documents``: built, saved and reloaded on first use.
        ``facts``: ``build_s``, ``faiss_bytes`` (the codes or vectors faiss holds) and ``vectors_bytes``
        (the float32 file on disk of a compressed kind)."""
        from gcl.index import VectorIndex

        for corpus, index, facts in self._built:
            if corpus is documents:  # identity: a corpus table is shared by its splits
                return index, facts
        x = np.asarray(self.dense.corpus_embeddings(documents), dtype=np.float32)
        out = self.work_dir / f"{self.kind}-{len(self._built)}"
        t0 = time.perf_counter()
        built = VectorIndex(dim=x.shape[1], kind=self.kind, **self.params)
        built.add([str(i) for i in range(len(x))], x)
        built.save(out)
        seconds = time.perf_counter() - t0
        del built
        index = VectorIndex.load(out)
        vectors = out / "vectors.npy"
        facts = {"build_s": seconds, "faiss_bytes": (out / "vectors.faiss").stat().st_size,
                 "vectors_bytes": vectors.stat().st_size if vectors.is_file() else 0}
        self._built.append((documents, index, facts))
        return index, facts

    def search(self, queries: pd.DataFrame, documents: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        index, _ = self.index_for(documents)
        if self.rescore is not None:
            index.rescore = self.rescore
        if self.ef_search is not None:
            index.ef_search = self.ef_search
        q = np.asarray(self.dense.query_embeddings(queries), dtype=np.float32)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        idx = np.full((len(q), k), -1, dtype=np.int64)
        t0 = time.perf_counter()
        found = index.search(q, min(k, len(index)))
        self.last_search_s = time.perf_counter() - t0
        for row, hits in enumerate(found):
            idx[row, : len(hits)] = [int(h.doc_id) for h in hits]
            scores[row, : len(hits)] = [h.score for h in hits]
        return scores, idx

    def close(self) -> None:
        """Drop the built indexes (and the temporary directory this retriever made)."""
        self._built = []
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
