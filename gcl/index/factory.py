"""``open_index(location)``: the backend is chosen by where the index lives.

* a local directory (written by ``gcl index build`` or ``VectorIndex.save``) -> :class:`VectorIndex`
* ``milvus://host:19530[/collection]``, ``http(s)://host:19530[/collection]`` or a path ending in
  ``.db`` (milvus-lite) -> :class:`gcl.index.milvus.MilvusIndex`

User code written against :class:`gcl.index.base.SearchIndex` changes only the location string
(plus ``token`` / ``db_name`` for a secured Milvus cluster, or ``$GCL_MILVUS_TOKEN``).
"""

from __future__ import annotations

import os
from typing import Any

from gcl.index.base import SearchIndex


def is_milvus_location(location: str | os.PathLike) -> bool:
    from gcl.index.milvus import is_milvus_uri  # pure string test; pymilvus is imported only on open

    return is_milvus_uri(location)


def open_index(
    location: str | os.PathLike,
    *,
    collection: str | None = None,
    token: str | None = None,
    db_name: str | None = None,
    **create: Any,
) -> SearchIndex:
    """Open the index at ``location`` (see the module docstring).

    ``collection``, ``token`` and ``db_name`` apply to Milvus only; ``create`` (``dim``, ``kind``,
    ``hnsw_m``, ``ef_construction``, ``ef_search``, ``model``) creates a missing Milvus collection.
    A local directory must already hold an index (a :class:`DataError` otherwise).
    """
    if is_milvus_location(location):
        from gcl.index.milvus import MilvusIndex

        return MilvusIndex(uri=location, collection=collection, token=token, db_name=db_name, **create)
    from gcl.errors import ConfigError
    from gcl.index.store import VectorIndex

    extra = {k: v for k, v in (("collection", collection), ("token", token), ("db_name", db_name)) if v}
    if extra or create:
        raise ConfigError(f"{sorted(extra) + sorted(create)} apply to a Milvus index only; {location} is a directory")
    return VectorIndex.load(location)
