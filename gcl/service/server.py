"""Run the app under uvicorn, with uvicorn's own refusals answered in JSON like the app's.

uvicorn answers a request it cannot parse (a malformed or negative ``Content-Length``, a bad
request line, ...) itself, before the app sees it, with a plain-text 400. :func:`http_protocol`
is uvicorn's HTTP protocol class (h11, or httptools when installed) with that one answer replaced
by ``{"detail": ...}`` JSON carrying the service's security headers; ``gcl serve`` runs with it.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def http_protocol():
    """uvicorn's default HTTP protocol class, its 400 for unparsable requests answered in JSON."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    from gcl.service.middleware import SECURITY_HEADERS, json_response

    class JSONErrorsProtocol(AutoHTTPProtocol):
        def send_400_response(self, msg: str) -> None:
            detail = "malformed HTTP request (request line, headers or Content-Length)"
            start, body = json_response(400, f"{detail}: {msg}" if msg else detail,
                                        (*SECURITY_HEADERS, (b"connection", b"close")))
            head = b"".join(k + b": " + v + b"\r\n" for k, v in start["headers"])
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body["body"])
            self.transport.close()

    return JSONErrorsProtocol


def server_config(app, *, host: str, port: int, log_level: str = "info"):
    """The ``uvicorn.Config`` ``gcl serve`` runs: one worker, :func:`http_protocol`."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, http=http_protocol())


def serve(app, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` until SIGINT/SIGTERM (then the app's shutdown checkpoints the index)."""
    import uvicorn

    uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level)).run()
