"""Compressed index kinds (sq8, hnsw_sq8, ivfpq): recall with exact re-scoring, exact scores,
persistence with memory-mapped float vectors, writes after training, bad input, CLI and Milvus.

References are brute force in numpy over the same normalised float32 vectors.
"""

from __future__ import annotations

import numpy as np
import pytest

from gcl.data.errors import ConfigError
from gcl.index import VectorIndex

faiss = pytest.importorskip("faiss")

DIM, N, N_QUERIES, K = 64, 6000, 100, 10
# each kind at settings small enough for a test: ivfpq with 16 cells of ~375 vectors, 4 probed
KINDS = {
    "sq8": dict(train_size=2000),
    "hnsw_sq8": dict(train_size=2000, hnsw_m=16, ef_construction=80, ef_search=64),
    "ivfpq": dict(train_size=4000, nlist=16, nprobe=4, pq_m=32, pq_nbits=8),
}
# recall@10 of the re-scored results against exact search, rescore=4 (measured: sq8 1.000,
# hnsw_sq8 1.000, ivfpq 0.955 - the same as IndexIVFPQ used directly); the bounds leave room
# for faiss version drift. ivfpq at pq_m=16 (4 dims per code) gives 0.672, directly or here.
RECALL_BOUND = {"sq8": 0.98, "hnsw_sq8": 0.97, "ivfpq": 0.9}


def clustered(n: int, dim: int, *, clusters: int = 40, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (embeddings of a real corpus are clustered too)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    both = clustered(N + N_QUERIES, DIM)  # queries from the same clusters as the documents
    docs, queries = both[:N], both[N:]
    return [f"d{i}" for i in range(N)], docs, queries


def exact_top(queries: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ docs.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def build(kind: str, ids, docs) -> VectorIndex:
    index = VectorIndex(dim=DIM, kind=kind, **KINDS[kind])
    for start in range(0, len(ids), 1500):  # several writes, as gcl index build does
        part = ids[start : start + 1500]
        index.add(part, docs[start : start + 1500], [{"n": i} for i in range(start, start + len(part))])
    return index


@pytest.fixture(scope="module", params=list(KINDS))
def built(request, data):
    ids, docs, _ = data
    return request.param, build(request.param, ids, docs)


def test_recall_at_10_with_rescoring_is_above_the_bound_and_scores_are_exact(built, data):
    kind, index = built
    ids, docs, queries = data
    assert index.is_trained and index.kind == kind
    truth = exact_top(queries, docs, K)
    results = index.search(queries, K)
    recall = np.mean([len({h.doc_id for h in hits} & {ids[j] for j in row}) / K for hits, row in zip(results, truth)])
    assert recall >= RECALL_BOUND[kind], (kind, recall)
    for q, hits in zip(queries, results):
        assert len(hits) == K
        got = np.array([h.score for h in hits])
        rows = np.array([int(h.doc_id[1:]) for h in hits])
        np.testing.assert_allclose(got, docs[rows] @ q, rtol=0, atol=1e-6)  # exact float32 cosines
        assert np.all(np.diff(got) <= 0)


def test_rescoring_is_what_lifts_recall(data):
    """Without re-scoring depth (rescore=1) IVF-PQ misses more of the exact top 10 than with rescore=8."""
    ids, docs, queries = data
    truth = exact_top(queries, docs, K)

    def recall(rescore):
        index = VectorIndex(dim=DIM, kind="ivfpq", **{**KINDS["ivfpq"], "pq_m": 8, "rescore": rescore})
        index.add(ids, docs)
        res = index.search(queries, K)
        return np.mean([len({h.doc_id for h in hits} & {ids[j] for j in row}) / K for hits, row in zip(res, truth)])

    assert recall(8) > recall(1) + 0.05


def test_save_load_round_trip_memory_maps_the_vectors(built, data, tmp_path):
    kind, index = built
    _, docs, queries = data
    before = index.search(queries[:20], K, filters=None)
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert type(loaded).__name__ == "QuantizedIndex" and loaded.kind == kind and loaded.params == index.params
    assert isinstance(loaded.vectors, np.memmap) and loaded.vectors.shape == (N, DIM)
    assert str(loaded.vectors.filename) == str((tmp_path / "ix" / "vectors.npy").resolve())
    after = loaded.search(queries[:20], K)
    assert [[(h.doc_id, h.score, h.fields) for h in r] for r in after] == [[(h.doc_id, h.score, h.fields) for h in r] for r in before]
    np.testing.assert_array_equal(loaded.get("d5").vector, docs[5])  # get() reads the float32 vector
    assert isinstance(index.vectors, np.memmap)  # the saving index maps its new file too: RAM holds codes only


def test_writes_after_training_use_the_trained_quantiser(data, tmp_path):
    ids, docs, queries = data
    index = build("ivfpq", ids[:4000], docs[:4000])
    centroids = faiss.vector_to_array(faiss.downcast_index(index._inner().quantizer).codes).copy()
    index.add(ids[4000:], docs[4000:])
    index.upsert(["d1"], docs[2:3], [{"new": True}])  # d1 now has d2's vector
    index.delete(["d3"])
    after = faiss.vector_to_array(faiss.downcast_index(index._inner().quantizer).codes)
    assert np.array_equal(centroids, after)  # no retraining
    hits = index.search(docs[2:3], 3)[0]
    assert {h.doc_id for h in hits[:2]} == {"d1", "d2"} and hits[0].score == pytest.approx(1, abs=1e-6)
    assert all(h.doc_id != "d3" for h in index.search(docs[3:4], 5)[0])
    assert index.n_tombstones == 2  # the replaced d1 and the deleted d3
    index.save(tmp_path / "w")
    loaded = VectorIndex.load(tmp_path / "w")
    assert len(loaded) == N - 1 and loaded.get("d1").fields == {"new": True} and "d3" not in loaded
    assert loaded.compact() == 2 and loaded.n_tombstones == 0
    assert loaded.search(docs[2:3], 2)[0][0].doc_id in {"d1", "d2"}


def test_an_index_too_small_to_train_is_searched_exactly_and_trains_at_save(tmp_path):
    docs = clustered(300, DIM)
    index = VectorIndex(dim=DIM, kind="ivfpq", nlist=16, pq_m=16, pq_nbits=8)  # needs 256 points to train
    index.add([str(i) for i in range(200)], docs[:200])
    assert not index.is_trained
    top = index.search(docs[:1], 5)[0]
    assert [h.doc_id for h in top] == [str(i) for i in exact_top(docs[:1], docs[:200], 5)[0]]
    index.save(tmp_path / "small")  # 200 < 256: still untrained, still correct after loading
    loaded = VectorIndex.load(tmp_path / "small")
    assert not loaded.is_trained and [h.doc_id for h in loaded.search(docs[:1], 5)[0]] == [h.doc_id for h in top]
    loaded.add([str(i) for i in range(200, 300)], docs[200:])
    loaded.save(tmp_path / "small")  # 300 >= 256: trained at this save (train_size not reached)
    assert loaded.is_trained and VectorIndex.load(tmp_path / "small").is_trained


def test_bad_input_is_refused_with_the_option_named(data):
    _, docs, queries = data
    with pytest.raises(ConfigError, match=r"--pq-m 7 does not divide the vector dimension 64"):
        VectorIndex(dim=DIM, kind="ivfpq", pq_m=7)
    with pytest.raises(ConfigError, match="pq_nbits"):
        VectorIndex(dim=DIM, kind="ivfpq", pq_nbits=20)
    with pytest.raises(ConfigError, match="rescore must be a positive integer"):
        VectorIndex(dim=DIM, kind="sq8", rescore=0)
    index = VectorIndex(dim=DIM, kind="sq8")
    index.add(["a"], docs[:1])
    with pytest.raises(ConfigError, match="exact search asked of a sq8 index .*compressed"):
        index.search(queries[:1], 1, exact=True)
    exact = VectorIndex(dim=DIM)
    exact.add(["a"], docs[:1])
    assert exact.search(queries[:1], 1, exact=True)[0][0].doc_id == "a"


def test_durable_service_store_on_a_compressed_index(data, tmp_path):
    from gcl.service.durable import DurableIndex

    ids, docs, _ = data
    build("hnsw_sq8", ids[:3000], docs[:3000]).save(tmp_path / "svc")
    store = DurableIndex(tmp_path / "svc", checkpoint_every=2)
    store.upsert(["new"], docs[4000:4001], [{"t": "x"}])
    store.delete(["d0"])  # second write: a checkpoint
    store.upsert(["newer"], docs[4001:4002], [{}])  # logged only
    store.close(checkpoint=False)
    reopened = DurableIndex(tmp_path / "svc")
    try:
        assert reopened.replayed == 1 and "new" in reopened and "newer" in reopened and "d0" not in reopened
        assert reopened.search(docs[4000:4001], 1)[0][0].doc_id == "new"
        assert isinstance(reopened.index.vectors, np.memmap)
    finally:
        reopened.close()


# ---------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


def test_cli_build_and_search_a_compressed_index(tmp_path, tiny_model_dir, capsys):
    from gcl.cli.main import main

    out = tmp_path / "sq"
    assert main(["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(out),
                 "--kind", "sq8", "--rescore", "3", "--batch-size", "64", "--no-progress"]) == 0
    index = VectorIndex.load(out)
    assert index.kind == "sq8" and index.params["rescore"] == 3 and index.is_trained
    capsys.readouterr()
    title = index.get(next(iter(index._label_of))).fields["title"]
    assert main(["search", "--index", str(out), title, "-k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4
    cases = [
        (["search", "--index", str(out), "chair", "--exact"], "--exact: exact search asked of a sq8 index"),
        (["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(tmp_path / "pq"),
          "--kind", "ivfpq", "--pq-m", "7", "--no-progress"], "--pq-m 7 does not divide the vector dimension"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bar
        assert err.startswith("error:") and message in err, (argv, err)


# ---------------------------------------------------------------------- Milvus
@pytest.mark.parametrize("kind", ["sq8", "hnsw_sq8"])
def test_milvus_lite_compressed_kinds_rescore_exactly(kind, data, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from gcl.index.milvus import MilvusIndex

    ids, docs, queries = data
    index = MilvusIndex(uri=tmp_path / "m.db", collection=kind, dim=DIM, kind=kind, nlist=16, nprobe=16)
    try:
        index.add(ids[:2000], docs[:2000])
        index.flush()
        truth = exact_top(queries[:20], docs[:2000], K)
        res = index.search(queries[:20], K)
        recall = np.mean([len({h.doc_id for h in hits} & {ids[j] for j in row}) / K for hits, row in zip(res, truth)])
        assert recall >= 0.9, recall
        for q, hits in zip(queries[:20], res):
            rows = np.array([int(h.doc_id[1:]) for h in hits])
            np.testing.assert_allclose([h.score for h in hits], docs[rows] @ q, rtol=0, atol=1e-6)
        with pytest.raises(ConfigError, match="exact search asked"):
            index.search(queries[:1], 1, exact=True)
        assert MilvusIndex(uri=tmp_path / "m.db", collection=kind).params["nlist"] == 16
    finally:
        index.close()


def test_milvus_lite_refuses_ivfpq_it_cannot_build(tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from gcl.index.milvus import MilvusIndex

    with pytest.raises(ConfigError, match="milvus-lite cannot build an IVF_PQ index"):
        MilvusIndex(uri=tmp_path / "p.db", dim=DIM, kind="ivfpq", pq_m=16)


def test_filters_and_tombstones_take_the_general_path_with_exact_scores(data):
    ids, docs, queries = data
    index = build("sq8", ids, docs)  # fields {"n": i}
    index.delete(["d0"])  # sq8 removes physically: no tombstones
    want = {"n": "7"}
    hits = index.search(docs[7:8], 3, filters=want)[0]
    assert [h.doc_id for h in hits] == ["d7"] and hits[0].score == pytest.approx(1, abs=1e-6)
    hnsw = build("hnsw_sq8", ids, docs)
    hnsw.delete(["d7"])  # a tombstone: the general path, which skips it
    hits = hnsw.search(docs[7:8], K)[0]
    assert "d7" not in {h.doc_id for h in hits} and len(hits) == K
    rows = np.array([int(h.doc_id[1:]) for h in hits])
    np.testing.assert_allclose([h.score for h in hits], docs[rows] @ docs[7], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- service
def test_service_serves_a_compressed_index_and_has_no_exact_option(tmp_path, tiny_model_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gcl.encoders.model import BiEncoder
    from gcl.encoders.query import encode_query_texts
    from gcl.service import ServiceSettings, create_app
    from service_helpers import make_documents

    model = BiEncoder.load(tiny_model_dir)
    docs = make_documents(80)
    index = VectorIndex(dim=model.dim, kind="sq8", model=str(tiny_model_dir))
    index.add(list(docs.index), model.encode_documents(docs), [{"title": t} for t in docs["title"]])
    index.save(tmp_path / "svc")
    expected = VectorIndex.load(tmp_path / "svc").search(encode_query_texts(model, ["red chair"]), 5)[0]
    app = create_app(ServiceSettings(index_dir=tmp_path / "svc"), model=model)
    with TestClient(app) as client:
        got = client.post("/search", json={"query": "red chair", "k": 5})
        assert got.status_code == 200
        assert [h["doc_id"] for h in got.json()["hits"]] == [h.doc_id for h in expected]
        assert client.post("/search", json={"query": "red chair", "exact": True}).status_code == 422
        new = client.put("/documents/zz-new", json={"fields": {"title": "red chair deluxe"}})
        assert new.status_code in (200, 201) and client.get("/documents/zz-new").status_code == 200
    app.state.store.close()
    assert "zz-new" in VectorIndex.load(tmp_path / "svc")


def test_cli_defaults_of_the_compressed_kinds_come_from_quant_params():
    from gcl.cli.main import build_parser
    from gcl.index.base import KINDS, QuantParams

    args = build_parser().parse_args(["index", "build", "--out", "x"])
    q = QuantParams()
    assert {n: getattr(args, n) for n in q.__dict__} == q.__dict__
    assert {"sq8", "hnsw_sq8", "ivfpq"} <= set(KINDS)
