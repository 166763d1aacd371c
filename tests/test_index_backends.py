"""The same behaviour tests on both index backends: VectorIndex (faiss) and MilvusIndex (milvus-lite).

Every test takes ``make(dim, kind=...)`` which returns an empty index of the backend under test;
the Milvus indexes live in one milvus-lite file per module (one collection per index), so the
embedded server starts once. References are brute force in numpy (float64).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gcl.data.errors import ConfigError, DataError
from gcl.index import SearchIndex, VectorIndex, open_index

pytest.importorskip("faiss")

_counter = itertools.count()


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    return tmp_path_factory.mktemp("milvus") / "shared.db"


@pytest.fixture(params=["faiss", "milvus"])
def backend(request):
    return request.param


@pytest.fixture
def make(backend, request):
    opened = []

    def factory(dim: int, **kw) -> SearchIndex:
        if backend == "faiss":
            return VectorIndex(dim=dim, **kw)
        from gcl.index.milvus import MilvusIndex

        db = request.getfixturevalue("lite_db")
        index = MilvusIndex(uri=db, collection=f"t{next(_counter)}", dim=dim, **kw)
        opened.append(index)
        return index

    yield factory
    for index in opened:
        index.drop()
        index.close()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(q: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the top-k cosines (float64), ties by row index."""
    s = unit(q.astype(np.float64)) @ unit(docs.astype(np.float64)).T
    return np.lexsort((np.broadcast_to(np.arange(docs.shape[0]), s.shape), -s), axis=1)[:, :k]


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_search_equals_brute_force(make, kind):
    rng = np.random.default_rng(1)
    docs, q = rng.normal(size=(300, 16)), rng.normal(size=(12, 16))
    ids = [f"doc-{i}" for i in range(len(docs))]
    index = make(16, kind=kind, hnsw_m=16, ef_construction=200, ef_search=300)  # ef >= n: HNSW is exact here
    index.add(ids, docs)
    assert len(index) == 300
    for k in (1, 10, 300):
        got = index.search(q, k)
        want = brute_force(q, docs, k)
        assert [[h.doc_id for h in row] for row in got] == [[ids[j] for j in row] for row in want]
        ref = unit(q) @ unit(docs).T
        for row, w, r in zip(got, want, ref):
            np.testing.assert_allclose([h.score for h in row], r[w], atol=1e-5)


def test_equal_scores_come_in_write_order(make):
    index = make(3)
    index.add(["z"], [[1, 0, 0]])
    index.add(["b", "a"], [[0, 1, 0], [0, 1, 0]])
    index.add(["c"], [[0, 1, 0]])
    hits = index.search([[0, 1, 0]], 2)[0]  # three tied at cosine 1: the first two written
    assert [h.doc_id for h in hits] == ["b", "a"]
    assert [h.doc_id for h in index.search([[0, 1, 0]], 4)[0]] == ["b", "a", "c", "z"]


def test_fields_get_and_string_ids(make):
    index = make(4)
    odd = ["über/ü", "with space", 'quote"and\\back', "x" * 300, ""]
    vecs = np.eye(4)[[0, 1, 2, 3, 0]] + 0.01
    fields = [{"title": f"T{i}", "n": i, "tags": ["a", "b"], "nested": {"k": None}} for i in range(5)]
    index.add(odd, vecs, fields)
    for doc_id, v, f in zip(odd, vecs, fields):
        assert doc_id in index
        got = index.get(doc_id)
        assert got.doc_id == doc_id and got.fields == f
        np.testing.assert_allclose(got.vector, v / np.linalg.norm(v), atol=1e-6)
    assert index.get("missing") is None and "missing" not in index
    assert index.search(vecs[1], 1)[0][0].doc_id == "with space"
    hit = index.search(vecs[2], 1)[0][0]
    assert hit.fields == fields[2]
    hit.fields["title"] = "changed"  # a copy: the stored fields do not change
    assert index.get(odd[2]).fields["title"] == "T2"


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_filters_keep_exact_matches_only(make, kind):
    rng = np.random.default_rng(2)
    docs = rng.normal(size=(200, 8))
    brands = ["acme", "globex", 'in"it\\ech', "ünïcode"]
    fields = [{"brand": brands[i % 4], "size": i % 3, "flag": bool(i % 2), "color": None if i % 5 == 0 else "red"}
              for i in range(200)]
    ids = [f"d{i}" for i in range(200)]
    index = make(8, kind=kind, ef_search=256)
    index.add(ids, docs, fields)
    q = rng.normal(size=(3, 8))
    for filters in ({"brand": "acme"}, {"brand": 'in"it\\ech'}, {"brand": "ünïcode", "size": "2"},
                    {"flag": "True"}, {"size": "1", "flag": "False"}, {"color": "red", "brand": "globex"},
                    {"brand": "nobody"}, {"missing": "x"}, {"size": "1.0"}):
        keep = np.array([all(f.get(n) is not None and str(f[n]) == v for n, v in filters.items()) for f in fields])
        got = index.search(q, 5, filters=filters)
        allowed = np.flatnonzero(keep)
        for row, qq in zip(got, q):
            want = [ids[allowed[j]] for j in brute_force(qq[None], docs[allowed], 5)[0]] if len(allowed) else []
            assert [h.doc_id for h in row] == want, filters


def test_upsert_replaces_vector_and_fields_and_delete_removes(make):
    index = make(3)
    index.add(["a", "b", "c"], np.eye(3), [{"t": "A"}, {"t": "B"}, {"t": "C"}])
    index.upsert(["a", "d"], [[0, 0, 1], [0, 1, 0]], [{"t": "A2"}, None])
    assert len(index) == 4
    assert index.get("a").fields == {"t": "A2"} and index.get("d").fields == {}
    np.testing.assert_allclose(index.get("a").vector, [0, 0, 1], atol=1e-6)
    # "a" now ties with "c" and, as an upsert, counts as written after it
    assert [h.doc_id for h in index.search([[0, 0, 1]], 2)[0]] == ["c", "a"]
    assert index.search([[1, 0, 0]], 1)[0][0].doc_id != "a"
    assert index.delete(["b", "c"]) == 2
    assert len(index) == 2 and "b" not in index and index.get("c") is None
    assert {h.doc_id for h in index.search([[1, 1, 1]], 10)[0]} == {"a", "d"}
    with pytest.raises(DataError, match="'zz' is not in the index"):
        index.delete(["a", "zz"])
    assert "a" in index  # a refused delete removes nothing
    assert index.delete(["a", "zz"], missing_ok=True) == 1
    assert [h.doc_id for h in index.search([[1, 1, 1]], 10)[0]] == ["d"]


def test_bad_inputs_are_refused_and_change_nothing(make):
    index = make(3)
    index.add(["a"], [[1, 0, 0]])
    bad = [
        (lambda: index.add(["b"], [[1, 0]]), DataError, r"shape \(n, 3\)"),
        (lambda: index.add(["b"], [[0, 0, 0]]), DataError, "all zeros"),
        (lambda: index.add(["b"], [[np.nan, 0, 1]]), DataError, "NaN"),
        (lambda: index.add(["b", "b"], [[1, 0, 0], [0, 1, 0]]), DataError, "appears twice"),
        (lambda: index.add(["a"], [[0, 1, 0]]), DataError, "already in the index"),
        (lambda: index.add([1], [[0, 1, 0]]), DataError, "must be strings"),
        (lambda: index.add(["b", "c"], [[0, 1, 0]]), DataError, "2 ids for 1 vectors"),
        (lambda: index.add(["b"], [[0, 1, 0]], [{"x": b"bytes"}]), DataError, "JSON"),
        (lambda: index.add(["b"], [[0, 1, 0]], ["notadict"]), DataError, "must be a dict"),
        (lambda: index.upsert(["b"], [[0, 1, 0]], [{}, {}]), DataError, "2 field dicts"),
        (lambda: index.search([[1, 0, 0]], 0), ConfigError, "positive integer"),
        (lambda: index.search([[1, 0, 0]], True), ConfigError, "positive integer"),
        (lambda: index.search([[1, 0]], 1), DataError, "shape"),
        (lambda: index.search([[1, 0, 0]], 1, filters={"a": 1}), ConfigError, "strings"),
        (lambda: index.delete(["nope"]), DataError, "not in the index"),
    ]
    for call, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            call()
    assert len(index) == 1 and "b" not in index
    assert [h.doc_id for h in index.search([[0, 1, 0]], 5)[0]] == ["a"]


def test_empty_index_and_k_beyond_size(make):
    index = make(4)
    assert index.search(np.ones((2, 4)), 3) == [[], []]
    index.add(["a", "b"], np.eye(4)[:2])
    assert [len(r) for r in index.search(np.ones((2, 4)), 50)] == [2, 2]


def test_persistence_reopen_through_the_factory(backend, tmp_path):
    rng = np.random.default_rng(3)
    docs = rng.normal(size=(50, 6))
    ids = [f"p{i}" for i in range(50)]
    if backend == "faiss":
        location, create = tmp_path / "idx", {}
        index = VectorIndex(dim=6, kind="hnsw", hnsw_m=8, ef_search=64, model="some/model")
    else:
        pytest.importorskip("milvus_lite")
        location = tmp_path / "p.db"
        create = dict(dim=6, kind="hnsw", hnsw_m=8, ef_search=64, model="some/model")
        index = open_index(location, collection="docs", **create)
    index.add(ids, docs, [{"i": i} for i in range(50)])
    index.delete(["p3"])
    index.upsert(["p4"], docs[5], [{"i": "new"}])
    before = index.search(docs[:5], 5)
    if backend == "faiss":
        index.save(location)
        index.add(["later"], docs[:1])
        index.flush()  # saves again where it was saved
    else:
        index.add(["later"], docs[:1])
        index.flush()
        index.close()
    again = open_index(location, collection="docs") if backend == "milvus" else open_index(location)
    assert type(again).__name__ == ("VectorIndex" if backend == "faiss" else "MilvusIndex")
    assert len(again) == 50 and "p3" not in again and "later" in again
    assert (again.dim, again.kind, again.model, again.ef_search) == (6, "hnsw", "some/model", 64)
    assert again.get("p4").fields == {"i": "new"}
    again.delete(["later"])
    assert [[h.doc_id for h in r] for r in again.search(docs[:5], 5)] == [[h.doc_id for h in r] for r in before]
    if backend == "milvus":
        with pytest.raises(ConfigError, match="6-d vectors, not 7-d"):
            open_index(location, collection="docs", dim=7)
        with pytest.raises(DataError, match="no collection 'other'"):
            open_index(location, collection="other")
        again.close()


def test_flush_of_an_unsaved_vector_index_is_refused():
    with pytest.raises(ConfigError, match="never been saved"):
        VectorIndex(dim=2).flush()


def test_factory_picks_the_backend_and_refuses_mistakes(tmp_path):
    from gcl.index.factory import is_milvus_location
    from gcl.index.milvus import parse_uri

    assert is_milvus_location("milvus://h:19530") and is_milvus_location("https://h:19530")
    assert is_milvus_location(tmp_path / "x.db") and not is_milvus_location(tmp_path / "dir")
    assert parse_uri("milvus://h:19530/products") == ("http://h:19530", "products")
    assert parse_uri("https://user.cloud:443") == ("https://user.cloud:443", None)
    with pytest.raises(ConfigError, match="no host"):
        parse_uri("milvus://")
    with pytest.raises(DataError, match="no index here"):
        open_index(tmp_path)
    with pytest.raises(ConfigError, match="Milvus index only"):
        open_index(tmp_path, collection="x")
