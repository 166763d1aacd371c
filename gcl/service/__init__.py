"""The search service: ``create_app(ServiceSettings(...))`` builds a FastAPI app over a vector index.

Needs the ``[serve]`` extra (fastapi, uvicorn, python-multipart). Importing this package is
cheap; FastAPI is imported by :func:`create_app`. ``gcl serve`` runs the app with uvicorn.
"""

from gcl.lazy import lazy_exports
from gcl.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]


__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "gcl.service.app"})  # FastAPI, the index, the encoders
