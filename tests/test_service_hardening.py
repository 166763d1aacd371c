"""The service under hostile input: invalid Unicode, ids outside the alphabet, loose types, bad
Content-Length, random methods and paths against /metrics, security headers, allowed hosts.

Every refusal must be a 4xx whose body is UTF-8 JSON with a ``detail`` (never a 5xx, never an
echo that cannot be encoded).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from gcl.service import ServiceSettings, create_app  # noqa: E402
from service_helpers import build_tiny_index, free_port, make_documents, write_pngs  # noqa: E402

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_torch_thread):
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("hardening")
    model_dir = make_tiny_sentence_transformer(root / "model")
    model = BiEncoder.load(model_dir)
    return model, build_tiny_index(model, model_dir, root / "base", make_documents(20))


@pytest.fixture
def client(tiny, tmp_path):
    model, base = tiny
    shutil.copytree(base, tmp_path / "index")
    app = create_app(ServiceSettings(index_dir=tmp_path / "index", max_request_bytes=64 * 1024), model=model)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_json_4xx(r, *statuses):
    assert 400 <= r.status_code < 500, (r.status_code, r.content[:300])
    if statuses:
        assert r.status_code in statuses, (r.status_code, r.content[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = json.loads(r.content.decode("utf-8"))  # strict UTF-8: no echoed surrogate can get through
    assert body["detail"]
    return body


# ---------------------------------------------------------------------------- 2. invalid Unicode
SURROGATE = "\\ud800"  # a lone surrogate, as JSON writes it
UNICODE_CASES = [
    ("post", "/search", '{"query": "%s"}'),
    ("post", "/search", '{"query": "x", "filters": {"%s": "a"}}'),
    ("post", "/search", '{"query": "x", "filters": {"brand": "%s"}}'),
    ("post", "/search", '{"query": "x", "%s": 1}'),
    ("put", "/documents/a", '{"fields": {"title": "%s"}}'),
    ("put", "/documents/a", '{"fields": {"title": "t", "%s": "v"}}'),
    ("post", "/documents", '{"documents": [{"id": "%s", "fields": {"title": "t"}}]}'),
    ("post", "/documents", '{"documents": [{"id": "a", "fields": {"title": "t", "b": "x%sy"}}]}'),
]


@pytest.mark.parametrize("surrogate", [SURROGATE, "\\udfff", "\\ud83d"])
@pytest.mark.parametrize("method,url,template", UNICODE_CASES)
def test_lone_surrogates_anywhere_in_a_body_are_a_json_422(client, method, url, template, surrogate):
    n = len(client.app.state.store)
    r = getattr(client, method)(url, content=(template % surrogate).encode(), headers=JSON)
    body = assert_json_4xx(r, 422)
    assert "unicode" in json.dumps(body)
    assert len(client.app.state.store) == n


def test_surrogates_and_bad_json_in_image_search_filters_are_422(tiny, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    import torch

    from gcl.encoders.image import ImageTower, ImageTowerConfig

    model, base = tiny
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig.tiny(out_dim=model.dim), pretrained=False).eval()
    shutil.copytree(base, tmp_path / "index")
    client = TestClient(create_app(ServiceSettings(index_dir=tmp_path / "index"), model=model, image_tower=tower))
    write_pngs(tmp_path, ["q.png"])
    png = {"file": ("q.png", (tmp_path / "q.png").read_bytes(), "image/png")}
    assert client.post("/search/image", files=png, data={"filters": '{"brand": "x"}'}).status_code == 200
    for filters in ['{"brand": "\\ud800"}', '{"\\udc00": "a"}', '{"brand": "a\\udfffb"}', '{"brand": 3}',
                    '["brand"]', "{bad", '{"brand": "x"} trailing']:
        r = client.post("/search/image", files=png, data={"filters": filters})
        assert_json_4xx(r, 422)


def multipart(fields: list[tuple[bytes, bytes]], png: bytes, boundary: bytes = b"gclBOUNDARY") -> tuple[bytes, dict]:
    """A raw multipart/form-data body (fields as given, byte for byte) with one image part."""
    out = b""
    for name, value in fields:
        out += b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value + b"\r\n"
    out += (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary + b"--\r\n")
    return out, {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


def test_invalid_utf8_in_image_search_form_fields_is_a_422_naming_the_field(tiny, tmp_path):
    """Starlette decodes an invalid UTF-8 form field as latin-1: the filter then matched nothing and
    the answer was 200 with no hits. Raw bytes, since an HTTP client library would encode text."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import torch

    from gcl.encoders.image import ImageTower, ImageTowerConfig

    model, base = tiny
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig.tiny(out_dim=model.dim), pretrained=False).eval()
    shutil.copytree(base, tmp_path / "index")
    client = TestClient(create_app(ServiceSettings(index_dir=tmp_path / "index"), model=model, image_tower=tower),
                        raise_server_exceptions=False)
    write_pngs(tmp_path, ["q.png"])
    png = (tmp_path / "q.png").read_bytes()
    title = client.app.state.store.get(make_documents(20).index[0]).fields["title"]
    good = json.dumps({"title": title}, ensure_ascii=False).encode("utf-8")
    body, headers = multipart([(b"filters", good)], png)
    r = client.post("/search/image", content=body, headers=headers)
    assert r.status_code == 200 and [h["fields"]["title"] for h in r.json()["hits"]] == [title]
    accented = json.dumps({"title": "Chaise \u00e9l\u00e9gante"}, ensure_ascii=False).encode("utf-8")  # valid UTF-8
    r = client.post("/search/image", content=multipart([(b"filters", accented)], png)[0], headers=headers)
    assert r.status_code == 200 and r.json()["hits"] == []  # a real filter that matches nothing
    for fields, name in [([(b"filters", b'{"title": "\xff\xfe"}')], "filters"),
                         ([(b"filters", b'{"title": "caf\xe9"}')], "filters"),  # latin-1 bytes
                         ([(b"k", b"3"), (b"filters", b'{"t": "\xed\xa0\x80"}')], "filters"),  # an encoded surrogate
                         ([(b"k", b"\xc0\x80")], "k"),  # overlong NUL
                         ([(b"fil\xffters", b"{}")], "part 1 (its name)")]:
        r = client.post("/search/image", content=multipart(fields, png)[0], headers=headers)
        detail = assert_json_4xx(r, 422)["detail"]
        assert detail[0]["loc"] == ["body", name] and "not valid UTF-8" in detail[0]["msg"], detail
    latin1 = {"Content-Type": headers["Content-Type"] + "; charset=latin-1"}  # a declared charset is honoured
    r = client.post("/search/image", content=multipart([(b"filters", b'{"title": "caf\xe9"}')], png)[0], headers=latin1)
    assert r.status_code == 200 and r.json()["hits"] == []


@pytest.mark.parametrize("raw", [b'{"query": "\xff\xfe"}', b'{"query": "\xed\xa0\x80"}', b'{"query": "a\xc0\x80"}'])
def test_invalid_utf8_in_a_body_is_a_json_4xx(client, raw):
    assert_json_4xx(client.post("/search", content=raw, headers=JSON))


# ---------------------------------------------------------------------------- 2. the id alphabet
@pytest.mark.parametrize("path,status", [
    ("%00", 422), ("a%01b", 422), ("%1f", 422), ("%7f", 422), ("%c2%80", 422),  # control characters (Cc)
    ("%ef%bf%bd", 422),  # U+FFFD itself
    ("%ff", 400), ("%fe", 400), ("%ed%a0%80", 400), ("%c0%80", 400), ("a%e2%82", 400),  # not UTF-8
])
def test_ids_outside_the_alphabet_are_refused_on_every_id_route(client, path, status):
    n = len(client.app.state.store)
    assert_json_4xx(client.put(f"/documents/{path}", json={"fields": {"title": "t"}}), status)
    assert_json_4xx(client.get(f"/documents/{path}"), status)
    assert_json_4xx(client.delete(f"/documents/{path}"), status)
    assert len(client.app.state.store) == n and client.app.state.store.pending == 0


def test_undecodable_ids_no_longer_collide(client):
    """Before: %ff and %fe both became U+FFFD, so the second PUT replaced the first's document."""
    assert client.put("/documents/%ff", json={"fields": {"title": "one"}}).status_code == 400
    assert client.put("/documents/%fe", json={"fields": {"title": "two"}}).status_code == 400
    assert "\ufffd" not in client.app.state.store


def test_batch_ids_follow_the_alphabet_and_good_ids_still_work(client):
    for bad in ["a\u0000", "\u0007", "x\u009fy", "\ufffd"]:
        r = client.post("/documents", json={"documents": [{"id": bad, "fields": {"title": "t"}}]})
        assert "U+" in json.dumps(assert_json_4xx(r, 422))
    for good in ["café", "a/b c", "日本語", "emoji-\U0001F600", "tab-less id.with:punct"]:
        assert client.post("/documents", json={"documents": [{"id": good, "fields": {"title": "t"}}]}).status_code == 200
        assert client.get("/documents/" + good.replace("/", "%2F")).json()["id"] == good


# ---------------------------------------------------------------------------- 2. strict types
@pytest.mark.parametrize("body", [
    {"query": "x", "k": "10"}, {"query": "x", "k": True}, {"query": "x", "offset": False},
    {"query": "x", "k": 10.0}, {"query": "x", "offset": "0"}, {"query": 5},
])
def test_loose_types_are_422(client, body):
    assert_json_4xx(client.post("/search", json=body), 422)


def test_huge_numbers_are_refused_not_rounded(client):
    huge = "1" + "0" * 400
    for raw in ['{"query": "x", "k": %s}' % huge, '{"query": "x", "k": 1e400}', '{"query": "x", "offset": -%s}' % huge]:
        assert_json_4xx(client.post("/search", content=raw, headers=JSON), 422)
    for value in [huge, str(2**53), "-" + str(2**53), "1e400"]:
        r = client.put("/documents/n", content='{"fields": {"title": "t", "n": %s}}' % value, headers=JSON)
        assert_json_4xx(r, 422)
    r = client.put("/documents/n", json={"fields": {"title": "t", "n": 2**53 - 1, "f": 2.5, "b": True, "z": None}})
    assert r.status_code == 201
    assert client.get("/documents/n").json()["fields"] == {"title": "t", "n": 2**53 - 1, "f": 2.5, "b": True, "z": None}


# ---------------------------------------------------------------------------- 2. Content-Length (real uvicorn)
@pytest.fixture
def live(tiny, tmp_path):
    """``gcl serve``'s uvicorn configuration (gcl.service.server) in a thread: its URL host and port."""
    pytest.importorskip("uvicorn")
    import uvicorn

    from gcl.service.server import server_config

    model, base = tiny
    shutil.copytree(base, tmp_path / "index")
    app = create_app(ServiceSettings(index_dir=tmp_path / "index"), model=model)
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def raw_request(port: int, head: bytes, body: bytes = b"{}") -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"\r\n\r\n" + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head_part, _, rest = data.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head_part.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    head_part, _, rest = data.partition(b"\r\n\r\n")
    lines = head_part.split(b"\r\n")
    headers = {k.strip().lower().decode(): v.strip().decode() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


@pytest.mark.parametrize("length", [b"abc", b"-5", b"+2", b"0x2", b"99999999999999999999999999", b"\xff", b"1_0"])
def test_a_malformed_content_length_is_a_json_400(live, length):
    status, headers, body = raw_request(live, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                        b"Content-Type: application/json\r\nContent-Length: " + length)
    assert status == 400, (status, body)
    assert headers["content-type"] == "application/json" and json.loads(body)["detail"]
    assert headers["x-content-type-options"] == "nosniff"


def test_the_live_server_still_answers_good_requests(live):
    status, headers, body = raw_request(live, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                        b"Content-Type: application/json\r\nContent-Length: 17", b'{"query": "lamp"}')
    assert status == 200 and json.loads(body)["hits"] and headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------------- 3. bounded metrics
def test_metrics_labels_stay_bounded_under_random_methods_and_paths(client):
    rng = random.Random(0)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for i in range(400):
        method = "".join(rng.choice(letters) for _ in range(rng.randint(3, 12)))
        assert client.request(method, "/health").status_code < 500
        path = "/" + "".join(rng.choice("abcdefghij/-_") for _ in range(rng.randint(1, 30)))
        assert client.request(rng.choice(["GET", "POST", method]), path).status_code < 500
    routes = client.get("/metrics").json()["routes"]
    n_routes = len(client.app.routes)
    assert len(routes) <= 8 * n_routes + 1, sorted(routes)  # (7 known methods + OTHER) x routes + other
    assert routes["OTHER /health"]["requests"] >= 400 - 7  # a random name can be a real method
    assert routes["other"]["requests"] >= 1
    assert len(client.get("/metrics").content) < 20_000


def test_metrics_table_has_a_hard_cap():
    from gcl.service.metrics import MAX_LABELS, OVERFLOW, Metrics

    m = Metrics()
    for i in range(MAX_LABELS + 500):
        m.observe(f"label {i}", 200, 0.001)
    routes = m.snapshot()["routes"]
    assert len(routes) == MAX_LABELS + 1 and routes[OVERFLOW]["requests"] == 500


# ---------------------------------------------------------------------------- 3. security headers
def test_security_headers_on_every_response(tiny, tmp_path):
    model, base = tiny
    shutil.copytree(base, tmp_path / "index")
    c = TestClient(create_app(ServiceSettings(index_dir=tmp_path / "index", api_key="k", max_request_bytes=1000),
                              model=model))
    key = {"X-API-Key": "k"}
    responses = [
        c.get("/"), c.get("/static/app.js"), c.get("/static/style.css"), c.get("/static/nope.js"), c.get("/health"),
        c.post("/search", json={"query": "x"}),  # 401
        c.post("/search", json={"query": "x"}, headers={"X-API-Key": "bad"}),  # 403
        c.post("/search", json={"query": "x"}, headers=key), c.post("/search", json={}, headers=key),  # 200, 422
        c.get("/documents/nope", headers=key), c.request("BREW", "/health"),  # 404, 405
        c.post("/search", json={"query": "x" * 2000}, headers=key),  # 413
        c.get("/documents/%ff", headers=key),  # 400 (path not UTF-8)
        c.get("/metrics", headers=key), c.get("/openapi.json", headers=key),
    ]
    assert sorted({r.status_code for r in responses}) == [200, 400, 401, 403, 404, 405, 413, 422]
    for r in responses:
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url
        assert r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


def test_the_page_needs_nothing_the_csp_forbids(client):
    """No inline script or style, no event-handler attributes, no other origin (the browser test
    in test_service_page.py runs the page itself under the header)."""
    import re

    html = client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    js = client.get("/static/app.js").text
    assert "eval(" not in js and "new Function" not in js


# ---------------------------------------------------------------------------- 3. allowed hosts
def test_allowed_hosts(tiny, tmp_path):
    model, base = tiny
    shutil.copytree(base, tmp_path / "index")
    settings = ServiceSettings(index_dir=tmp_path / "index", allowed_hosts=("127.0.0.1", "localhost", "[::1]",
                                                                            "*.example.com"))
    c = TestClient(create_app(settings, model=model), base_url="http://127.0.0.1:8000")
    assert c.get("/health").status_code == 200
    for host in ["localhost", "localhost:9000", "[::1]:8000", "search.example.com", "a.b.example.com"]:
        assert c.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ["evil.test", "example.com", "127.0.0.2", "localhost.evil.test", "notexample.com", ""]:
        r = c.get("/health", headers={"Host": host})
        assert "allowed hosts" in assert_json_4xx(r, 400)["detail"], host
        assert r.headers["x-content-type-options"] == "nosniff"
    # the default answers any host (the loopback default of gcl serve); TestClient sends "testserver"
    assert ServiceSettings(index_dir=tmp_path / "index").allowed_hosts == ("*",)


def test_allowed_hosts_option(tmp_path, capsys):
    from gcl.cli.main import build_parser, main
    from gcl.cli.serve import settings_from_args

    args = build_parser().parse_args(["serve", "--index", str(tmp_path), "--allowed-hosts", "127.0.0.1,localhost"])
    assert settings_from_args(args).allowed_hosts == ("127.0.0.1", "localhost")
    assert settings_from_args(build_parser().parse_args(["serve", "--index", str(tmp_path)])).allowed_hosts == ("*",)
    assert main(["serve", "--index", str(tmp_path), "--allowed-hosts", "a,,b"]) == 2
    assert "allowed_hosts must be" in capsys.readouterr().err
