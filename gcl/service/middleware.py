"""The service's ASGI middleware: every request passes through these before FastAPI sees it.

Outermost first (``create_app`` adds them in the reverse order):

* :class:`SecurityHeaders` -- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, a
  ``Content-Security-Policy`` (``CSP``) and ``Referrer-Policy: no-referrer`` on every response.
* :class:`Observe` -- counts the request in :class:`~gcl.service.metrics.Metrics` under a bounded
  label (:func:`route_label`).
* :class:`AllowedHosts` -- a ``Host`` header outside ``allowed_hosts`` is a 400.
* :class:`Utf8Path` -- a path whose percent-decoded bytes are not UTF-8 is a 400 (the server
  would otherwise decode them to U+FFFD, so different ids would meet in one).
* :class:`BodyLimit` -- a body over ``max_bytes`` is a 413 (by ``Content-Length``, else while it
  streams); a ``Content-Length`` that is not a decimal integer is a 400.

Each refusal is JSON (``{"detail": ...}``), as every answer of the service is.
"""

from __future__ import annotations

import json
import time
from urllib.parse import unquote_to_bytes

from gcl.service.metrics import Metrics

# script/style from the app only (no inline code); images from the app, plus blob: and data:
# URLs the page makes for thumbnails fetched with the API key; fetch() to the app only; no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode("ascii")),
    (b"referrer-policy", b"no-referrer"),
)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def json_response(status: int, detail: str, headers: tuple = ()) -> tuple[dict, dict]:
    """The two ASGI messages of a small JSON answer ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode("utf-8")  # ensure_ascii: safe for any detail
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         *headers]}
    return start, {"type": "http.response.body", "body": body}


async def send_json(send, status: int, detail: str) -> None:
    for message in json_response(status, detail):
        await send(message)


def route_label(scope) -> str:
    """``"METHOD /route/{template}"`` with a known method and a route of the app; else one bucket each.

    A method outside :data:`KNOWN_METHODS` counts as ``OTHER``; a path that matched no route as
    ``other``. So the labels are at most (methods + 1) x (routes) + 1, whatever clients send.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "other"
    method = scope.get("method", "")
    return f"{method if method in KNOWN_METHODS else 'OTHER'} {path}"


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP response (a header the app already set is kept)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in have)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Observe:
    """Counts every request by :func:`route_label` and status, with its server-side latency."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.observe(route_label(scope), status, time.perf_counter() - t0)


def host_of(header: str) -> str:
    """The host part of a ``Host`` header: ``name``, ``1.2.3.4`` or ``[::1]``, port dropped, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if ":" in header else header


class AllowedHosts:
    """400 unless the request's ``Host`` is in ``hosts``: exact names, ``*.domain`` or ``*`` (any)."""

    def __init__(self, app, hosts) -> None:
        self.app = app
        self.any = "*" in hosts
        self.exact = {h.lower() for h in hosts if not h.startswith("*")}
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def allows(self, host: str) -> bool:
        return self.any or host in self.exact or (bool(host) and host.endswith(self.suffixes))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.any:
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not self.allows(host_of(raw)):
                return await send_json(send, 400, f"host {raw[:100]!r} is not one of the allowed hosts "
                                                  "(gcl serve --allowed-hosts)")
        await self.app(scope, receive, send)


class Utf8Path:
    """400 for a path whose percent-decoded bytes are not valid UTF-8 (an id cannot be read from it)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        raw = scope.get("raw_path") if scope["type"] == "http" else None  # as sent, percent-escapes and all
        if raw is not None:
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                return await send_json(send, 400, f"the request path is not valid UTF-8 after percent-decoding "
                                                  f"(byte {exc.object[exc.start]:#04x} at {exc.start})")
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a request body over ``max_bytes``: by ``Content-Length`` up front, else while it streams."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException  # FastAPI's own class: its body reader re-raises it unchanged

        too_big = f"request body larger than {self.max_bytes} bytes"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await send_json(send, 400, "Content-Length is not a decimal integer")
            if int(length) > self.max_bytes:
                return await send_json(send, 413, too_big)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI re-raises an HTTPException from body reading as is
                    raise HTTPException(413, too_big)
            return message

        await self.app(scope, limited_receive, send)
