"""gcl evaluate's protocol through an index (gcl.evaluation.index_retriever.IndexRetriever): the exact
kind ranks as the evaluator's exact search; a compressed kind re-scoring every document does too;
rescore is a search-time setting (no rebuild); each corpus is built once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from gcl.evaluation.index_retriever import IndexRetriever  # noqa: E402
from gcl.evaluation.search import exact_search  # noqa: E402


class FakeDense:
    """Fixed embeddings by row (what DenseRetriever/PrecomputedRetriever give), counting corpus calls."""

    name = "fake"

    def __init__(self, docs: np.ndarray, queries: np.ndarray) -> None:
        self.docs, self.queries, self.corpus_calls = docs, queries, 0

    def corpus_embeddings(self, documents: pd.DataFrame) -> np.ndarray:
        self.corpus_calls += 1
        return self.docs[documents["row"].to_numpy()]

    def query_embeddings(self, queries: pd.DataFrame) -> np.ndarray:
        return self.queries[queries["row"].to_numpy()]


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def setup():
    docs, queries = unit(500, 32, 0), unit(40, 32, 1)
    docs[300:310] = docs[5]  # ties: the evaluator orders them by row, the index by write order = row
    queries[0] = docs[5]
    corpus = pd.DataFrame({"row": np.arange(500)})
    table = pd.DataFrame({"row": np.arange(40)})
    return FakeDense(docs, queries), corpus, table


def test_exact_kind_equals_the_evaluators_exact_search_ties_included(setup):
    dense, corpus, table = setup
    retriever = IndexRetriever(dense, kind="exact")
    try:
        scores, idx = retriever.search(table, corpus, 20)
        want_scores, want_idx = exact_search(dense.queries, dense.docs, 20)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)
        assert idx[0, :11].tolist() == [5, *range(300, 310)]
    finally:
        retriever.close()


@pytest.mark.parametrize("kind", ["binary", "sq8"])
def test_compressed_kind_with_full_rescoring_equals_exact_and_rescore_needs_no_rebuild(setup, kind):
    dense, corpus, table = setup
    retriever = IndexRetriever(dense, kind=kind)
    try:
        retriever.rescore = 50  # 50 x 10 = every document re-scored: exact results
        _, idx = retriever.search(table, corpus, 10)
        np.testing.assert_array_equal(idx, exact_search(dense.queries, dense.docs, 10)[1])
        retriever.rescore = 1
        _, shallow = retriever.search(table, corpus, 10)
        index, facts = retriever.index_for(corpus)
        assert index.rescore == 1 and dense.corpus_calls == 1  # one build for the corpus
        assert facts["faiss_bytes"] > 0 and facts["vectors_bytes"] >= 500 * 32 * 4
        if kind == "binary":  # 32 sign bits cannot find the exact top 10 among 10 candidates every time
            assert not np.array_equal(shallow, idx)
    finally:
        retriever.close()
    assert not retriever.work_dir.exists()


def test_padding_when_the_corpus_is_smaller_than_k(setup):
    dense, corpus, table = setup
    retriever = IndexRetriever(dense, kind="binary")
    try:
        scores, idx = retriever.search(table, corpus.iloc[:5], 8)
        assert idx.shape == (40, 8) and (idx[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    finally:
        retriever.close()


def test_an_unknown_kind_is_refused():
    from gcl.data.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown index kind 'pq'"):
        IndexRetriever(None, kind="pq")
