"""``POST /search`` (text: dense, lexical or hybrid; calibrated relevance) and ``POST /search/image``."""

import time
from typing import Optional

from gcl.index.hybrid import HybridParams, fuse_hits
from gcl.service.routers.auth import error_responses, key_dependencies
from gcl.service.settings import ServiceSettings


def text_hits(state, req, window: int) -> list:
    """The first ``window`` hits of a text query in its mode (dense, lexical or hybrid)."""
    from fastapi import HTTPException

    store, lexical, encoders, filters = state.store, state.lexical, state.encoders, req.filters or None
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


def calibrated(calibration, req, hits: list) -> tuple[list, Optional[list]]:
    """``(hits cut at req.min_relevance, their calibrated relevance)``; relevance None when the
    model has no calibration or the mode is not dense (the map reads cosines)."""
    from fastapi import HTTPException

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


def page_of(S, state, hits: list, k: int, offset: int, query: Optional[str], t0: float, relevance=None):
    """The ``SearchResponse`` of hits ``offset .. offset + k - 1`` (``has_more`` within ``max_k``)."""
    window = offset + k
    page = [S.Hit(rank=offset + i + 1, doc_id=h.doc_id, score=h.score, fields=h.fields,
                  relevance=relevance[offset + i] if relevance else None)
            for i, h in enumerate(hits[offset:window])]
    return S.SearchResponse(query=query, k=k, offset=offset, hits=page,
                            has_more=len(hits) > window and window < state.settings.max_k,
                            took_ms=round((time.perf_counter() - t0) * 1000.0, 3))


def router(S, settings: ServiceSettings):
    from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    from gcl.service.forms import Utf8FormRoute

    # Utf8FormRoute: a multipart form field that is not valid UTF-8 is a 422, not latin-1 mojibake
    api = APIRouter(tags=["search"], dependencies=key_dependencies(settings), route_class=Utf8FormRoute)
    errors = error_responses(S)

    @api.post("/search", response_model=S.SearchResponse, responses=errors)
    def search(req: S.SearchRequest, request: Request):
        """Rank documents by cosine similarity to the encoded query text (``mode``: or BM25, or both fused)."""
        t0, state = time.perf_counter(), request.app.state
        calibration = state.calibration
        depth = calibration.depth if calibration is not None and req.mode == "dense" else 0  # query-dependent form
        hits, relevance = calibrated(calibration, req, text_hits(state, req, max(req.offset + req.k + 1, depth)))
        return page_of(S, state, hits, req.k, req.offset, req.query, t0, relevance=relevance)

    @api.post("/search/image", response_model=S.SearchResponse, responses=error_responses(S, 400))
    def search_image(
        request: Request,
        file: UploadFile = File(description="an image (PNG, JPEG, ...)"),
        k: int = Form(settings.page_size, ge=1, le=settings.max_k),
        offset: int = Form(0, ge=0, le=settings.max_k - 1),
        filters: Optional[str] = Form(None, max_length=settings.max_field_chars,
                                      description='JSON object of field filters, e.g. {"brand": "Acme"}'),
    ):
        """Rank documents by similarity to an uploaded image (needs a model with an image tower)."""
        t0, state = time.perf_counter(), request.app.state
        if not state.encoders.has_image_tower:
            raise HTTPException(400, f"search by image needs a model with an image tower; {state.encoders.name} has none")
        if offset + k > settings.max_k:
            raise HTTPException(422, f"offset + k must be <= {settings.max_k} (got {offset} + {k})")
        parsed = None
        if filters:
            try:
                parsed = S.Filters.validate_json(filters)  # the same rules as /search's filters
            except ValidationError as exc:
                raise RequestValidationError([{**e, "loc": ("body", "filters", *e["loc"])} for e in exc.errors()])
        vector = state.encoders.image(file.file.read())
        hits = state.store.search(vector, offset + k + 1, filters=parsed or None)[0]
        return page_of(S, state, hits, k, offset, None, t0)

    return api
