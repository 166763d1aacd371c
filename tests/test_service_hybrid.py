"""The service's ``mode`` (dense | lexical | hybrid): results, writes kept in step, bad input."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
pytest.importorskip("bm25s")

from fastapi.testclient import TestClient  # noqa: E402

from gcl.encoders.query import encode_query_texts  # noqa: E402
from gcl.index.hybrid import HybridParams, fuse_hits  # noqa: E402
from gcl.index.lexical import LexicalIndex  # noqa: E402
from gcl.index.store import VectorIndex  # noqa: E402
from gcl.service import ServiceSettings, create_app  # noqa: E402
from service_helpers import build_tiny_index, make_documents  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("service_hybrid")
    model_dir = make_tiny_sentence_transformer(root / "model")
    model = BiEncoder.load(model_dir)
    base = build_tiny_index(model, model_dir, root / "base", make_documents(80))
    return model, base


@pytest.fixture
def client(tiny, tmp_path):
    model, base = tiny
    shutil.copytree(base, tmp_path / "index")
    with TestClient(create_app(ServiceSettings(index_dir=tmp_path / "index"), model=model)) as c:
        yield c


def ranked(r):
    assert r.status_code == 200, r.text
    return [(h["doc_id"], h["score"]) for h in r.json()["hits"]]


def test_lexical_and_hybrid_equal_the_library(client, tiny):
    model, base = tiny
    index = VectorIndex.load(base)
    title = index.live_documents()[3][10]["title"]
    lexical = LexicalIndex(index).search([title], k=5)[0]
    assert ranked(client.post("/search", json={"query": title, "k": 5, "mode": "lexical"})) == \
        [(h.doc_id, pytest.approx(h.score)) for h in lexical]
    p = HybridParams()
    dense = index.search(encode_query_texts(model, [title]), p.depth)[0]
    want = fuse_hits(dense, LexicalIndex(index).search([title], p.depth)[0], p, 5)
    assert ranked(client.post("/search", json={"query": title, "k": 5, "mode": "hybrid"})) == \
        [(h.doc_id, pytest.approx(h.score)) for h in want]
    # default mode: dense, as before
    assert ranked(client.post("/search", json={"query": title, "k": 5})) == \
        [(h.doc_id, pytest.approx(h.score, abs=1e-6)) for h in index.search(encode_query_texts(model, [title]), 5)[0]]


def test_hybrid_pages_walk_one_ranking(client):
    full = ranked(client.post("/search", json={"query": "red chair", "k": 12, "mode": "hybrid"}))
    page2 = ranked(client.post("/search", json={"query": "red chair", "k": 4, "offset": 4, "mode": "hybrid"}))
    assert page2 == full[4:8]


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_writes_are_seen_by_lexical_search(client, mode):
    query = {"query": "zanzibar teapot", "k": 10, "mode": mode}
    assert "new" not in [d for d, _ in ranked(client.post("/search", json=query))]
    assert client.put("/documents/new", json={"fields": {"title": "zanzibar teapot"}}).status_code == 201
    assert ranked(client.post("/search", json=query))[0][0] == "new"  # an added document is found
    assert client.put("/documents/new", json={"fields": {"title": "garden hose"}}).status_code == 200
    assert "new" not in [d for d, _ in ranked(client.post("/search", json={**query, "mode": "lexical"}))]
    assert client.delete("/documents/new").status_code == 200
    assert "new" not in [d for d, _ in ranked(client.post("/search", json={**query, "query": "garden hose"}))]


def test_filters_apply_in_every_mode(client, tiny):
    _, base = tiny
    brand = VectorIndex.load(base).live_documents()[3][0]["brand"]
    for mode in ("lexical", "hybrid"):
        hits = client.post("/search", json={"query": "chair lamp", "k": 20, "mode": mode,
                                            "filters": {"brand": brand}}).json()["hits"]
        assert all(h["fields"]["brand"] == brand for h in hits)


@pytest.mark.parametrize("mode", ["fuzzy", "", "HYBRID", 1, None, ["hybrid"]])
def test_unknown_mode_is_422(client, mode):
    r = client.post("/search", json={"query": "chair", "mode": mode})
    assert r.status_code == 422 and "mode" in r.text


def test_convex_fusion_with_alpha_equals_the_library(client, tiny):
    model, base = tiny
    index = VectorIndex.load(base)
    p = HybridParams(fusion="convex", alpha=0.3)
    dense = index.search(encode_query_texts(model, ["red chair"]), p.depth)[0]
    want = fuse_hits(dense, LexicalIndex(index).search(["red chair"], p.depth)[0], p, 6)
    got = client.post("/search", json={"query": "red chair", "k": 6, "mode": "hybrid", "fusion": "convex",
                                       "alpha": 0.3})
    assert ranked(got) == [(h.doc_id, pytest.approx(h.score)) for h in want]


@pytest.mark.parametrize("extra, message", [
    ({"mode": "hybrid", "fusion": "max"}, "fusion"),
    ({"mode": "hybrid", "fusion": "convex", "alpha": 1.5}, "alpha"),
    ({"mode": "hybrid", "fusion": "convex", "alpha": "0.5"}, "alpha"),
    ({"mode": "hybrid", "alpha": 0.5}, "alpha applies to fusion 'convex'"),
    ({"mode": "dense", "fusion": "rrf"}, "apply to mode 'hybrid'"),
    ({"alpha": 0.2}, "apply to mode 'hybrid'"),
])
def test_fusion_options_out_of_place_are_422(client, extra, message):
    r = client.post("/search", json={"query": "chair", **extra})
    assert r.status_code == 422 and message in r.text
