"""The vector-database registry: ``backend_for(location)`` picks the backend by where the index lives,
``open_index(location)`` opens it.

* ``milvus://host:19530[/collection]``, ``http(s)://host:19530[/collection]`` or a path ending in
  ``.db`` (milvus-lite) -> :class:`gcl.index.milvus.MilvusIndex` (:class:`MilvusBackend`)
* anything else: a local directory (written by ``gcl index build`` or ``VectorIndex.save``) ->
  :class:`gcl.index.store.VectorIndex` (:class:`DirectoryBackend`, the fallback)

A new vector database is one module (its :class:`~gcl.index.base.SearchIndex` and a :class:`Backend`
subclass saying what it can do) plus one entry in :data:`BACKENDS`; the CLI, the build and the
service ask the backend (``open``, ``create``, ``finish``, ``supports_lexical``, ...) and never
test for a particular database. User code written against :class:`gcl.index.base.SearchIndex`
changes only the location string (plus ``token`` / ``db_name`` for a secured Milvus cluster, or
``$GCL_MILVUS_TOKEN``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from gcl.errors import ConfigError
from gcl.index.base import SearchIndex


class Backend:
    """What gcl needs to know about one vector database (a stateless description; cheap to import)."""

    name = ""
    local_directory = False  # the location is a directory path (else a URI or file name kept as text)
    write_ahead_log = False  # ``gcl serve`` logs writes itself (else they go straight to the database)
    supports_lexical = False  # BM25 over the stored fields beside the vectors (lexical/hybrid search)
    options: tuple[str, ...] = ()  # connection options it accepts (e.g. collection, token, db_name)
    location_hint = ""  # what a location of this backend looks like, for error messages

    def claims(self, location: str | os.PathLike) -> bool:
        """Whether ``location`` names an index of this backend."""
        raise NotImplementedError

    def open(self, location: str | os.PathLike, **options: Any) -> SearchIndex:
        """The existing index at ``location`` (``options``: :attr:`options` and, where the database
        creates on open, the index parameters)."""
        raise NotImplementedError

    def check_output(self, location: str) -> None:
        """Refuse a build output now, not after encoding (a bad URI, a directory holding something else)."""

    def check_kind(self, location: str, kind: str) -> None:
        """Refuse an index kind this backend cannot build at ``location`` (before encoding starts)."""

    def work_dir(self, location: str, collection: str | None = None) -> Path:
        """Where ``gcl index build`` keeps its shard log for ``location``."""
        out = Path(location)
        return out.with_name(out.name + ".partial")

    def lock_target(self, location: str, work_dir: str | Path | None, collection: str | None) -> Path:
        """What the build's writer lock holds: the output directory, or for a database the shard log."""
        return Path(work_dir) if work_dir is not None else self.work_dir(location, collection)

    def create(self, location: str, params: dict[str, Any], **options: Any) -> tuple[SearchIndex, Any]:
        """``(a new empty index, its write(ids, vectors, fields))`` for a build (replacing an old one)."""
        raise NotImplementedError

    def finish(self, index: SearchIndex, location: str) -> None:
        """Make a built index durable at ``location`` (save, flush)."""
        index.flush()

    def describe(self, index: SearchIndex, location: str) -> str:
        """What ``gcl index info`` prints."""
        import json

        return json.dumps(index.manifest(), indent=2)


class DirectoryBackend(Backend):
    """faiss + stored fields in a local directory (:class:`gcl.index.store.VectorIndex`)."""

    name, local_directory, write_ahead_log, supports_lexical = "faiss", True, True, True
    location_hint = "writes a directory"

    def claims(self, location) -> bool:
        return True  # the fallback: checked last

    def open(self, location, **options) -> SearchIndex:
        from gcl.index.store import VectorIndex

        if options:
            raise ConfigError(f"{sorted(options)} apply to a Milvus index only; {location} is a directory")
        return VectorIndex.load(location)

    def check_output(self, location: str) -> None:
        from gcl.index.store import MANIFEST_FILE

        out_dir = Path(location)
        if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
            raise ConfigError(f"{out_dir} is not empty and holds no index; choose another output directory")
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a directory")

    def lock_target(self, location, work_dir, collection) -> Path:
        return Path(location)

    def create(self, location, params, **options):
        from gcl.index.store import VectorIndex

        index = VectorIndex(**params)
        return index, index.add

    def finish(self, index, location) -> None:
        from gcl.index.lexical import LexicalIndex

        index.save(location)
        LexicalIndex(index).save(location)  # BM25 over the stored text fields, for lexical/hybrid search

    def describe(self, index, location) -> str:
        from gcl.index.store import MANIFEST_FILE

        return (Path(location) / MANIFEST_FILE).read_text().strip()


class MilvusBackend(Backend):
    """A Milvus server, or milvus-lite for a ``.db`` file (:class:`gcl.index.milvus.MilvusIndex`)."""

    name, options = "milvus", ("collection", "token", "db_name")
    location_hint = "needs a Milvus URI (milvus://host:port, http(s)://host:port) or a .db file for milvus-lite"

    def claims(self, location) -> bool:
        from gcl.index.milvus_syntax import is_milvus_uri  # pure string test; pymilvus is imported only on open

        return is_milvus_uri(location)

    def open(self, location, **options) -> SearchIndex:
        from gcl.index.milvus import MilvusIndex

        return MilvusIndex(uri=location, **options)

    def check_output(self, location: str) -> None:
        from gcl.index.milvus_syntax import parse_uri

        parse_uri(location)

    def check_kind(self, location, kind) -> None:
        from gcl.index.milvus_syntax import check_kind, parse_uri

        uri, _ = parse_uri(location)
        check_kind(kind, lite="://" not in uri)

    def work_dir(self, location, collection=None) -> Path:
        if "://" not in str(location):
            return super().work_dir(location, collection)
        from gcl.index.milvus import DEFAULT_COLLECTION, parse_uri

        uri, named = parse_uri(location)
        name = f"{uri.split('://', 1)[1]}-{collection or named or DEFAULT_COLLECTION}"
        return Path(".gcl-index-build") / ("".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".partial")

    def create(self, location, params, **options):
        from gcl.index.milvus import MilvusIndex

        index = MilvusIndex(uri=location, replace=True, **options, **params)
        return index, index.upsert  # idempotent: a load killed half-way and run again leaves each document once


# The registry, checked in order (the first that claims a location wins; the directory is the fallback).
BACKENDS: dict[str, Backend] = {"milvus": MilvusBackend(), "faiss": DirectoryBackend()}


def register_backend(backend: Backend) -> None:
    """Add ``backend`` to :data:`BACKENDS`, ahead of the directory fallback."""
    fallback = BACKENDS.pop("faiss")
    BACKENDS[backend.name] = backend
    BACKENDS["faiss"] = fallback


def backend_for(location: str | os.PathLike) -> Backend:
    """The registered backend whose locations include ``location``."""
    return next(b for b in BACKENDS.values() if b.claims(location))


def is_milvus_location(location: str | os.PathLike) -> bool:
    """Kept for callers outside gcl: ``backend_for(location).name == "milvus"``."""
    return backend_for(location).name == "milvus"


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
    given = {k: v for k, v in (("collection", collection), ("token", token), ("db_name", db_name)) if v}
    return backend_for(location).open(location, **given, **create)
