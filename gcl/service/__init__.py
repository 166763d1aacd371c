"""The search service: ``create_app(ServiceSettings(...))`` builds a FastAPI app over a vector index.

Needs the ``[serve]`` extra (fastapi, uvicorn, python-multipart). Importing this package is
cheap; FastAPI is imported by :func:`create_app`. ``gcl serve`` runs the app with uvicorn.
"""

from gcl.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]


def __getattr__(name: str):  # lazy: the app module pulls in the index, the encoders and FastAPI
    if name == "create_app":
        from gcl.service.app import create_app

        return create_app
    raise AttributeError(f"module 'gcl.service' has no attribute {name!r}")
