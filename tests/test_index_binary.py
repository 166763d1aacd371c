"""Binary-code index kinds (binary, binary_hnsw): results equal a naive numpy reference (sign bits,
Hamming distance by popcount, the rescore*k nearest codes with ties by write order, exact cosine
re-scoring), persistence, writes, bad input, the CLI and the service.
"""

from __future__ import annotations

import numpy as np
import pytest

from gcl.data.errors import ConfigError
from gcl.index import VectorIndex

faiss = pytest.importorskip("faiss")

DIM, N, K = 50, 3000, 10  # 50 dims: the 6 bits padding the code to 56 must never count


def unit(n: int, dim: int = DIM, *, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def corpus() -> tuple[list[str], np.ndarray]:
    """Random unit vectors plus exact duplicates (equal codes and equal scores: ties by write order)."""
    x = unit(N)
    x[2000:2300] = x[100:400]  # 300 duplicates written later
    x[2300:2310] = x[7]  # a group of 11 identical vectors
    return [f"d{i}" for i in range(N)], x


def naive_search(queries: np.ndarray, docs: np.ndarray, live: list[int], k: int, rescore: int) -> list[list[int]]:
    """The reference: rows of ``docs`` (``live``, in write order) per query, by explicit loops."""
    def bits(v):
        return [1 if c > 0 else 0 for c in v]

    packed = np.packbits(np.array([bits(docs[i]) for i in live], dtype=np.uint8), axis=1)
    out = []
    for q in queries:
        qb = np.packbits(np.array(bits(q), dtype=np.uint8))
        hamming = np.bitwise_count(np.bitwise_xor(packed, qb)).sum(axis=1)  # popcount of the XOR
        # the rescore*k nearest codes, ties by write order (position in live)
        cands = sorted(range(len(live)), key=lambda j: (int(hamming[j]), j))[: k * rescore]
        scored = [(float(docs[live[j]] @ q), j) for j in cands]
        scored.sort(key=lambda t: (-t[0], t[1]))  # exact cosine, ties by write order
        out.append([live[j] for _, j in scored[:k]])
    return out


def ids_of(results) -> list[list[int]]:
    return [[int(h.doc_id[1:]) for h in hits] for hits in results]


def test_binary_search_equals_the_naive_reference_ties_included():
    ids, docs = corpus()
    queries = np.concatenate([unit(30, seed=1), docs[[7, 150, 2150]]])  # the last three hit duplicate groups
    for rescore in (1, 4, 16):
        index = VectorIndex(dim=DIM, kind="binary", rescore=rescore)
        for start in range(0, N, 700):
            index.add(ids[start : start + 700], docs[start : start + 700])
        got = index.search(queries, K)
        assert ids_of(got) == naive_search(queries, docs, list(range(N)), K, rescore), rescore
        for q, hits in zip(queries, got):  # returned scores are the exact float32 cosines
            rows = [int(h.doc_id[1:]) for h in hits]
            np.testing.assert_allclose([h.score for h in hits], docs[rows] @ q, rtol=0, atol=1e-6)
    top = index.search(docs[7:8], 12)[0]  # d7 and its 10 copies tie at 1.0: write order
    assert [h.doc_id for h in top[:11]] == ["d7"] + [f"d{i}" for i in range(2300, 2310)]


def test_the_reference_is_not_exact_search():
    """Sign bits lose information: at rescore 1 the result differs from exact cosine top-k (so the
    reference above checks the two-stage search, not a brute force that would pass anyway)."""
    _, docs = corpus()
    queries = unit(30, seed=1)
    binary = naive_search(queries, docs, list(range(N)), K, 1)
    exact = [list(np.lexsort((np.arange(N), -(docs @ q)))[:K]) for q in queries]
    assert binary != exact


def test_writes_keep_results_equal_to_the_reference_and_survive_a_round_trip(tmp_path):
    ids, docs = corpus()
    queries = unit(20, seed=2)
    index = VectorIndex(dim=DIM, kind="binary", rescore=4)
    index.add(ids, docs, [{"n": i % 5} for i in range(N)])
    index.delete(["d3", "d4"])
    new = unit(2, seed=3)
    index.upsert(["d5", "x0"], new, [{"n": 9}, {"n": 9}])  # d5 replaced (moves to the end), x0 added
    stored = np.concatenate([docs, new])  # rows N, N+1: the new d5 and x0
    live = [i for i in range(N) if i not in (3, 4, 5)] + [N, N + 1]
    name = {**{i: f"d{i}" for i in range(N)}, N: "d5", N + 1: "x0"}
    want = [[name[i] for i in row] for row in naive_search(queries, stored, live, K, 4)]
    assert [[h.doc_id for h in hits] for hits in index.search(queries, K)] == want
    assert index.search(new[:1], 1)[0][0].doc_id == "d5" and index.get("d5").fields == {"n": 9}
    assert index.n_tombstones == 0 and index._faiss_index.ntotal == len(index) == N - 1  # codes removed physically

    index.save(tmp_path / "b")
    loaded = VectorIndex.load(tmp_path / "b")
    assert type(loaded).__name__ == "BinaryIndex" and loaded.kind == "binary" and loaded.params == index.params
    assert loaded.manifest()["code_bits"] == 56 and isinstance(loaded.vectors, np.memmap)
    assert [[h.doc_id for h in hits] for hits in loaded.search(queries, K)] == want
    np.testing.assert_array_equal(loaded.get("d5").vector, new[0])
    loaded.add(["x1"], docs[:1])  # writes after loading go into the loaded binary index
    assert [h.doc_id for h in loaded.search(docs[:1], 2)[0]] == ["d0", "x1"]


def test_filters_widen_the_hamming_fetch_until_enough_match():
    ids, docs = corpus()
    index = VectorIndex(dim=DIM, kind="binary", rescore=2)
    index.add(ids, docs, [{"n": i % 50} for i in range(N)])
    q = unit(1, seed=4)
    hits = index.search(q, K, filters={"n": "3"})[0]
    live = [i for i in range(N) if i % 50 == 3]  # the reference over the matching documents only
    assert [int(h.doc_id[1:]) for h in hits] == naive_search(q, docs, live, K, 2)[0]


def test_binary_hnsw_recall_tombstones_compact_and_round_trip(tmp_path):
    ids, docs = corpus()
    queries = unit(50, seed=5)
    index = VectorIndex(dim=DIM, kind="binary_hnsw", rescore=4, hnsw_m=16, ef_construction=80, ef_search=64)
    index.add(ids, docs)
    reference = naive_search(queries, docs, list(range(N)), K, 4)
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids_of(index.search(queries, K)), reference)])
    assert overlap >= 0.95, overlap  # HNSW approximates the Hamming candidates (measured 1.0 here)
    index.delete(["d10"])
    index.upsert(["d11"], docs[12:13])
    assert index.n_tombstones == 2 and "d10" not in {h.doc_id for h in index.search(docs[10:11], K)[0]}
    assert {h.doc_id for h in index.search(docs[12:13], 2)[0]} == {"d11", "d12"}
    index.save(tmp_path / "h")
    loaded = VectorIndex.load(tmp_path / "h")
    assert loaded.kind == "binary_hnsw" and loaded.n_tombstones == 2
    assert loaded.compact() == 2 and loaded.n_tombstones == 0 and loaded._faiss_index.ntotal == N - 1
    assert {h.doc_id for h in loaded.search(docs[12:13], 2)[0]} == {"d11", "d12"}


def test_exact_search_is_refused_and_milvus_refuses_the_binary_kinds(tmp_path):
    for kind in ("binary", "binary_hnsw", "sq8", "hnsw_sq8", "ivfpq"):
        index = VectorIndex(dim=DIM if kind != "ivfpq" else 48, kind=kind, **({"pq_m": 8} if kind == "ivfpq" else {}))
        index.add(["a"], unit(1, index.dim))
        with pytest.raises(ConfigError, match=f"exact search asked of a {kind} index .*compressed"):
            index.search(unit(1, index.dim), 1, exact=True)
    from gcl.index.factory import backend_for
    from gcl.index.milvus_syntax import check_kind

    for lite in (True, False):
        with pytest.raises(ConfigError, match="kind binary is not offered on Milvus: milvus-lite 3.2 has no BINARY_VECTOR"):
            check_kind("binary", lite=lite)
    with pytest.raises(ConfigError, match="kind binary_hnsw is not offered on Milvus"):
        backend_for("x.db").check_kind(str(tmp_path / "x.db"), "binary_hnsw")
    backend_for("http://h:19530").check_kind("http://h:19530", "ivfpq")  # a server may build IVF_PQ
    backend_for(tmp_path / "dir").check_kind(str(tmp_path / "dir"), "binary")  # a directory takes every kind


def test_a_corrupt_or_foreign_faiss_file_is_a_clear_error(tmp_path):
    from gcl.data.errors import DataError

    index = VectorIndex(dim=DIM, kind="binary")
    index.add(["a", "b"], unit(2))
    index.save(tmp_path / "b")
    float_index = VectorIndex(dim=DIM, kind="exact")
    float_index.add(["a", "b"], unit(2))
    float_index.save(tmp_path / "f")
    (tmp_path / "b" / "vectors.faiss").write_bytes((tmp_path / "f" / "vectors.faiss").read_bytes())
    with pytest.raises(DataError, match="cannot read the faiss index"):
        VectorIndex.load(tmp_path / "b")


# ---------------------------------------------------------------------- CLI and service
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


def test_cli_builds_and_searches_a_binary_index_and_milvus_is_refused_before_encoding(tmp_path, tiny_model_dir, capsys):
    from gcl.cli.main import main

    out = tmp_path / "bin"
    assert main(["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(out),
                 "--kind", "binary", "--rescore", "8", "--batch-size", "64", "--no-progress"]) == 0
    index = VectorIndex.load(out)
    assert index.kind == "binary" and index.params["rescore"] == 8
    title = index.get(next(iter(index._label_of))).fields["title"]
    capsys.readouterr()
    assert main(["search", "--index", str(out), title, "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    cases = [(["search", "--index", str(out), "chair", "--exact"], "--exact: exact search asked of a binary index"),
             (["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(tmp_path / "m.db"),
               "--kind", "binary", "--no-progress"], "kind binary is not offered on Milvus")]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error:") and message in err, (argv, err)
    assert not (tmp_path / "m.db.partial").exists()  # refused before any encoding


def test_service_serves_a_binary_index(tmp_path, tiny_model_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gcl.encoders.model import BiEncoder
    from gcl.encoders.query import encode_query_texts
    from gcl.service import ServiceSettings, create_app
    from service_helpers import make_documents

    model = BiEncoder.load(tiny_model_dir)
    docs = make_documents(80)
    index = VectorIndex(dim=model.dim, kind="binary_hnsw", model=str(tiny_model_dir))
    index.add(list(docs.index), model.encode_documents(docs), [{"title": t} for t in docs["title"]])
    index.save(tmp_path / "svc")
    expected = VectorIndex.load(tmp_path / "svc").search(encode_query_texts(model, ["red chair"]), 5)[0]
    app = create_app(ServiceSettings(index_dir=tmp_path / "svc"), model=model)
    with TestClient(app) as client:
        got = client.post("/search", json={"query": "red chair", "k": 5})
        assert got.status_code == 200 and [h["doc_id"] for h in got.json()["hits"]] == [h.doc_id for h in expected]
        assert client.get("/health").status_code == 200
        assert client.put("/documents/zz-new", json={"fields": {"title": "red chair deluxe"}}).status_code in (200, 201)
        assert client.delete(f"/documents/{expected[0].doc_id}").status_code in (200, 204)
        after = client.post("/search", json={"query": "red chair", "k": 5}).json()["hits"]
        assert expected[0].doc_id not in {h["doc_id"] for h in after}
    app.state.store.close()
    reloaded = VectorIndex.load(tmp_path / "svc")
    assert type(reloaded).__name__ == "BinaryIndex" and "zz-new" in reloaded and expected[0].doc_id not in reloaded


def test_ties_at_the_candidate_cut_are_ordered_by_label_whatever_order_faiss_returns():
    index = VectorIndex(dim=DIM, kind="binary")
    none = np.zeros(0, dtype=np.int64)
    # faiss returned the tied distance-2 group in reverse label order and stopped inside it: fetch more
    labels, complete = index._nearest(np.array([1, 2, 2, 2]), np.array([0, 5, 4, 3]), 2, {}, none)
    assert not complete
    labels, complete = index._nearest(np.array([1, 2, 2, 2, 3]), np.array([0, 5, 4, 3, 9]), 2, {}, none)
    assert complete and labels.tolist() == [0, 3]
    labels, complete = index._nearest(np.array([1, 2, 0]), np.array([0, 5, -1]), 5, {}, none)  # faiss ran out
    assert complete and labels.tolist() == [0, 5]
