"""exact_search: equal to a full-matrix reference whatever the blocks, ties by index, equal to faiss.

Every reference test runs on both backends: faiss (the default when installed) and torch (the
blockwise fallback, the implementation before faiss was used for scoring).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.evaluation.search import exact_search

try:
    import faiss  # noqa: F401

    HAVE_FAISS = True
except ImportError:  # pragma: no cover
    HAVE_FAISS = False


def reference_topk(q: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole score matrix, then per row: score descending, corpus index ascending on ties."""
    s = q @ c.T
    k = min(k, c.shape[0])
    idx = np.stack([np.lexsort((np.arange(len(row)), -row))[:k] for row in s]) if len(s) else np.zeros((0, k), int)
    return np.take_along_axis(s, idx, axis=1), idx


def integer_vectors(rng: np.random.Generator, n: int, d: int, high: int = 3) -> np.ndarray:
    """Small integers: every dot product is exact in float32, so block order cannot change a score
    and ties are frequent (the tie rule is exercised, not just the order of distinct scores)."""
    return rng.integers(-high, high + 1, size=(n, d)).astype(np.float32)


BLOCKS = [(1, 1), (3, 7), (5, 2), (7, 13), (16, 50), (64, 1000), (1024, 65536)]
KS = [1, 4, 10, 53, 60]  # 53 = n_docs; 60 > n_docs
BACKENDS = [pytest.param("faiss", marks=pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed")), "torch"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.mark.parametrize("query_block,doc_block", BLOCKS)
@pytest.mark.parametrize("k", KS)
def test_equals_full_matrix_reference_exact_scores(query_block, doc_block, k, backend):
    rng = np.random.default_rng(query_block * 1000 + doc_block + k)
    q, c = integer_vectors(rng, 9, 6), integer_vectors(rng, 53, 6)
    scores, idx = exact_search(q, c, k, query_block=query_block, doc_block=doc_block, backend=backend)
    ref_s, ref_i = reference_topk(q, c, k)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    assert idx.shape == (9, min(k, 53))
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(
    n_q=st.integers(0, 12),
    n_d=st.integers(1, 40),
    d=st.integers(1, 5),
    k=st.integers(0, 45),
    query_block=st.integers(1, 13),
    doc_block=st.integers(1, 45),
    high=st.integers(0, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_equals_reference_for_any_blocks(backend, n_q, n_d, d, k, query_block, doc_block, high, seed):
    rng = np.random.default_rng(seed)
    q, c = integer_vectors(rng, n_q, d, high), integer_vectors(rng, n_d, d, high)
    scores, idx = exact_search(q, c, k, query_block=query_block, doc_block=doc_block, backend=backend)
    ref_s, ref_i = reference_topk(q, c, k)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


@pytest.mark.parametrize("query_block,doc_block", [(1, 7), (4, 10), (2, 397), (256, 4096)])
def test_random_floats_match_numpy_argsort(query_block, doc_block, backend):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((17, 24)).astype(np.float32)
    c = rng.standard_normal((500, 24)).astype(np.float32)
    k = 25
    scores, idx = exact_search(q, c, k, query_block=query_block, doc_block=doc_block, backend=backend)
    full = q @ c.T
    ref_i = np.argsort(-full, axis=1, kind="stable")[:, :k]
    ref_s = np.take_along_axis(full, ref_i, axis=1)
    np.testing.assert_allclose(scores, ref_s, rtol=0, atol=1e-5)
    # blocked and full matmuls may round differently: compare indices where scores are not near-tied
    gap = np.abs(np.diff(np.take_along_axis(full, np.argsort(-full, axis=1)[:, : k + 1], axis=1), axis=1))
    clear = np.ones_like(idx, dtype=bool)
    clear[:, 1:] &= gap[:, :-1] > 1e-4
    clear &= gap[:, :k] > 1e-4
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(idx[clear], ref_i[clear])


@pytest.mark.parametrize("doc_block", [1, 2, 3, 4, 5, 10, 100])
def test_ties_across_block_boundaries_resolve_to_lower_index(doc_block, backend):
    #               0  1  2  3  4  5  6  7  8  9
    doc_scores = [1, 2, 2, 2, 1, 2, 2, 0, 2, 2]
    c = np.asarray(doc_scores, dtype=np.float32)[:, None]
    q = np.ones((2, 1), dtype=np.float32)
    scores, idx = exact_search(q, c, 4, doc_block=doc_block, query_block=1, backend=backend)
    np.testing.assert_array_equal(idx, [[1, 2, 3, 5]] * 2)
    np.testing.assert_array_equal(scores, [[2, 2, 2, 2]] * 2)
    scores, idx = exact_search(q, c, 9, doc_block=doc_block, backend=backend)
    np.testing.assert_array_equal(idx[0], [1, 2, 3, 5, 6, 8, 9, 0, 4])


@pytest.mark.parametrize("doc_block", [3, 7, 64, 65536])
def test_all_equal_scores_give_the_first_k_documents(doc_block, backend):
    # torch.topk and faiss pick arbitrarily among equal values; the search must not
    c = np.ones((200, 4), dtype=np.float32)
    q = np.ones((3, 4), dtype=np.float32)
    _, idx = exact_search(q, c, 5, doc_block=doc_block, backend=backend)
    np.testing.assert_array_equal(idx, np.tile(np.arange(5), (3, 1)))


def test_k_larger_than_corpus_returns_every_document_sorted(backend):
    rng = np.random.default_rng(0)
    q, c = integer_vectors(rng, 4, 3), integer_vectors(rng, 6, 3)
    scores, idx = exact_search(q, c, 1000, doc_block=4, backend=backend)
    assert idx.shape == (4, 6)
    assert all(sorted(row) == list(range(6)) for row in idx.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()


def test_accepts_tensors_and_float64(backend):
    rng = np.random.default_rng(1)
    q, c = rng.standard_normal((5, 8)), rng.standard_normal((30, 8))
    s_np, i_np = exact_search(q, c, 7, doc_block=9, backend=backend)
    s_t, i_t = exact_search(torch.from_numpy(q), torch.from_numpy(c), 7, doc_block=9, backend=backend)
    assert s_np.dtype == np.float32
    np.testing.assert_array_equal(i_np, i_t)
    np.testing.assert_array_equal(s_np, s_t)


def test_no_queries_and_k_zero(backend):
    c = np.eye(4, dtype=np.float32)
    s, i = exact_search(np.zeros((0, 4), np.float32), c, 3, backend=backend)
    assert s.shape == i.shape == (0, 3)
    s, i = exact_search(np.ones((2, 4), np.float32), c, 0, backend=backend)
    assert s.shape == i.shape == (2, 0)


def test_bad_inputs_raise_value_error():
    q = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="empty corpus"):
        exact_search(q, np.zeros((0, 4), np.float32), 3)
    with pytest.raises(ValueError, match="same width"):
        exact_search(q, np.ones((5, 3), np.float32), 3)
    with pytest.raises(ValueError, match="2-D"):
        exact_search(np.ones(4, np.float32), np.ones((5, 4), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        exact_search(q, np.ones((5, 4), np.float32), -1)
    with pytest.raises(ValueError, match="backend must be"):
        exact_search(q, np.ones((5, 4), np.float32), 1, backend="blas")


def _normalised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [10, 100])
def test_equals_faiss_index_flat_ip(k):
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    q, c = _normalised(rng, 50, 32), _normalised(rng, 3000, 32)
    index = faiss.IndexFlatIP(32)
    index.add(c)
    f_s, f_i = index.search(q, k + 1)  # one more to see whether the k-th score is tied
    scores, idx = exact_search(q, c, k, query_block=16, doc_block=700)
    np.testing.assert_allclose(scores, f_s[:, :k], rtol=0, atol=1e-5)
    gap = np.abs(np.diff(f_s, axis=1))  # (n, k): gap between rank j and j+1
    untied = np.ones((len(q), k), dtype=bool)
    untied &= gap[:, :k] > 1e-5
    untied[:, 1:] &= gap[:, : k - 1] > 1e-5
    assert untied.mean() > 0.9
    np.testing.assert_array_equal(idx[untied], f_i[:, :k][untied])


@pytest.mark.parametrize("k", [1, 10, 100])
def test_duplicate_documents_tied_at_the_cut(k, backend):
    """Many exact duplicates (a corpus with repeated titles): rows are tied at the cut far more
    often than on distinct vectors, and the faiss backend must widen its search until every tied
    document is a candidate. Reference: the full matrix from the same vectors. Small-integer
    vectors, so every dot product is exact in float32: duplicates score bit-identically whatever
    kernel computes them (with float vectors a BLAS may round one tile's copy of a duplicate one
    ulp apart from another's: on an AMD EPYC it did, for numpy's full matrix and for the blocks)."""
    rng = np.random.default_rng(k)
    distinct = integer_vectors(rng, 40, 16)
    c = distinct[rng.integers(0, 40, size=1500)]  # ~37 copies of each vector, in random order
    q = integer_vectors(rng, 30, 16)
    ref_s, ref_i = reference_topk(q, c, k)
    scores, idx = exact_search(q, c, k, query_block=7, doc_block=64, backend=backend)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(scores, ref_s)


@pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed")
@pytest.mark.parametrize("k", [10, 1000])
def test_faiss_backend_equals_torch_backend_on_random_floats(k):
    """The new default (faiss scoring) against the previous implementation (torch blocks) on
    normalised float vectors with a few duplicated documents: same indices, scores to 1e-6."""
    rng = np.random.default_rng(11)
    c = _normalised(rng, 5000, 48)
    c[4000:4100] = c[:100]  # exact duplicates: ties resolved by index in both
    q = c[:64] + 0.3 * _normalised(rng, 64, 48)  # near documents 0..63, so their copies tie in the top
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s_f, i_f = exact_search(q, c, k, doc_block=1024, backend="faiss")
    s_t, i_t = exact_search(q, c, k, doc_block=1024, backend="torch")
    np.testing.assert_allclose(s_f, s_t, rtol=0, atol=1e-6)
    # scores computed in a different summation order may swap two documents closer than 1e-6
    gap_t, gap_f = np.abs(np.diff(s_t, axis=1)), np.abs(np.diff(s_f, axis=1))
    near = ((gap_t < 1e-6) | (gap_f < 1e-6)) & ~((gap_t == 0) & (gap_f == 0))  # ties in both: no excuse
    close = np.zeros_like(i_f, dtype=bool)
    close[:, 1:] |= near
    close[:, :-1] |= near
    assert close.mean() < 0.1
    np.testing.assert_array_equal(i_f[~close], i_t[~close])
    # the exact ties (a document and its copy) are never excused: the lower index comes first
    for i in (i_f, i_t):
        for row in range(len(q)):
            where = {int(d): r for r, d in enumerate(i[row])}
            assert where[row] + 1 == where[4000 + row]


def test_default_backend_is_faiss_when_installed(monkeypatch):
    import gcl.evaluation.search as search

    calls = []
    real = search._faiss_knn
    monkeypatch.setattr(search, "_faiss_knn", lambda *a: calls.append(1) or real(*a))
    if HAVE_FAISS:
        exact_search(np.ones((2, 3), np.float32), np.eye(3, dtype=np.float32), 2)
        assert calls
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # faiss absent: torch fallback
    calls.clear()
    s, i = exact_search(np.ones((2, 3), np.float32), np.eye(3, dtype=np.float32), 2)
    assert not calls and i.tolist() == [[0, 1], [0, 1]]
