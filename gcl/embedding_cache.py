"""Embeddings on disk, keyed by (encoder fingerprint, content hash).

One cache serves two callers: the features of a frozen image backbone (keys: image content hashes,
:func:`gcl.data.images.image_key`) and the document embeddings of ``gcl evaluate`` (keys: hashes
of a document's field values, :mod:`gcl.evaluation.doc_cache`). Layout::

    <directory>/<namespace>/index.json      {"dim": d, "parts": [file names], "keys": {key: [part, row]}}
    <directory>/<namespace>/part-NNNNN.npy  (rows, d) float32, one file per put()

``namespace`` identifies the encoder: a fingerprint of its configuration and weights, so a
changed encoder never reads another's vectors (it gets its own namespace). Every file is written
with :func:`gcl.atomic.write_atomic` (temporary file, fsync, rename): a crash leaves the previous
version or the new one. A file that cannot be read anyway (a corrupt index, a shard that does not
load or is shorter than the index says) is ignored with a warning, and its vectors are computed
again and written anew. Concurrent writers (two ``gcl evaluate`` of one model) serialise on an
``flock`` of the namespace directory, re-read the index under it and never reuse a part's file
name, so each adds to the other's vectors (:mod:`gcl.row_store`; without ``flock`` support a
writer warns and goes on unlocked, its part named ``part-NNNNN-<random hex>.npy``). A read-only
cache directory is read; a write there is only warned about (:func:`gcl.row_store.put_or_warn`).

Where: :func:`default_cache_dir` -- ``$GCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/gcl``, else
``~/.cache/gcl``. Deleting the directory clears the cache.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from gcl.atomic import write_atomic
from gcl.row_store import RowStore

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def default_cache_dir() -> Path:
    """``$GCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/gcl``, else ``~/.cache/gcl``."""
    if os.environ.get("GCL_CACHE_DIR"):
        return Path(os.environ["GCL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gcl"


class EmbeddingCache(RowStore):
    """Float32 vectors on disk under string keys, one namespace (encoder) per directory.

    A :class:`gcl.row_store.RowStore` whose entries are one row each (``[part, row]`` in the
    index), whose parts are numbered in order (the next number free on disk), and whose ``put``
    keeps a key's first vector; writers merge under a lock on the namespace directory."""

    LABEL = "embedding cache"
    INDEX_LOST = "ignoring the cache there: its vectors will be computed again"
    PART_LOST = "its vectors will be computed again"
    NOT_STORED = "its vectors are computed and not stored"
    LOCK = None  # writers flock the namespace directory: no file beside the index and the parts

    def __init__(self, directory: str | Path, *, namespace: str) -> None:
        if not _NAMESPACE_RE.match(namespace):
            raise ValueError(f"cache namespace must match {_NAMESPACE_RE.pattern}, got {namespace!r}")
        super().__init__(Path(directory) / namespace, write=write_atomic)
        self.read_index()

    def _decode(self, raw: dict):
        parts = [str(p) for p in raw["parts"]]
        keys = {str(k): (int(p), int(r), 1) for k, (p, r) in raw["keys"].items()}
        dim = None if raw["dim"] is None else int(raw["dim"])
        return parts, keys, dim, "float32"

    def _encode(self) -> dict:
        return {"dim": self._width, "parts": self._parts, "keys": {k: [p, r] for k, (p, r, _) in self._keys.items()}}

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: ``found`` (n,) bool, ``vectors`` (found.sum(), d) float32 for
        the found keys in order. Reads each shard once, rows gathered in bulk."""
        part, row, _ = self.locate(keys)
        self.drop_unreadable(part)  # a broken shard: its keys count as missing
        found = part >= 0
        out = np.empty((int(found.sum()), self._width or 0), dtype=np.float32)
        where = np.flatnonzero(found)
        for p in np.unique(part[found]).tolist():
            mine = part[where] == p
            out[mine] = self.rows(p)[row[where[mine]]]
        return found, out

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of the keys that are present (float32 copies)."""
        found, vecs = self.lookup(keys)
        return dict(zip((k for k, f in zip(keys, found) if f), vecs))

    def put(self, keys: Sequence[str], embeddings: np.ndarray) -> None:
        """Store (n, d) vectors under ``keys``; keys already present are kept as they are."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys but embeddings of shape {embeddings.shape}")
        self._check_dim(embeddings.shape[1])
        if all(self.readable(k) for k in keys):
            return
        with self.locked() as held:  # another writer's part may have the next number: choose it under the lock
            self.read_index()  # what other writers added since
            self._check_dim(embeddings.shape[1])
            fresh: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k not in fresh and not self.readable(k):
                    fresh[k] = i
            if not fresh:
                return
            name = self._new_part_name(unique=not held)
            rows = np.ascontiguousarray(embeddings[list(fresh.values())])
            self.write_part(name, rows)
            self.add_part(name, ((k, r, 1) for r, k in enumerate(fresh)), width=embeddings.shape[1],
                          dtype="float32", keep=rows)

    def _check_dim(self, dim: int) -> None:
        if self._width is not None and dim != self._width:
            raise ValueError(f"cache holds {self._width}-d vectors, got {dim}-d")

    def _new_part_name(self, *, unique: bool) -> str:
        """``part-NNNNN.npy``: the first number from ``len(parts)`` whose file is absent, so a part a
        reader may use is never replaced. Without the lock (``unique``) another writer may pick the
        same number at the same moment: ``part-NNNNN-<random hex>.npy`` then."""
        number = len(self._parts)
        while (self.path / f"part-{number:05d}.npy").exists():
            number += 1
        return f"part-{number:05d}-{uuid.uuid4().hex[:12]}.npy" if unique else f"part-{number:05d}.npy"
