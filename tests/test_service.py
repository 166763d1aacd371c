"""The search service in-process (fastapi.testclient): results, filters, paging, auth, limits, bad
input, writes and their durability, concurrency, image root confinement, metrics and the page."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from gcl.data.errors import GCLError  # noqa: E402
from gcl.encoders.query import encode_query_texts  # noqa: E402
from gcl.index.store import VectorIndex  # noqa: E402
from gcl.service import ServiceSettings, create_app  # noqa: E402
from gcl.service.durable import WAL_FILE  # noqa: E402
from service_helpers import build_tiny_index, make_documents, write_pngs  # noqa: E402

QUERIES = ["red chair", "navy linen pillow", "Hooli boots", "glass vase"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    """(model dir, loaded BiEncoder, documents, saved base index dir) shared by the module."""
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("service")
    model_dir = make_tiny_sentence_transformer(root / "model")
    model = BiEncoder.load(model_dir)
    docs = make_documents(80)
    base = build_tiny_index(model, model_dir, root / "base", docs)
    return model_dir, model, docs, base


@pytest.fixture
def make_client(tiny, tmp_path):
    """``make_client(**settings)`` -> TestClient over a fresh copy of the base index (same dir per test)."""
    _, model, _, base = tiny
    index_dir = tmp_path / "index"
    shutil.copytree(base, index_dir)

    made = []

    def make(**kw):
        for earlier in made:  # one writer per index: the earlier app stops as if it had crashed
            earlier.app.state.store.close(checkpoint=False)
        made.append(TestClient(create_app(ServiceSettings(index_dir=index_dir, **kw), model=model)))
        return made[-1]

    make.index_dir = index_dir
    return make


def direct(tiny, query, k, filters=None):
    _, model, _, base = tiny
    return VectorIndex.load(base).search(encode_query_texts(model, [query]), k, filters=filters)[0]


# ---------------------------------------------------------------------------- search
@pytest.mark.parametrize("query", QUERIES)
def test_search_equals_vector_index_search(make_client, tiny, query):
    client = make_client()
    r = client.post("/search", json={"query": query, "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    want = direct(tiny, query, 10)
    assert [h["doc_id"] for h in body["hits"]] == [h.doc_id for h in want]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in want], abs=1e-6)
    assert [h["fields"] for h in body["hits"]] == [h.fields for h in want]
    assert [h["rank"] for h in body["hits"]] == list(range(1, 11)) and body["has_more"] is True


def test_filters_keep_only_matching_documents(make_client, tiny):
    client = make_client()
    docs = tiny[2]
    brand = docs["brand"].iloc[3]
    r = client.post("/search", json={"query": "red chair", "k": 50, "filters": {"brand": brand}})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert hits and all(h["fields"]["brand"] == brand for h in hits)
    assert len(hits) == int((docs["brand"] == brand).sum())  # all of them: k exceeds the matches
    assert [h["doc_id"] for h in hits] == [h.doc_id for h in direct(tiny, "red chair", 50, {"brand": brand})]
    none = client.post("/search", json={"query": "red chair", "filters": {"brand": "NoSuchBrand"}})
    assert none.status_code == 200 and none.json()["hits"] == [] and none.json()["has_more"] is False


def test_paging_walks_the_ranking(make_client, tiny):
    client = make_client(max_k=20, page_size=5)
    want = [h.doc_id for h in direct(tiny, "oak lamp", 20)]
    got, more = [], []
    for page in range(4):
        body = client.post("/search", json={"query": "oak lamp", "k": 5, "offset": 5 * page}).json()
        got += [h["doc_id"] for h in body["hits"]]
        more.append(body["has_more"])
        assert [h["rank"] for h in body["hits"]] == list(range(5 * page + 1, 5 * page + 6))
    assert got == want and more == [True, True, True, False]  # the last page ends at max_k
    r = client.post("/search", json={"query": "oak lamp", "k": 5, "offset": 16})
    assert r.status_code == 422 and "offset + k must be <= 20" in r.text


# ---------------------------------------------------------------------------- auth
def test_auth_when_configured(make_client):
    client = make_client(api_key="s3cret")
    q = {"query": "red chair"}
    r = client.post("/search", json=q)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "missing API key" in r.text
    assert client.post("/search", json=q, headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.post("/search", json=q, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.post("/search", json=q, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/search", json=q, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for method, url in [("get", "/metrics"), ("get", "/openapi.json"), ("get", "/documents/d00001"),
                        ("delete", "/documents/d00001"), ("get", "/images/img/d00000.png")]:
        assert getattr(client, method)(url).status_code == 401, url
    assert client.put("/documents/x", json={"fields": {"title": "t"}}).status_code == 401
    assert client.post("/documents", json={"documents": [{"id": "x", "fields": {"title": "t"}}]}).status_code == 401
    assert client.get("/documents/d00001").status_code == 401 and "x" not in client.app.state.store
    # open: health, the page and its static files
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
    assert client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()["info"]["title"] == "gcl search service"


def test_no_auth_when_not_configured(make_client):
    client = make_client()
    assert client.post("/search", json={"query": "red chair"}).status_code == 200
    assert client.get("/metrics").status_code == 200 and client.get("/openapi.json").status_code == 200


# ---------------------------------------------------------------------------- limits and bad input
def test_request_body_size_limit(make_client):
    client = make_client(max_request_bytes=2000, max_query_chars=5000)
    assert client.post("/search", json={"query": "x" * 1500}).status_code == 200
    r = client.post("/search", json={"query": "x" * 2500})
    assert r.status_code == 413 and "larger than 2000 bytes" in r.text

    def chunks():  # no Content-Length: counted while it streams
        yield b'{"query": "'
        for _ in range(30):
            yield b"y" * 100
        yield b'"}'

    r = client.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    big = {"documents": [{"id": f"n{i}", "fields": {"title": "t" * 100}} for i in range(40)]}
    assert client.post("/documents", json=big).status_code == 413
    assert "n0" not in client.app.state.store


BAD_SEARCHES = [
    ({}, "missing"),
    ({"query": ""}, "string_too_short"),
    ({"query": "   "}, "string_pattern_mismatch"),
    ({"query": "x", "k": 0}, "greater_than_equal"),
    ({"query": "x", "k": 101}, "less_than_equal"),
    ({"query": "x", "k": "ten"}, "int_type"),  # strict: a string is not an integer, whatever it holds
    ({"query": "x", "offset": -1}, "greater_than_equal"),
    ({"query": "x", "filters": {"brand": 3}}, "string_type"),
    ({"query": "x", "filters": ["brand"]}, "dict_type"),
    ({"query": "x", "extra": 1}, "extra_forbidden"),
    ({"query": ["x"]}, "string_type"),
    ({"query": "x" * 1001}, "string_too_long"),
]


@pytest.mark.parametrize("body,error", BAD_SEARCHES)
def test_bad_search_bodies_are_422(make_client, body, error):
    r = make_client().post("/search", json=body)
    assert r.status_code == 422 and error in r.text


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b"null", b'{"query": NaN}'])
def test_malformed_json_is_422(make_client, raw):
    r = make_client().post("/search", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422


BAD_WRITES = [
    ("put", "/documents/a", {"fields": {"title": {"nested": 1}}}, "string_type"),
    ("put", "/documents/a", {"fields": {"title": "ok", "price": float("nan")}}, "finite_number"),
    ("put", "/documents/a", {"fields": {"brand": "only a brand"}}, "none of the model's document fields"),
    ("put", "/documents/a", {"fields": {"title": "   "}}, "none of the model's document fields"),
    ("put", "/documents/a", {"title": "no fields wrapper"}, "missing"),
    ("put", "/documents/" + "i" * 300, {"fields": {"title": "t"}}, "string_too_long"),
    ("post", "/documents", {"documents": []}, "too_short"),
    ("post", "/documents", {"documents": [{"id": f"b{i}", "fields": {"title": "t"}} for i in range(5)]}, "too_long"),
    ("post", "/documents", {"documents": [{"id": "b", "fields": {"title": "t"}}] * 2}, "appears twice"),
    ("post", "/documents", {"documents": [{"id": "", "fields": {"title": "t"}}]}, "string_too_short"),
]


@pytest.mark.parametrize("method,url,body,error", BAD_WRITES)
def test_bad_writes_are_422_and_change_nothing(make_client, method, url, body, error):
    client = make_client(max_batch=4)
    n = len(client.app.state.store)
    content = json.dumps(body)  # writes a bare NaN for float("nan"), which the server must refuse
    r = getattr(client, method)(url, content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and error in r.text, r.text
    assert len(client.app.state.store) == n and client.app.state.store.pending == 0


def test_missing_documents_are_404(make_client):
    client = make_client()
    assert client.get("/documents/nope").status_code == 404
    r = client.delete("/documents/nope")
    assert r.status_code == 404 and "'nope' is not in the index" in r.text


def test_image_search_without_an_image_tower_is_400(make_client, tmp_path):
    write_pngs(tmp_path, ["q.png"])
    r = make_client().post("/search/image", files={"file": ("q.png", (tmp_path / "q.png").read_bytes(), "image/png")})
    assert r.status_code == 400 and "no" in r.json()["detail"] and "image tower" in r.json()["detail"]


# ---------------------------------------------------------------------------- writes and durability
def test_writes_are_visible_in_search_and_get(make_client, tiny):
    client = make_client()
    r = client.put("/documents/new-1", json={"fields": {"title": "Zanzibar Quantum Teapot", "brand": "Zanzibar"}})
    assert r.status_code == 201 and r.json() == {"created": ["new-1"], "updated": []}
    top = client.post("/search", json={"query": "Zanzibar Quantum Teapot", "k": 1}).json()["hits"][0]
    assert top["doc_id"] == "new-1" and top["score"] == pytest.approx(1.0, abs=1e-5)
    # replace: new vector and new fields (the brand is gone)
    r = client.put("/documents/new-1", json={"fields": {"title": "Obsidian Garden Hose"}})
    assert r.status_code == 200 and r.json() == {"created": [], "updated": ["new-1"]}
    got = client.get("/documents/new-1", params={"vector": "true"}).json()
    assert got["fields"] == {"title": "Obsidian Garden Hose"}
    want = tiny[1].encode_documents(__import__("pandas").DataFrame({"title": ["Obsidian Garden Hose"]}))[0]
    np.testing.assert_allclose(got["vector"], want / np.linalg.norm(want), atol=1e-5)
    # a batch: one new, one existing
    r = client.post("/documents", json={"documents": [{"id": "new-2", "fields": {"title": "Velvet Moon Lamp"}},
                                                       {"id": "d00003", "fields": {"title": "Replaced Title"}}]})
    assert r.status_code == 200 and r.json() == {"created": ["new-2"], "updated": ["d00003"]}
    assert client.get("/documents/d00003").json()["fields"] == {"title": "Replaced Title"}
    # delete: gone from get and from every search
    assert client.delete("/documents/new-2").json() == {"deleted": "new-2"}
    assert client.get("/documents/new-2").status_code == 404
    hits = client.post("/search", json={"query": "Velvet Moon Lamp", "k": 100}).json()["hits"]
    assert "new-2" not in [h["doc_id"] for h in hits] and len(hits) == 81
    # ids with slashes and spaces travel percent-encoded
    assert client.put("/documents/a%2Fb%20c", json={"fields": {"title": "slash"}}).status_code == 201
    assert client.get("/documents/a%2Fb%20c").json()["id"] == "a/b c"


def _write_some(client):
    client.put("/documents/p1", json={"fields": {"title": "Persistent Purple Kettle"}})
    client.post("/documents", json={"documents": [{"id": f"p{i}", "fields": {"title": f"Batch item {i}"}}
                                                   for i in range(2, 6)]})
    client.put("/documents/p3", json={"fields": {"title": "Batch item three, replaced"}})
    client.delete("/documents/p4")
    client.delete("/documents/d00000")


def _assert_written(client):
    store = client.app.state.store
    assert len(store) == 80 + 5 - 2
    assert "p4" not in store and "d00000" not in store
    assert client.get("/documents/p3").json()["fields"] == {"title": "Batch item three, replaced"}
    assert client.post("/search", json={"query": "Persistent Purple Kettle", "k": 1}).json()["hits"][0]["doc_id"] == "p1"


def test_writes_survive_a_restart_without_shutdown(make_client):
    """No shutdown (as after a crash): the restarted app replays the write-ahead log."""
    client = make_client()
    _write_some(client)
    assert client.app.state.store.pending == 5 and (make_client.index_dir / WAL_FILE).stat().st_size > 0
    assert len(VectorIndex.load(make_client.index_dir)) == 80  # the saved index alone has none of them yet
    again = make_client()
    assert again.app.state.store.replayed == 5
    _assert_written(again)


def test_writes_survive_a_clean_shutdown_as_a_saved_index(make_client):
    with make_client() as client:  # the context runs the lifespan: shutdown checkpoints
        _write_some(client)
    assert (make_client.index_dir / WAL_FILE).stat().st_size == 0
    saved = VectorIndex.load(make_client.index_dir)
    assert len(saved) == 83 and "p1" in saved and "p4" not in saved
    again = make_client()
    assert again.app.state.store.replayed == 0
    _assert_written(again)


def test_checkpoints_every_n_writes(make_client):
    client = make_client(checkpoint_every=3)
    for i in range(7):
        assert client.put(f"/documents/c{i}", json={"fields": {"title": f"checkpointed {i}"}}).status_code == 201
    store = client.app.state.store
    assert store.checkpoints == 2 and store.pending == 1
    assert len(VectorIndex.load(make_client.index_dir)) == 86  # 6 of 7 in the saved index, 1 in the log
    assert len(make_client().app.state.store) == 87  # a restart replays the one logged write


def test_concurrent_writes_and_searches_keep_the_index_consistent(make_client):
    client = make_client(checkpoint_every=7)
    errors: list[str] = []
    n_writers, per_writer = 3, 12

    def writer(w):
        for i in range(per_writer):
            r = client.put(f"/documents/w{w}-{i}", json={"fields": {"title": f"writer {w} item {i} lamp"}})
            if r.status_code != 201:
                errors.append(f"put {r.status_code} {r.text}")
            if i % 3 == 2:  # delete every third just after writing it
                if client.delete(f"/documents/w{w}-{i}").status_code != 200:
                    errors.append("delete failed")

    def searcher():
        for _ in range(25):
            r = client.post("/search", json={"query": "writer item lamp", "k": 20})
            if r.status_code != 200:
                errors.append(f"search {r.status_code}")
                continue
            hits = r.json()["hits"]
            scores = [h["score"] for h in hits]
            if len(hits) != 20 or scores != sorted(scores, reverse=True) or len({h["doc_id"] for h in hits}) != 20:
                errors.append(f"bad page {hits}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    threads += [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = client.app.state.store
    want = {f"w{w}-{i}" for w in range(n_writers) for i in range(per_writer) if i % 3 != 2}
    written = {d for d in (f"w{w}-{i}" for w in range(n_writers) for i in range(per_writer)) if d in store}
    assert written == want and len(store) == 80 + len(want)
    client.app.state.store.close()
    reloaded = VectorIndex.load(make_client.index_dir)  # load checks faiss against the documents
    assert len(reloaded) == 80 + len(want) and all(d in reloaded for d in want)


# ---------------------------------------------------------------------------- images
@pytest.fixture
def image_root(tmp_path, tiny):
    root = tmp_path / "images"
    write_pngs(root, [p for p in tiny[2]["image"] if isinstance(p, str)])
    (tmp_path / "secret.png").write_bytes((root / tiny[2]["image"].iloc[0]).read_bytes())
    (root / "notes.txt").write_text("not an image")
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    return root


def test_images_are_served_from_the_root_only(make_client, image_root):
    client = make_client(image_root=image_root)
    r = client.get("/images/img/d00000.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (image_root / "img/d00000.png").read_bytes()
    for escape in ["..%2Fsecret.png", "img/..%2F..%2Fsecret.png", "%2Fetc%2Fpasswd", "link.png", "img%00.png"]:
        r = client.get("/images/" + escape)
        assert r.status_code == 403, (escape, r.status_code)
    assert client.get("/images/img/..%2Fimg%2Fd00000.png").status_code == 200  # stays inside: allowed
    assert client.get("/images/notes.txt").status_code == 404
    assert client.get("/images/img/missing.png").status_code == 404
    assert make_client().get("/images/img/d00000.png").status_code == 404  # no root configured


def test_image_search_with_a_tower(tiny, tmp_path, image_root):
    pytest.importorskip("efficientnet_lite_pytorch")
    import torch

    from gcl.data.images import load_image, preprocess
    from gcl.encoders.image import ImageTower, ImageTowerConfig

    _, model, _, base = tiny
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig.tiny(out_dim=model.dim), pretrained=False).eval()
    index_dir = tmp_path / "idx"
    shutil.copytree(base, index_dir)
    client = TestClient(create_app(ServiceSettings(index_dir=index_dir), model=model, image_tower=tower))
    assert client.get("/health").json()["image_search"] is True
    data = (image_root / "img/d00002.png").read_bytes()
    r = client.post("/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "4"})
    assert r.status_code == 200, r.text
    with torch.inference_mode():
        vec = tower(preprocess([load_image(data, root=None)], tower.preprocess_spec)).numpy()
    want = VectorIndex.load(base).search(vec, 4)[0]
    assert [h["doc_id"] for h in r.json()["hits"]] == [h.doc_id for h in want]
    bad = client.post("/search/image", files={"file": ("q.png", b"not an image", "image/png")})
    assert bad.status_code == 422 and "cannot decode image" in bad.text
    assert client.post("/search/image", files={"file": ("q.png", data, "image/png")},
                       data={"filters": "{bad"}).status_code == 422
    assert client.post("/search/image", data={"k": "3"}).status_code == 422  # no file


# ---------------------------------------------------------------------------- operations and page
def test_health_metrics_and_openapi(make_client):
    client = make_client()
    for _ in range(3):
        client.post("/search", json={"query": "red chair"})
    client.post("/search", json={})
    health = client.get("/health").json()
    assert health == {"status": "ok", "documents": 80, "dim": 32, "model": "the given model", "image_search": False}
    m = client.get("/metrics").json()
    route = m["routes"]["POST /search"]
    assert route["requests"] == 4 and route["by_status"] == {"2xx": 3, "4xx": 1}
    assert 0 < route["p50_ms"] <= route["p99_ms"] and m["index"]["documents"] == 80
    spec = client.get("/openapi.json").json()
    assert {"/search", "/search/image", "/documents", "/documents/{doc_id}", "/health", "/metrics"} <= set(spec["paths"])
    limits = spec["components"]["schemas"]["SearchRequest"]["properties"]["k"]
    assert limits["maximum"] == 100 and limits["minimum"] == 1


def test_page_is_served_without_external_resources(make_client):
    client = make_client(page_size=7)
    html = client.get("/").text
    assert 'id="search-form"' in html and 'data-page-size="7"' in html
    assert "http://" not in html and "https://" not in html
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "http://" not in r.text and "https://" not in r.text


def test_app_refuses_a_model_of_another_dimension(tiny, tmp_path):
    from gcl.data.errors import ConfigError
    from gcl.index.store import VectorIndex as VI

    other = VI(dim=3, model=str(tiny[0]))
    other.add(["a"], [[1, 0, 0]])
    other.save(tmp_path / "idx3")
    with pytest.raises(ConfigError, match="makes 32-d vectors but the index holds 3-d ones"):
        create_app(ServiceSettings(index_dir=tmp_path / "idx3"), model=tiny[1])


# ---------------------------------------------------------------------------- gcl serve (argument errors; the
# server itself runs in tests/test_service_page.py and tests/test_service_kill.py)
def test_serve_cli_user_errors(make_client, tmp_path, monkeypatch, capsys):
    from gcl.cli.main import build_parser, main
    from gcl.cli.serve import settings_from_args

    index_dir = str(make_client.index_dir)
    monkeypatch.delenv("GCL_TEST_KEY", raising=False)
    assert main(["serve", "--index", index_dir, "--api-key-env", "GCL_TEST_KEY"]) == 2
    assert "GCL_TEST_KEY: that environment variable is not set" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path / "none")]) == 2
    assert "no index here" in capsys.readouterr().err
    assert main(["serve", "--index", index_dir, "--port", "70000"]) == 2
    assert main(["serve", "--index", index_dir, "--max-k", "5", "--page-size", "10"]) == 2
    assert "page_size (10) cannot exceed max_k (5)" in capsys.readouterr().err
    monkeypatch.setenv("GCL_TEST_KEY", "k3y")
    args = build_parser().parse_args(["serve", "--index", index_dir, "--api-key-env", "GCL_TEST_KEY", "--max-k", "50"])
    s = settings_from_args(args)
    assert s.api_key == "k3y" and s.max_k == 50 and str(s.index_dir) == index_dir and args.host == "127.0.0.1"


# ---------------------------------------------------------------------------- the same service on milvus-lite
def test_service_on_milvus_lite(tiny, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from gcl.index.milvus import MilvusIndex

    model_dir, model, docs, base = tiny
    db = tmp_path / "svc.db"
    faiss_index = VectorIndex.load(base)
    ids = list(docs.index)
    lite = MilvusIndex(uri=db, collection="svc", dim=model.dim, model=str(model_dir))
    lite.add(ids, np.stack([faiss_index.get(d).vector for d in ids]), [faiss_index.get(d).fields for d in ids])
    lite.close()
    settings = ServiceSettings(index_dir=db, collection="svc")
    client = TestClient(create_app(settings, model=model))
    body = client.post("/search", json={"query": "red chair", "k": 10}).json()
    assert [h["doc_id"] for h in body["hits"]] == [h.doc_id for h in direct(tiny, "red chair", 10)]
    assert client.put("/documents/m1", json={"fields": {"title": "Milvus Marble Mortar"}}).status_code == 201
    assert client.delete("/documents/d00001").status_code == 200
    assert client.post("/search", json={"query": "Milvus Marble Mortar", "k": 1}).json()["hits"][0]["doc_id"] == "m1"
    assert client.get("/metrics").json()["index"]["backend"] == "MilvusIndex"
    client.app.state.store.close()
    again = TestClient(create_app(settings, model=model))  # acknowledged writes are in Milvus
    assert again.get("/documents/m1").json()["fields"] == {"title": "Milvus Marble Mortar"}
    assert again.get("/documents/d00001").status_code == 404 and again.get("/health").json()["documents"] == 80
    again.app.state.store.close()
    with pytest.raises(GCLError, match="apply to a Milvus index only"):
        create_app(ServiceSettings(index_dir=base, collection="svc"), model=model)
