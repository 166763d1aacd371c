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

import html
import logging
import math
import mimetypes
import secrets
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Optional

from gcl.calibration import find_calibration
from gcl.data.errors import ConfigError, DataError, GCLError
from gcl.service.durable import DurableIndex
from gcl.index.hybrid import HybridParams, fuse_hits
from gcl.service.encoding import ServiceEncoders
from gcl.service.metrics import Metrics
from gcl.service.middleware import AllowedHosts, BodyLimit, Observe, SecurityHeaders, Utf8Path
from gcl.service.schemas import build_schemas
from gcl.service.settings import ServiceSettings

log = logging.getLogger("gcl.service")
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
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
    """The write-ahead-logged faiss directory (:class:`DurableIndex`), or Milvus written straight through."""
    from gcl.index.factory import is_milvus_location, open_index

    if is_milvus_location(settings.index_dir):
        from gcl.service.direct import DirectIndex

        options = {k: v for k, v in (("collection", settings.collection), ("token", settings.token),
                                     ("db_name", settings.db_name)) if v}
        return DirectIndex(open_index(settings.index_dir, **options))
    if settings.collection or settings.token or settings.db_name:
        raise ConfigError(f"collection, token and db_name apply to a Milvus index only; {settings.index_dir} is a directory")
    return DurableIndex(settings.index_dir, checkpoint_every=settings.checkpoint_every)


def _lexical_index(store, settings: ServiceSettings):
    """BM25 over the stored fields of a directory index (read from ``lexical/`` when it is current,
    else built at the first lexical search and after writes); None for Milvus."""
    from gcl.index.lexical import LexicalIndex

    if not hasattr(store.index, "live_documents"):
        return None
    return LexicalIndex.open(store.index, settings.index_dir)


def create_app(settings: ServiceSettings, *, model=None, image_tower=None):
    """Build the app: load (repair, replay) the index and the encoder now, so errors surface at start.

    ``model`` (optional) is an already loaded encoder to use instead of ``settings.model`` /
    the manifest's model (tests pass a tiny one); ``image_tower`` likewise.
    """
    from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
    from fastapi.staticfiles import StaticFiles
    from pydantic import ValidationError

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
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app):
        yield
        store.close()  # checkpoint: the log is emptied into a saved index

    app = FastAPI(
        title="gcl search service", version="1", lifespan=lifespan,
        description="Single-stage search over a gcl vector index: text (and image) queries, document writes.",
        docs_url=None, redoc_url=None, openapi_url=None,  # the spec is served below, behind the key; no CDN UIs
    )
    app.state.settings, app.state.store, app.state.encoders, app.state.metrics = settings, store, encoders, metrics

    # ------------------------------------------------------------------ auth
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key (or use Bearer)")
    bearer = HTTPBearer(auto_error=False, description="the API key as a Bearer token")

    def require_key(
        key: Optional[str] = Depends(key_header),
        cred: Optional[HTTPAuthorizationCredentials] = Depends(bearer),
    ) -> None:
        if settings.api_key is None:
            return
        given = key if key is not None else (cred.credentials if cred is not None else None)
        if given is None:
            raise HTTPException(401, "missing API key: send 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), settings.api_key.encode("utf-8")):
            raise HTTPException(403, "wrong API key")

    auth = [Depends(require_key)]
    errors = {401: {"model": S.Error}, 403: {"model": S.Error}, 413: {"model": S.Error}, 422: {"model": S.Error}}

    # ------------------------------------------------------------------ errors and metrics
    @app.exception_handler(GCLError)
    async def _gcl_error(request: Request, exc: GCLError):
        return JSONResponse({"detail": _text(str(exc))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _jsonable(exc.errors())}, status_code=422)

    # the last added runs first: headers on every answer, every request counted (see middleware.py)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(Utf8Path)
    app.add_middleware(AllowedHosts, hosts=settings.allowed_hosts)
    app.add_middleware(Observe, metrics=metrics)
    app.add_middleware(SecurityHeaders)

    # ------------------------------------------------------------------ search
    lexical = _lexical_index(store, settings)  # None for Milvus: lexical/hybrid modes answer 422

    def _text_hits(req, window: int) -> list:
        """The first ``window`` hits of a text query in its mode (dense, lexical or hybrid)."""
        filters = req.filters or None
        if req.mode != "dense" and lexical is None:
            raise HTTPException(422, f"mode {req.mode!r} needs a directory index (BM25 over its stored fields); "
                                     f"this service runs on {type(store.index).__name__}")
        if req.mode == "lexical":
            return lexical.search([req.query], window, filters=filters)[0]
        if req.mode == "dense":
            return store.search(encoders.queries([req.query]), window, filters=filters)[0]
        params = HybridParams(fusion=req.fusion, alpha=req.alpha)
        depth = max(params.depth, window)
        dense = store.search(encoders.queries([req.query]), depth, filters=filters)[0]
        return fuse_hits(dense, lexical.search([req.query], depth, filters=filters)[0], params, window)

    def _calibrated(req, hits: list) -> tuple[list, Optional[list]]:
        """``(hits cut at req.min_relevance, their calibrated relevance)``; relevance None when the
        model has no calibration or the mode is not dense (the map reads cosines)."""
        if req.min_relevance is not None:
            if calibration is None:
                raise HTTPException(422, "min_relevance needs a calibrated model: this service's model has no "
                                         "calibration (run 'gcl calibrate', then serve with it)")
            if req.mode != "dense":
                raise HTTPException(422, f"min_relevance applies to mode 'dense' (the cosine), not {req.mode!r}")
            calibration.check_min_relevance(req.min_relevance)  # a ConfigError: 422 naming the grade range
        if calibration is None or req.mode != "dense":
            return hits, None
        return calibration.cut(hits, req.min_relevance)

    def _search(vectors, k: int, offset: int, filters, query: Optional[str], t0: float, hits=None, relevance=None):
        window = offset + k
        if hits is None:
            hits = store.search(vectors, window + 1, filters=filters or None)[0]
        page = [S.Hit(rank=offset + i + 1, doc_id=h.doc_id, score=h.score, fields=h.fields,
                      relevance=relevance[offset + i] if relevance else None)
                for i, h in enumerate(hits[offset:window])]
        return S.SearchResponse(query=query, k=k, offset=offset, hits=page,
                                has_more=len(hits) > window and window < settings.max_k,
                                took_ms=round((time.perf_counter() - t0) * 1000.0, 3))

    @app.post("/search", response_model=S.SearchResponse, dependencies=auth, responses=errors, tags=["search"])
    def search(req: S.SearchRequest):
        """Rank documents by cosine similarity to the encoded query text (``mode``: or BM25, or both fused)."""
        t0 = time.perf_counter()
        depth = calibration.depth if calibration is not None and req.mode == "dense" else 0  # query-dependent form
        hits, relevance = _calibrated(req, _text_hits(req, max(req.offset + req.k + 1, depth)))
        return _search(None, req.k, req.offset, req.filters, req.query, t0, hits=hits, relevance=relevance)

    @app.post("/search/image", response_model=S.SearchResponse, dependencies=auth,
              responses={**errors, 400: {"model": S.Error}}, tags=["search"])
    def search_image(
        file: UploadFile = File(description="an image (PNG, JPEG, ...)"),
        k: int = Form(settings.page_size, ge=1, le=settings.max_k),
        offset: int = Form(0, ge=0, le=settings.max_k - 1),
        filters: Optional[str] = Form(None, max_length=settings.max_field_chars,
                                      description='JSON object of field filters, e.g. {"brand": "Acme"}'),
    ):
        """Rank documents by similarity to an uploaded image (needs a model with an image tower)."""
        t0 = time.perf_counter()
        if not encoders.has_image_tower:
            raise HTTPException(400, f"search by image needs a model with an image tower; {encoders.name} has none")
        if offset + k > settings.max_k:
            raise HTTPException(422, f"offset + k must be <= {settings.max_k} (got {offset} + {k})")
        parsed = None
        if filters:
            try:
                parsed = S.Filters.validate_json(filters)  # the same rules as /search's filters
            except ValidationError as exc:
                raise RequestValidationError([{**e, "loc": ("body", "filters", *e["loc"])} for e in exc.errors()])
        vector = encoders.image(file.file.read())
        return _search(vector, k, offset, parsed, None, t0)

    # ------------------------------------------------------------------ documents
    def _encode(ids, fields):
        return encoders.documents(ids, fields)

    @app.put("/documents/{doc_id:path}", response_model=S.WriteResponse, dependencies=auth,
             responses={**errors, 201: {"model": S.WriteResponse}}, tags=["documents"])
    def put_document(doc_id: S.DocId, doc: S.DocumentIn, response: Response):
        """Add a document (201) or replace one (200): vector re-encoded, fields replaced."""
        fields = [dict(doc.fields)]
        result = store.upsert([doc_id], _encode([doc_id], fields), fields)
        response.status_code = 201 if result.created else 200
        return S.WriteResponse(created=result.created, updated=result.updated)

    @app.post("/documents", response_model=S.WriteResponse, dependencies=auth, responses=errors, tags=["documents"])
    def post_documents(batch: S.DocumentBatch):
        """Add or replace a batch of documents; all or none (one logged write)."""
        ids = [d.id for d in batch.documents]
        if len(set(ids)) != len(ids):
            dup = next(d for i, d in enumerate(ids) if d in ids[:i])
            raise HTTPException(422, f"document id {dup!r} appears twice in the batch")
        fields = [dict(d.fields) for d in batch.documents]
        result = store.upsert(ids, _encode(ids, fields), fields)
        return S.WriteResponse(created=result.created, updated=result.updated)

    @app.get("/documents/{doc_id:path}", response_model=S.DocumentOut, dependencies=auth,
             responses={**errors, 404: {"model": S.Error}}, tags=["documents"])
    def get_document(doc_id: S.DocId, vector: bool = Query(False, description="include the stored unit vector")):
        doc = store.get(doc_id)
        if doc is None:
            raise HTTPException(404, f"document {doc_id!r} is not in the index")
        return S.DocumentOut(id=doc.doc_id, fields=doc.fields, vector=doc.vector.tolist() if vector else None)

    @app.delete("/documents/{doc_id:path}", response_model=S.DeleteResponse, dependencies=auth,
                responses={**errors, 404: {"model": S.Error}}, tags=["documents"])
    def delete_document(doc_id: S.DocId):
        if not store.delete([doc_id]):
            raise HTTPException(404, f"document {doc_id!r} is not in the index")
        return S.DeleteResponse(deleted=doc_id)

    # ------------------------------------------------------------------ images
    @app.get("/images/{path:path}", dependencies=auth, responses={**errors, 404: {"model": S.Error}},
             response_class=FileResponse, tags=["page"])
    def image(path: str):
        """An image file under the configured image root; paths that leave the root are refused (403)."""
        from gcl.data.images import resolve_image_path

        if settings.image_root is None:
            raise HTTPException(404, "no image root is configured")
        try:
            target = resolve_image_path(path, settings.image_root)
        except DataError as exc:
            raise HTTPException(403, str(exc)) from exc
        if target.suffix.lower() not in IMAGE_TYPES or not target.is_file():
            raise HTTPException(404, f"no image {path!r} under the image root")
        return FileResponse(target, media_type=mimetypes.guess_type(target.name)[0] or "application/octet-stream")

    # ------------------------------------------------------------------ operations
    @app.get("/health", response_model=S.Health, tags=["operations"])
    def health():
        return S.Health(status="ok", documents=len(store), dim=store.dim, model=encoders.name,
                        image_search=encoders.has_image_tower)

    @app.get("/metrics", dependencies=auth, responses=errors, tags=["operations"])
    def get_metrics() -> dict:
        snap = metrics.snapshot()
        snap["index"] = {"documents": len(store), "dim": store.dim, "kind": store.index.kind,
                         "backend": type(store.index).__name__, "tombstones": getattr(store.index, "n_tombstones", 0), "logged_writes_pending": store.pending,
                         "checkpoints": store.checkpoints, "replayed_at_start": store.replayed}
        return snap

    @app.get("/openapi.json", dependencies=auth, include_in_schema=False)
    def openapi_spec():
        return JSONResponse(app.openapi())

    # ------------------------------------------------------------------ page
    static = resources.files("gcl.service") / "static"
    page = (static / "index.html").read_text(encoding="utf-8")
    for name, value in (("PAGE_SIZE", settings.page_size), ("AUTH", int(settings.api_key is not None)),
                        ("IMAGE_FIELD", settings.image_field if settings.image_root else ""),
                        ("TITLE_FIELD", settings.title_field), ("MAX_K", settings.max_k)):
        page = page.replace("{{%s}}" % name, html.escape(str(value), quote=True))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


__all__ = ["create_app", "ServiceSettings", "ConfigError"]
