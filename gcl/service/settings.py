"""What ``create_app`` needs: one dataclass, filled by ``gcl serve`` or by a test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gcl.errors import ConfigError
from gcl.encoders.onnx import DEFAULT_BACKEND, check_backend


def _host_pattern(host: str) -> bool:
    """Whether ``host`` is ``*``, ``*.domain`` or a name/address without spaces, slashes or other ``*``."""
    rest = host[2:] if host.startswith("*.") else host
    return host == "*" or (bool(rest) and not any(c in rest for c in " /*"))


@dataclass
class ServiceSettings:
    """Settings of the search service.

    ``index_dir``: a directory written by ``gcl index build`` (or ``VectorIndex.save``), or a
    Milvus location (``x.db`` for milvus-lite, ``milvus://host:19530``, ``http(s)://...``) with
    ``collection`` / ``token`` / ``db_name`` as for :func:`gcl.index.factory.open_index`.
    ``model``: the encoder (gcl model dir, sentence-transformers dir or name); ``None`` takes the
    one recorded in the index manifest. ``api_key``: when set, every endpoint but ``/health`` and
    the page's static files needs it (header ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``).
    Limits: ``max_request_bytes`` (whole request body, 413 beyond), ``max_k`` (largest
    ``offset + k`` of a search), ``max_batch`` (documents per ``POST /documents``),
    ``max_query_chars``, ``max_fields`` / ``max_field_chars`` per document. ``page_size``: results
    per page on the web page. ``image_root``: directory that document image paths are relative to
    (``None``: no thumbnails, ``/images`` answers 404); ``image_field`` / ``title_field``: the
    document fields the page shows. ``checkpoint_every``: logged writes between full saves of the
    index (see :mod:`gcl.service.durable`). ``allowed_hosts``: the ``Host`` header values the
    service answers (exact names or addresses, ``*.example.com``, or ``*`` for any); any other is
    a 400. The default ``*`` suits the loopback default of ``gcl serve``; name the server's
    hosts when it is reachable from elsewhere (and ``127.0.0.1,localhost`` to refuse DNS
    rebinding on one machine). ``calibration``: a file from ``gcl calibrate`` (``None``: the model
    directory's ``gcl_calibration.json`` when there is one); hits then carry a calibrated
    ``relevance`` and searches accept ``min_relevance`` (see :mod:`gcl.calibration`).
    ``encoder_backend``: ``torch``, or ``onnx`` / ``onnx-int8`` for a ``model`` written by ``gcl export``
    (see :mod:`gcl.encoders.onnx`).
    """

    index_dir: Path | str
    model: str | None = None
    collection: str | None = None
    token: str | None = None
    db_name: str | None = None
    api_key: str | None = None
    max_request_bytes: int = 4 * 1024 * 1024
    max_k: int = 100
    max_batch: int = 256
    max_query_chars: int = 1000
    max_fields: int = 64
    max_field_chars: int = 10_000
    page_size: int = 12
    image_root: Path | None = None
    image_field: str = "image"
    title_field: str = "title"
    checkpoint_every: int = 1000
    allowed_hosts: tuple[str, ...] = ("*",)
    calibration: Path | str | None = None
    encoder_backend: str = DEFAULT_BACKEND

    def __post_init__(self) -> None:
        from gcl.index.factory import backend_for

        check_backend(self.encoder_backend, "encoder_backend")
        if backend_for(self.index_dir).local_directory:
            self.index_dir = Path(self.index_dir)
        elif not isinstance(self.index_dir, Path):
            self.index_dir = str(self.index_dir)  # a URI: Path() would fold its "//"
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
            if not self.image_root.is_dir():
                raise ConfigError(f"image root {self.image_root} is not a directory")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty; leave it unset to disable authentication")
        for name in ("max_request_bytes", "max_k", "max_batch", "max_query_chars", "max_fields", "max_field_chars",
                     "page_size", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.allowed_hosts, str):
            self.allowed_hosts = (self.allowed_hosts,)
        self.allowed_hosts = tuple(str(h).strip() for h in self.allowed_hosts)
        bad = [h for h in self.allowed_hosts if not _host_pattern(h)]
        if not self.allowed_hosts or bad:
            raise ConfigError(f"allowed_hosts must be host names or addresses, '*.domain' or '*', got {bad or '[]'}")
        if self.page_size > self.max_k:
            raise ConfigError(f"page_size ({self.page_size}) cannot exceed max_k ({self.max_k})")
