"""``create_app(settings)``: the FastAPI search service over one index, and its web page.

Endpoints (JSON unless noted; all but ``/health``, ``/`` and ``/static/*`` need the API key
when one is configured):

=========================  ================================================================
``POST /search``           text query -> ranked hits (paging, filters, ``min_relevance``)
``POST /search/image``     multipart image upload -> ranked hits (400 if no image tower)
``PUT /documents/{id}``    add or replace one document (201 created, 200 replaced)
``POST /documents``        add or replace a batch of documents
``GET /documents/{id}``    stored fields (``?vector=true``: and the stored unit vector)
``DELETE /documents/{id}`` delete one document (404 if absent)
``GET /images/{path}``     an image file under the configured image root (thumbnails)
``GET /health``            liveness and index size, never authenticated
``GET /metrics``           request counts, latency quantiles, index and log state
``GET /openapi.json``      the OpenAPI spec
``GET /``                  the search page (plain HTML + JS from ``/static``)
=========================  ================================================================

Bad input is a 4xx with a JSON ``detail``, never a 5xx: 401 (no key) / 403 (wrong key), 404, 413
(body larger than ``max_request_bytes``), 422 (validation, data errors: strict types, invalid
Unicode, ids outside the id alphabet, see :mod:`gcl.service.schemas`), 400 (image search without
a tower, a path that is not UTF-8, a bad ``Content-Length`` or ``Host``; see
:mod:`gcl.service.middleware`). Every answer carries the security headers. Writes are durable when
acknowledged, and one process at a time writes an index directory (see :mod:`gcl.service.durable`).
"""

import logging
import math
from contextlib import asynccontextmanager

from gcl.calibration import find_calibration
from gcl.errors import ConfigError, GCLError
from gcl.service.durable import DurableIndex
from gcl.service.encoding import ServiceEncoders
from gcl.service.metrics import Metrics
from gcl.service.middleware import AllowedHosts, BodyLimit, Observe, SecurityHeaders, Utf8Path
from gcl.service.routers import documents, operations, page, search
from gcl.service.schemas import build_schemas
from gcl.service.settings import ServiceSettings

log = logging.getLogger("gcl.service")
MAX_ECHO_CHARS = 200  # of an input echoed in a 422


def _text(value: str) -> str:
    """``value`` cut to ``MAX_ECHO_CHARS``, lone surrogates written as ``\\udXXX`` text (UTF-8 safe)."""
    if len(value) > MAX_ECHO_CHARS:
        value = value[:MAX_ECHO_CHARS] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _jsonable(value):
    """A strict-JSON, UTF-8-encodable copy of validation errors: they may echo NaN, bytes, exception
    objects, lone surrogates or a whole oversized input."""
    if isinstance(value, dict):
        return {_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return _text(bytes(value[:MAX_ECHO_CHARS]).decode("utf-8", "replace"))
    return _text(str(value))


def open_store(settings: ServiceSettings):
    """The write-ahead-logged directory (:class:`DurableIndex`) when the backend leaves logging to gcl,
    else the database written straight through (Milvus)."""
    from gcl.index.factory import backend_for, open_index

    options = {k: v for k, v in (("collection", settings.collection), ("token", settings.token),
                                 ("db_name", settings.db_name)) if v}
    if not backend_for(settings.index_dir).write_ahead_log:
        from gcl.service.direct import DirectIndex

        return DirectIndex(open_index(settings.index_dir, **options))
    if options:
        raise ConfigError(f"collection, token and db_name apply to a Milvus index only; {settings.index_dir} is a directory")
    return DurableIndex(settings.index_dir, checkpoint_every=settings.checkpoint_every)


def _lexical_index(store, settings: ServiceSettings):
    """BM25 over the stored fields of a directory index (read from ``lexical/`` when it is current,
    else built at the first lexical search and after writes); None when the backend has no lexical side."""
    from gcl.index.factory import backend_for
    from gcl.index.lexical import LexicalIndex

    if not backend_for(settings.index_dir).supports_lexical:
        return None
    return LexicalIndex.open(store.index, settings.index_dir)


def create_app(settings: ServiceSettings, *, model=None, image_tower=None):
    """Build the app: load (repair, replay) the index and the encoder now, so errors surface at start.

    ``model`` (optional) is an already loaded encoder to use instead of ``settings.model`` /
    the manifest's model (tests pass a tiny one); ``image_tower`` likewise. The loaded objects live
    on ``app.state`` (settings, store, encoders, calibration, lexical, metrics); the routes are in
    :mod:`gcl.service.routers`, one module per concern.
    """
    from fastapi import FastAPI

    S = build_schemas(settings)
    store = open_store(settings)
    try:
        if model is None:
            encoders = ServiceEncoders.load(store.dim, store.model, settings.model, image_root=settings.image_root,
                                            backend=settings.encoder_backend)
        else:
            encoders = ServiceEncoders(model, store.dim, name=settings.model or "the given model", image_tower=image_tower,
                                        image_root=settings.image_root)
        calibration = find_calibration(encoders.model, settings.model or store.model, settings.calibration)
    except BaseException:
        store.close()
        raise

    @asynccontextmanager
    async def lifespan(app):
        yield
        store.close()  # checkpoint: the log is emptied into a saved index

    app = FastAPI(
        title="gcl search service", version="1", lifespan=lifespan,
        description="Single-stage search over a gcl vector index: text (and image) queries, document writes.",
        docs_url=None, redoc_url=None, openapi_url=None,  # the spec is served below, behind the key; no CDN UIs
    )
    state = app.state
    state.settings, state.store, state.encoders, state.metrics = settings, store, encoders, Metrics()
    state.calibration = calibration
    state.lexical = _lexical_index(store, settings)  # None for Milvus: lexical/hybrid modes answer 422
    _add_error_handlers(app)
    # the last added runs first: headers on every answer, every request counted (see middleware.py)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(Utf8Path)
    app.add_middleware(AllowedHosts, hosts=settings.allowed_hosts)
    app.add_middleware(Observe, metrics=state.metrics)
    app.add_middleware(SecurityHeaders)
    for concern in (search, documents, page, operations):  # this order is the OpenAPI spec's path order
        app.include_router(concern.router(S, settings))
    page.mount_static(app)
    return app


def _add_error_handlers(app) -> None:
    """A :class:`GCLError` and a validation error are 422s with a JSON ``detail`` (echoes made safe)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(GCLError)
    async def _gcl_error(request: Request, exc: GCLError):
        return JSONResponse({"detail": _text(str(exc))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _jsonable(exc.errors())}, status_code=422)


__all__ = ["create_app", "ServiceSettings", "ConfigError"]
