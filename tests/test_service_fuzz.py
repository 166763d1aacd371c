"""Fuzz the service from its own OpenAPI spec (schemathesis): whatever the input, never a 5xx.

Uses schemathesis' Python API (``schema.get_all_operations()`` → ``operation.as_strategy()``)
driven by a plain hypothesis ``@given`` inside the test, not schemathesis' pytest plugin: the
plugin reaches into pytest internals (``Function._nodeid``) that pytest 9.2 removed, which made
the README's test command fail on a fresh machine.
"""

from __future__ import annotations

import pytest

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from gcl.service import ServiceSettings, create_app  # noqa: E402
from service_helpers import build_tiny_index, make_documents, write_pngs  # noqa: E402

EXAMPLES_PER_OPERATION = 15


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
