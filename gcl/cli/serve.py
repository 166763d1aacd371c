"""``gcl serve``: run the search service (HTTP API + web page) over an index with uvicorn.

    gcl serve --index indexes/hd                       # http://127.0.0.1:8000/
    GCL_API_KEY=secret gcl serve --index indexes/hd --api-key-env GCL_API_KEY --image-root images/

The encoder defaults to the model recorded in the index manifest. See docs/serve.md.
"""

from __future__ import annotations

import os

from gcl.cli.export import add_backend_arg
from gcl.cli.options import check_model, positive_int
from gcl.data.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve an index over HTTP (search API + web page)",
                       description="Run the search service: JSON API (OpenAPI at /openapi.json) and a search page at /.")
    p.add_argument("--index", required=True,
                   help="index directory (from 'gcl index build') or Milvus location (x.db, milvus://host:19530)")
    p.add_argument("--collection", default=None, help="Milvus collection (default gcl_documents)")
    p.add_argument("--db-name", default=None, help="Milvus database (default: default)")
    p.add_argument("--model", default=None, help="query/document encoder (default: the model recorded in the index)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--allowed-hosts", default=None, metavar="HOSTS",
                   help="comma-separated Host header values to answer (names, addresses, *.domain; other hosts "
                        "get a 400), e.g. 127.0.0.1,localhost against DNS rebinding (default: any host)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="require the API key held in environment variable VAR (header X-API-Key or Bearer)")
    p.add_argument("--image-root", default=None, help="directory that document image paths are relative to")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="calibration from 'gcl calibrate' (default: MODEL_DIR/gcl_calibration.json when the model "
                        "has one): hits carry a calibrated relevance and searches accept min_relevance")
    p.add_argument("--image-field", default="image", help="document field holding the image path (default image)")
    p.add_argument("--title-field", default="title", help="document field shown as the title (default title)")
    p.add_argument("--max-k", type=positive_int, default=100, help="largest offset + k of a search (default 100)")
    p.add_argument("--max-batch", type=positive_int, default=256, help="documents per POST /documents (default 256)")
    p.add_argument("--max-request-bytes", type=positive_int, default=4 * 1024 * 1024, help="largest request body (default 4 MiB)")
    p.add_argument("--page-size", type=positive_int, default=12, help="results per page on the web page (default 12)")
    p.add_argument("--checkpoint-every", type=positive_int, default=1000,
                   help="logged writes between full saves of the index (default 1000)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and faiss threads per request (default 1: requests run side by side instead; "
                        "intra-op threads fight over a small, shared CPU)")
    add_backend_arg(p, what="queries and added documents")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default info)")
    p.set_defaults(func=run_serve)


def _takes_token(location: str) -> bool:
    from gcl.index.factory import backend_for

    return "token" in backend_for(location).options


def settings_from_args(args):
    from gcl.service.settings import ServiceSettings

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key or not api_key.strip():
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    return ServiceSettings(
        index_dir=args.index, model=args.model, collection=args.collection, db_name=args.db_name,
        token=(os.environ.get("GCL_MILVUS_TOKEN") or None) if _takes_token(args.index) else None,
        api_key=api_key, max_request_bytes=args.max_request_bytes,
        max_k=args.max_k, max_batch=args.max_batch, page_size=args.page_size, image_root=args.image_root,
        image_field=args.image_field, title_field=args.title_field, checkpoint_every=args.checkpoint_every,
        calibration=args.calibration, encoder_backend=args.encoder_backend,
        **({"allowed_hosts": tuple(args.allowed_hosts.split(","))} if args.allowed_hosts is not None else {}),
    )


def set_threads(n: int) -> None:
    """Threads used inside one request by torch (query encoding) and faiss (search)."""
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover - the index load reports the missing extra
        pass


def run_serve(args) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError("gcl serve needs the [serve] extra: pip install 'gcl[serve]'") from exc
    from gcl.service.app import create_app

    check_model(args.model)
    settings = settings_from_args(args)
    set_threads(args.threads)
    app = create_app(settings)
    from gcl.service.server import serve

    serve(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
