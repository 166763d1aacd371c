"""Fuzz the service from its own OpenAPI spec (schemathesis): whatever the input, never a 5xx."""

from __future__ import annotations

import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from gcl.service import ServiceSettings, create_app  # noqa: E402
from service_helpers import build_tiny_index, make_documents, write_pngs  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, one_torch_thread):
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("fuzz")
    model_dir = make_tiny_sentence_transformer(root / "model")
    model = BiEncoder.load(model_dir)
    docs = make_documents(40)
    build_tiny_index(model, model_dir, root / "index", docs)
    write_pngs(root / "images", [p for p in docs["image"] if isinstance(p, str)][:3])
    app = create_app(ServiceSettings(index_dir=root / "index", image_root=root / "images", max_batch=8,
                                     max_request_bytes=64 * 1024, checkpoint_every=50), model=model)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
