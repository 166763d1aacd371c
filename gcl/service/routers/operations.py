"""``GET /health`` (never authenticated), ``GET /metrics`` and ``GET /openapi.json``."""

from gcl.service.routers.auth import error_responses, key_dependencies
from gcl.service.settings import ServiceSettings


def router(S, settings: ServiceSettings):
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    api = APIRouter(tags=["operations"])
    auth = key_dependencies(settings)

    @api.get("/health", response_model=S.Health)
    def health(request: Request):
        store, encoders = request.app.state.store, request.app.state.encoders
        return S.Health(status="ok", documents=len(store), dim=store.dim, model=encoders.name,
                        image_search=encoders.has_image_tower)

    @api.get("/metrics", dependencies=auth, responses=error_responses(S))
    def get_metrics(request: Request) -> dict:
        store = request.app.state.store
        snap = request.app.state.metrics.snapshot()
        snap["index"] = {"documents": len(store), "dim": store.dim, "kind": store.index.kind,
                         "backend": type(store.index).__name__, "tombstones": store.index.n_tombstones,
                         "logged_writes_pending": store.pending, "checkpoints": store.checkpoints,
                         "replayed_at_start": store.replayed}
        return snap

    @api.get("/openapi.json", dependencies=auth, include_in_schema=False)
    def openapi_spec(request: Request):
        return JSONResponse(request.app.openapi())

    return api
