"""Single-stage search: a persistent faiss-backed vector index and a resumable index builder.

Needs the ``[index]`` extra (``faiss-cpu``). Importing this package is cheap; faiss is imported
when an index is first created or loaded.
"""

from gcl.index.store import IndexedDocument, SearchHit, VectorIndex

__all__ = ["IndexedDocument", "SearchHit", "VectorIndex", "build_index", "BuildResult"]


def __getattr__(name: str):  # lazy: the builder pulls in pandas/tqdm
    if name in ("build_index", "BuildResult"):
        from gcl.index import build

        return getattr(build, name)
    raise AttributeError(f"module 'gcl.index' has no attribute {name!r}")
