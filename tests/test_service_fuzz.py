"""Fuzz the service from its own OpenAPI spec (schemathesis): whatever the input, never a 5xx.

Uses schemathesis' Python API (``schema.get_all_operations()`` → ``operation.as_strategy()``)
driven by a plain hypothesis ``@given`` inside the test, not schemathesis' pytest plugin: the
plugin reaches into pytest internals (``Function._nodeid``) that pytest 9.2 removed, which made
the README's test command fail on a fresh machine.

schemathesis generates valid JSON text only, so :func:`test_no_server_errors_on_raw_bytes` adds
a hypothesis strategy of raw request bodies and paths for every route, built from pieces that
JSON and HTTP allow but Unicode does not: lone surrogate escapes (``"\\ud800"``), invalid
UTF-8 bytes, NUL and control characters, and huge or non-integer numbers. Every answer must be
below 500, and every 4xx UTF-8 JSON with a ``detail``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

import json  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from gcl.service import ServiceSettings, create_app  # noqa: E402
from service_helpers import build_tiny_index, make_documents, write_pngs  # noqa: E402

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def app(tmp_path_factory, one_torch_thread):
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("fuzz")
    model_dir = make_tiny_sentence_transformer(root / "model")
    model = BiEncoder.load(model_dir)
    docs = make_documents(40)
    build_tiny_index(model, model_dir, root / "index", docs)
    write_pngs(root / "images", [p for p in docs["image"] if isinstance(p, str)][:3])
    return create_app(ServiceSettings(index_dir=root / "index", image_root=root / "images", max_batch=8,
                                      max_request_bytes=64 * 1024, checkpoint_every=50), model=model)


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, "the OpenAPI schema lost its operations"
    return operations


def _fuzz(operation, mode: GenerationMode, calls: list[int]) -> list[str]:
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call()
        calls.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} body={case.body!r:.200} "
                            f"-> {response.status_code}: {response.text[:300]}")

    try:
        run()
    except Unsatisfiable:
        # an operation without parameters or body has no invalid input to generate
        assert mode is GenerationMode.NEGATIVE, f"no valid case for {operation.label}"
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_server_errors(api_schema, mode):
    failures: list[str] = []
    calls: list[int] = []
    for operation in _operations(api_schema):
        failures += _fuzz(operation, mode, calls)
    assert not failures, "\n".join(failures[:20])
    assert len(calls) >= 50, f"only {len(calls)} requests were generated"
    if mode is GenerationMode.NEGATIVE:
        assert sum(400 <= c < 500 for c in calls) >= 25, "invalid input was not refused with a 4xx"


# ---------------------------------------------------------------------------- raw bytes
ESCAPES = ["\\ud800", "\\udfff", "\\udbff", "\\udc00x", "\\ud83d\\ude00", "\\u0000", "\\u001f", "\\ufffd", "\\u0085"]
BAD_BYTES = [b"\xff", b"\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x00", b"\x1f"]
NUMBERS = ["1" + "0" * 400, "-1" + "0" * 30, "1e400", "-1e400", "9007199254740993", "1.5", "-0", "0", "3",
           "true", "false", "null", '"10"', "[]", "{}"]


def _string_literal():
    """A JSON string literal (bytes) of plain text, Unicode-invalid escapes and invalid UTF-8 bytes."""
    plain = st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=6).map(str.encode)
    piece = st.one_of(plain, st.sampled_from(ESCAPES).map(str.encode), st.sampled_from(BAD_BYTES))
    return st.lists(piece, min_size=1, max_size=4).map(lambda parts: b'"' + b"".join(parts) + b'"')


def _value():
    return st.one_of(_string_literal(), st.sampled_from(NUMBERS).map(str.encode))


def _object(pairs):
    return b"{" + b", ".join(k + b": " + v for k, v in pairs) + b"}"


@st.composite
def raw_requests(draw):
    """(method, path, body or None): one route of the API, with hostile pieces in the body and path."""
    s, v = _string_literal(), _value()
    path_piece = st.one_of(
        st.binary(min_size=1, max_size=6).map(lambda b: "".join(f"%{x:02x}" for x in b)),
        st.sampled_from(BAD_BYTES).map(lambda b: "".join(f"%{x:02x}" for x in b) + "id"),
        st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6))
    route = draw(st.sampled_from(["search", "put", "batch", "get", "delete", "image"]))
    if route == "search":
        pairs = [(b'"query"', draw(st.one_of(s, v)))]
        for key in draw(st.lists(st.sampled_from([b'"k"', b'"offset"', b'"filters"', None]), max_size=3, unique=True)):
            pairs.append((key, _object([(draw(s), draw(v))])) if key == b'"filters"' else
                         (draw(s), draw(v)) if key is None else (key, draw(v)))
        return "POST", "/search", _object(pairs)
    if route == "put":
        fields = _object([(b'"title"', draw(s)), (draw(s), draw(v))])
        return "PUT", "/documents/" + draw(path_piece), _object([(b'"fields"', fields)])
    if route == "batch":
        doc = _object([(b'"id"', draw(s)), (b'"fields"', _object([(b'"title"', draw(s)), (draw(s), draw(v))]))])
        return "POST", "/documents", _object([(b'"documents"', b"[" + doc + b"]")])
    if route == "image":
        return "GET", "/images/" + draw(path_piece) + ".png", None
    return ("GET" if route == "get" else "DELETE"), "/documents/" + draw(path_piece), None


def test_no_server_errors_on_raw_bytes(app):
    from fastapi.testclient import TestClient

    client = TestClient(app, raise_server_exceptions=False)
    failures: list[str] = []
    statuses: list[int] = []

    @given(request=raw_requests())
    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(request):
        method, path, body = request
        headers = {"Content-Type": "application/json"} if body is not None else {}
        r = client.request(method, path, content=body, headers=headers)
        statuses.append(r.status_code)
        problem = None
        if r.status_code >= 500:
            problem = "server error"
        elif r.status_code >= 400:
            try:
                assert json.loads(r.content.decode("utf-8"))["detail"]
            except (ValueError, KeyError, AssertionError):
                problem = "4xx that is not UTF-8 JSON with a detail"
        if problem:
            failures.append(f"{problem}: {method} {path} body={body!r:.200} -> {r.status_code}: {r.content[:200]!r}")

    run()
    assert not failures, "\n".join(failures[:20])
    assert sum(400 <= c < 500 for c in statuses) >= 150, "hostile input was not refused with a 4xx"
    assert any(c < 300 for c in statuses), "no request got through: the strategy lost its valid cases"
