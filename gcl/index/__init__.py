"""Single-stage search: vector indexes (faiss in a directory, or Milvus) and a resumable builder.

Needs the ``[index]`` extra (``faiss-cpu``); the Milvus backend the ``[milvus]`` extra
(``pymilvus``, ``milvus-lite``). Importing this package is cheap; faiss and pymilvus are imported
when an index is first created or opened. :func:`open_index` picks the backend from a location.
"""

from gcl.index.base import SearchIndex
from gcl.index.factory import open_index
from gcl.index.store import IndexedDocument, SearchHit, VectorIndex
from gcl.lazy import lazy_exports

__all__ = ["IndexedDocument", "SearchHit", "SearchIndex", "VectorIndex", "MilvusIndex", "open_index",
           "build_index", "BuildResult"]


# lazy: the builder pulls in pandas/tqdm, MilvusIndex nothing heavy until used
__getattr__, __dir__ = lazy_exports(__name__, {"build_index": "gcl.index.build", "BuildResult": "gcl.index.build",
                                               "MilvusIndex": "gcl.index.milvus"})
