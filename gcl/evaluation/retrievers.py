"""Retrievers the evaluator can score: dense (a model or precomputed embeddings) and BM25.

A retriever indexes one corpus (a documents table) and returns, for a queries table, the top-k
(scores, corpus indices) with ``-1`` padding where fewer than k documents are retrieved. Dense
retrievers cache the corpus embeddings per corpus, so splits that share a corpus encode it once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from gcl.errors import DataError
from gcl.evaluation.search import exact_search


class Retriever(Protocol):
    name: str

    def search(self, queries: pd.DataFrame, documents: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of ``documents`` for each row of ``queries``: (scores, indices) of shape (nq, k)."""
        ...


def _pad(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if idx.shape[1] >= k:
        return scores, idx
    extra = k - idx.shape[1]
    return (
        np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf),
        np.pad(idx, ((0, 0), (0, extra)), constant_values=-1),
    )


class DenseRetriever:
    """Cosine top-k with any model (:class:`gcl.encoders.base.EmbeddingModel`), exact search in blocks."""

    def __init__(self, model, *, name: str = "dense", batch_size: int = 256, show_progress: bool = True,
                 cache_dir: str | Path | None = None) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.cache_dir = cache_dir  # on-disk document and query embeddings (gcl.evaluation.doc_cache); None: off
        self.encoded_documents = 0  # documents encoded so far (not read from a cache)
        self._cache: dict[int, tuple[pd.DataFrame, np.ndarray]] = {}

    def corpus_embeddings(self, documents: pd.DataFrame) -> np.ndarray:
        hit = self._cache.get(id(documents))
        if hit is not None and hit[0] is documents:
            return hit[1]
        self._cache = {}  # free the previous corpus first
        if self.cache_dir is None:
            emb = self.model.encode_documents(documents, batch_size=self.batch_size, show_progress=self.show_progress)
            self.encoded_documents += len(documents)
        else:
            from gcl.evaluation.doc_cache import encode_documents_cached

            emb, n = encode_documents_cached(self.model, documents, cache_dir=self.cache_dir,
                                             batch_size=self.batch_size, show_progress=self.show_progress)
            self.encoded_documents += n
        self._cache = {id(documents): (documents, emb)}  # keep one corpus: bounded memory
        return emb

    def query_embeddings(self, queries: pd.DataFrame) -> np.ndarray:
        if self.cache_dir is None:
            return self.model.encode_queries(queries, batch_size=self.batch_size, show_progress=False)
        from gcl.evaluation.doc_cache import encode_cached

        q, _ = encode_cached(self.model, queries, "query", cache_dir=self.cache_dir, batch_size=self.batch_size)
        return q

    def search(self, queries: pd.DataFrame, documents: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.corpus_embeddings(documents)
        return _pad(*exact_search(self.query_embeddings(queries), d, k), k)


class PrecomputedRetriever:
    """Dense retrieval from embeddings computed elsewhere.

    ``directory`` holds ``queries.npy`` + ``query_ids.txt`` and ``documents.npy`` + ``doc_ids.txt``
    (one id per line, same order as the rows). Vectors are L2-normalised here. The ``.npy`` files
    are not loaded: each search gathers the rows it needs, normalised, in windows
    (:class:`gcl.evaluation.vector_file.VectorFile`), and the last corpus gathered is kept, so
    splits sharing a corpus table gather it once and memory holds one corpus's vectors at a time.
    """

    def __init__(self, directory: str | Path, *, name: str = "precomputed") -> None:
        self.name = name
        root = Path(directory)
        self._q = self._open(root / "queries.npy", root / "query_ids.txt")
        self._d = self._open(root / "documents.npy", root / "doc_ids.txt")
        self._corpus: tuple[pd.DataFrame, np.ndarray] | None = None

    @staticmethod
    def _open(vec_path: Path, ids_path: Path):
        from gcl.evaluation.vector_file import VectorFile

        for p in (vec_path, ids_path):
            if not p.is_file():
                raise DataError("file not found (precomputed embeddings need vectors .npy and ids .txt)", source=str(p))
        vecs = VectorFile(vec_path)
        ids = ids_path.read_text(encoding="utf-8").splitlines()
        if len(ids) != vecs.shape[0]:
            raise DataError(f"{len(ids)} ids for an array of shape {vecs.shape}", source=str(vec_path))
        return {i: n for n, i in enumerate(ids)}, vecs

    def _rows(self, table, ids, what: str) -> np.ndarray:
        lookup, vecs = table
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise DataError(f"{len(missing)} {what} have no precomputed embedding, e.g. {missing[0]!r}")
        return vecs.gather(np.fromiter(map(lookup.__getitem__, ids), dtype=np.int64, count=len(ids)))

    def corpus_embeddings(self, documents: pd.DataFrame) -> np.ndarray:
        if self._corpus is None or self._corpus[0] is not documents:  # identity: ids are reused
            self._corpus = None  # free the previous corpus before gathering the next
            self._corpus = (documents, self._rows(self._d, documents.index, "documents"))
        return self._corpus[1]

    def query_embeddings(self, queries: pd.DataFrame) -> np.ndarray:
        return self._rows(self._q, queries.index, "queries")

    def search(self, queries: pd.DataFrame, documents: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.query_embeddings(queries)
        return _pad(*exact_search(q, self.corpus_embeddings(documents), k), k)


class BM25Retriever:
    """BM25 via ``bm25s`` with the settings and tokenisation of :mod:`gcl.index.lexical`
    (:class:`~gcl.index.lexical.BM25Params`: Lucene variant, k1=1.5, b=0.75, English stop words,
    no stemming).

    Documents are indexed on the concatenation of their text fields. Only documents sharing a
    term with the query are retrieved (score > 0); the rest of the k slots are padding.
    """

    def __init__(self, *, text_fields: list[str] | None = None, name: str = "bm25", params=None):
        from gcl.index.lexical import BM25Params

        self.name = name
        self.text_fields = text_fields
        self.params = params or BM25Params()
        self._index: tuple[pd.DataFrame, object] | None = None

    def search(self, queries: pd.DataFrame, documents: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        from gcl.index.lexical import table_texts, tokenize
        import bm25s

        if self._index is None or self._index[0] is not documents:  # identity, not id(): ids are reused
            bm = bm25s.BM25(k1=self.params.k1, b=self.params.b)
            bm.index(tokenize(table_texts(documents, self.text_fields), self.params), show_progress=False)
            self._index = (documents, bm)
        bm = self._index[1]
        q_tokens = tokenize(table_texts(queries), self.params, ids=False)
        kk = min(k, len(documents))
        idx, scores = bm.retrieve(q_tokens, k=kk, show_progress=False, n_threads=1)
        idx = idx.astype(np.int64)
        scores = scores.astype(np.float32)
        idx[scores <= 0] = -1
        scores[scores <= 0] = -np.inf
        return _pad(scores, idx, k)


class HybridRetriever:
    """Dense and BM25 top-k fused per query (:mod:`gcl.index.hybrid`: RRF or convex combination).

    Each side retrieves ``k`` candidates (the evaluation depth); the fused list is cut to ``k``.
    Keys are corpus rows, so fusion ties fall back to first appearance (dense rank 1, lexical
    rank 1, dense rank 2, ...).
    """

    def __init__(self, dense: Retriever, lexical: Retriever, params=None, *, name: str = "hybrid") -> None:
        from gcl.index.hybrid import HybridParams

        self.dense, self.lexical = dense, lexical
        self.params = params or HybridParams()
        self.name = name

    def search(self, queries: pd.DataFrame, documents: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
        from gcl.index.hybrid import fuse_pair

        ds, di = self.dense.search(queries, documents, k)
        ls, li = self.lexical.search(queries, documents, k)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        for row in range(len(queries)):
            d, lx = di[row] >= 0, li[row] >= 0
            keys, fused = fuse_pair((di[row][d], ds[row][d]), (li[row][lx], ls[row][lx]), self.params)
            n = min(k, len(keys))
            idx[row, :n], scores[row, :n] = keys[:n], fused[:n]
        return scores, idx
