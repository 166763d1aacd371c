"""Retrievers: BM25 on a hand-made corpus, precomputed embeddings from files, dense caching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gcl.data.errors import DataError
from gcl.evaluation.retrievers import BM25Retriever, DenseRetriever, PrecomputedRetriever
from gcl.evaluation.search import exact_search

TITLES = {
    "a": "red cotton shirt",
    "b": "blue steel lamp",
    "c": "red oak table",
    "d": "green wool rug",
    "e": "blue cotton shirt",
}


def table(values: dict[str, str], column: str, index: str, dtype=str) -> pd.DataFrame:
    return pd.DataFrame({column: pd.array(list(values.values()), dtype=dtype)},
                        index=pd.Index(list(values), name=index))


def documents(dtype=str) -> pd.DataFrame:
    return table(TITLES, "title", "doc_id", dtype)


def queries(texts: list[str], dtype=str) -> pd.DataFrame:
    return table({f"q{i}": t for i, t in enumerate(texts)}, "query", "query_id", dtype)


# ---------------------------------------------------------------------------------------- BM25
@pytest.mark.parametrize("dtype", [str, object])  # pandas >= 3 reads text as "str", older as object
def test_bm25_ranks_the_obvious_documents_first(dtype):
    docs = documents(dtype)
    scores, idx = BM25Retriever().search(queries(["red shirt", "steel lamp", "wool"], dtype), docs, 5)
    assert idx.shape == scores.shape == (3, 5)
    ids = docs.index.to_numpy()
    # "red shirt": a has both terms; c (red) and e (shirt) one each; b and d none -> padding
    assert ids[idx[0, 0]] == "a"
    assert set(ids[idx[0, 1:3]]) == {"c", "e"}
    assert idx[0, 3:].tolist() == [-1, -1]
    assert ids[idx[1, 0]] == "b" and idx[1, 1:].tolist() == [-1] * 4
    assert ids[idx[2, 0]] == "d" and idx[2, 1:].tolist() == [-1] * 4
    real = idx >= 0
    assert np.isfinite(scores[real]).all() and (scores[real] > 0).all()
    assert np.isneginf(scores[~real]).all()
    assert all((np.diff(row[row > -np.inf]) <= 0).all() for row in scores)


def test_bm25_queries_without_a_known_term_are_all_padding():
    # unknown words, only stop words, empty text: nothing is retrieved and nothing crashes
    scores, idx = BM25Retriever().search(queries(["zzzz qqqq", "the and of", ""]), documents(), 3)
    assert (idx == -1).all()
    assert np.isneginf(scores).all()


def test_bm25_unknown_terms_next_to_known_ones_are_ignored():
    r = BM25Retriever()
    docs = documents()
    s_known, i_known = r.search(queries(["lamp"]), docs, 3)
    s_mixed, i_mixed = r.search(queries(["lamp xyzzy plugh"]), docs, 3)
    np.testing.assert_array_equal(i_known, i_mixed)
    np.testing.assert_allclose(s_known, s_mixed)
    assert docs.index[i_mixed[0, 0]] == "b"


def test_bm25_pads_to_k_beyond_the_corpus_size():
    scores, idx = BM25Retriever().search(queries(["cotton shirt"]), documents(), 50)
    assert idx.shape == (1, 50)
    assert sorted(documents().index[idx[0, :2]]) == ["a", "e"]
    assert (idx[0, 2:] == -1).all()


def test_bm25_does_not_index_image_paths():
    docs = documents().assign(image_local=pd.array(["img/red.jpg"] * 5, dtype=str))
    _, idx = BM25Retriever().search(queries(["red"]), docs, 5)
    assert sorted(docs.index[idx[0][idx[0] >= 0]]) == ["a", "c"]


def test_bm25_text_fields_choose_the_columns():
    docs = documents().assign(brand=pd.array(["acme", "acme", "umbra", "umbra", "umbra"], dtype=str))
    _, idx = BM25Retriever(text_fields=["brand"]).search(queries(["acme shirt"]), docs, 5)
    assert sorted(docs.index[idx[0][idx[0] >= 0]]) == ["a", "b"]


def test_bm25_reindexes_for_another_corpus():
    r = BM25Retriever()
    first = documents()
    r.search(queries(["lamp"]), first, 2)
    other = table({"x": "wooden lamp", "y": "glass lamp shade", "z": "rug"}, "title", "doc_id")
    _, idx = r.search(queries(["lamp shade"]), other, 3)
    assert other.index[idx[0, 0]] == "y" and other.index[idx[0, 1]] == "x" and idx[0, 2] == -1


# -------------------------------------------------------------------------- precomputed vectors
def write_embeddings(root, q_ids, q_vecs, d_ids, d_vecs):
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "queries.npy", q_vecs)
    np.save(root / "documents.npy", d_vecs)
    (root / "query_ids.txt").write_text("\n".join(q_ids) + "\n", encoding="utf-8")
    (root / "doc_ids.txt").write_text("\n".join(d_ids) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def embeddings(tmp_path):
    rng = np.random.default_rng(0)
    q_ids = [f"q{i}" for i in range(6)]
    d_ids = [f"d{i}" for i in range(40)]
    q_vecs = rng.standard_normal((6, 8)).astype(np.float32)
    d_vecs = rng.standard_normal((40, 8)) * rng.uniform(0.1, 10, size=(40, 1))  # float64, not unit
    return write_embeddings(tmp_path / "emb", q_ids, q_vecs, d_ids, d_vecs), q_ids, q_vecs, d_ids, d_vecs


def test_precomputed_round_trip_looks_rows_up_by_id(embeddings):
    root, q_ids, q_vecs, d_ids, d_vecs = embeddings
    rng = np.random.default_rng(1)
    q_order = rng.permutation(len(q_ids))[:4]
    d_order = rng.permutation(len(d_ids))  # the table's order, not the file's, defines indices
    qs = pd.DataFrame({"query": "x"}, index=pd.Index(np.asarray(q_ids)[q_order], name="query_id"))
    ds = pd.DataFrame({"title": "y"}, index=pd.Index(np.asarray(d_ids)[d_order], name="doc_id"))
    scores, idx = PrecomputedRetriever(root).search(qs, ds, 10)

    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    ref_s, ref_i = exact_search(unit(q_vecs[q_order]), unit(d_vecs[d_order]), 10)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-6)
    assert np.abs(scores).max() <= 1 + 1e-6  # cosine: the vectors were normalised on load


def test_precomputed_pads_when_k_exceeds_the_corpus(embeddings):
    root, q_ids, *_ = embeddings
    qs = pd.DataFrame({"query": "x"}, index=pd.Index(q_ids[:2], name="query_id"))
    ds = pd.DataFrame({"title": "y"}, index=pd.Index(["d3", "d1", "d7"], name="doc_id"))
    scores, idx = PrecomputedRetriever(root).search(qs, ds, 5)
    assert idx.shape == (2, 5)
    assert (idx[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert all(sorted(row[:3]) == [0, 1, 2] for row in idx.tolist())


def test_precomputed_missing_id_names_it(embeddings):
    root, q_ids, *_ = embeddings
    r = PrecomputedRetriever(root)
    qs = pd.DataFrame({"query": "x"}, index=pd.Index(q_ids[:2], name="query_id"))
    ds = pd.DataFrame({"title": "y"}, index=pd.Index(["d1", "no-such-doc"], name="doc_id"))
    with pytest.raises(DataError, match="no-such-doc"):
        r.search(qs, ds, 3)
    qs_bad = pd.DataFrame({"query": "x"}, index=pd.Index(["ghost-query"], name="query_id"))
    with pytest.raises(DataError, match="ghost-query"):
        r.search(qs_bad, ds.iloc[:1], 3)


def test_precomputed_ids_and_rows_must_match(tmp_path):
    vecs = np.ones((3, 4), np.float32)
    root = write_embeddings(tmp_path / "e", ["q0", "q1", "q2"], vecs, ["d0", "d1"], vecs)
    with pytest.raises(DataError, match=r"2 ids for an array of shape \(3, 4\)") as info:
        PrecomputedRetriever(root)
    assert "documents.npy" in str(info.value)


def test_precomputed_missing_file_is_named(tmp_path):
    vecs = np.ones((2, 4), np.float32)
    root = write_embeddings(tmp_path / "e", ["q0", "q1"], vecs, ["d0", "d1"], vecs)
    (root / "doc_ids.txt").unlink()
    with pytest.raises(DataError, match="doc_ids.txt"):
        PrecomputedRetriever(root)


# ------------------------------------------------------------------------------------- dense
class CountingModel:
    """Stands in for a BiEncoder: fixed vectors per id, counts corpus encodings."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors
        self.document_calls = 0

    def _encode(self, table):
        return np.stack([self.vectors[i] for i in table.index]).astype(np.float32)

    def encode_queries(self, queries, *, batch_size=256, show_progress=False):
        return self._encode(queries)

    def encode_documents(self, documents, *, batch_size=256, show_progress=False):
        self.document_calls += 1
        return self._encode(documents)


def test_dense_retriever_encodes_a_corpus_once_and_searches_exactly():
    rng = np.random.default_rng(2)
    ids = [f"d{i}" for i in range(30)] + ["q0", "q1"]
    model = CountingModel({i: v / np.linalg.norm(v) for i, v in zip(ids, rng.standard_normal((32, 6)))})
    docs = pd.DataFrame({"title": "t"}, index=pd.Index(ids[:30], name="doc_id"))
    qs = pd.DataFrame({"query": "t"}, index=pd.Index(["q0", "q1"], name="query_id"))
    r = DenseRetriever(model, show_progress=False)
    s1, i1 = r.search(qs, docs, 40)
    s2, i2 = r.search(qs.iloc[:1], docs, 40)
    assert model.document_calls == 1
    ref_s, ref_i = exact_search(model._encode(qs), model._encode(docs), 30)
    np.testing.assert_array_equal(i1[:, :30], ref_i)
    assert (i1[:, 30:] == -1).all()
    np.testing.assert_array_equal(i2, i1[:1])
    r.search(qs, docs.iloc[:10], 5)  # another corpus: encoded afresh
    assert model.document_calls == 2
