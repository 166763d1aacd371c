"""The search page: ``GET /`` (HTML with the settings filled in), ``/static/*`` and ``GET /images/{path}``
(thumbnails from the configured image root)."""

import html
import mimetypes
from importlib import resources

from gcl.errors import DataError
from gcl.service.routers.auth import error_responses, key_dependencies
from gcl.service.settings import ServiceSettings

IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}


def page_html(settings: ServiceSettings) -> str:
    """``static/index.html`` with its ``{{NAME}}`` placeholders replaced (HTML-escaped)."""
    page = (resources.files("gcl.service") / "static" / "index.html").read_text(encoding="utf-8")
    for name, value in (("PAGE_SIZE", settings.page_size), ("AUTH", int(settings.api_key is not None)),
                        ("IMAGE_FIELD", settings.image_field if settings.image_root else ""),
                        ("TITLE_FIELD", settings.title_field), ("MAX_K", settings.max_k)):
        page = page.replace("{{%s}}" % name, html.escape(str(value), quote=True))
    return page


def router(S, settings: ServiceSettings):
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    api = APIRouter()
    page = page_html(settings)

    @api.get("/images/{path:path}", dependencies=key_dependencies(settings), responses=error_responses(S, 404),
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

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page)

    return api


def mount_static(app) -> None:
    """Serve ``gcl/service/static`` under ``/static`` (after the routes: a mount matches its whole prefix)."""
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=str(resources.files("gcl.service") / "static")), name="static")
