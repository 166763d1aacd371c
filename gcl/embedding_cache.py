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
again and written anew. One writer at a time per namespace.

Where: :func:`default_cache_dir` -- ``$GCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/gcl``, else
``~/.cache/gcl``. Deleting the directory clears the cache.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from gcl.atomic import write_atomic

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def default_cache_dir() -> Path:
    """``$GCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/gcl``, else ``~/.cache/gcl``."""
    if os.environ.get("GCL_CACHE_DIR"):
        return Path(os.environ["GCL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gcl"


class EmbeddingCache:
    """Float32 vectors on disk under string keys, one namespace (encoder) per directory."""

    INDEX = "index.json"

    def __init__(self, directory: str | Path, *, namespace: str) -> None:
        if not _NAMESPACE_RE.match(namespace):
            raise ValueError(f"cache namespace must match {_NAMESPACE_RE.pattern}, got {namespace!r}")
        self.path = Path(directory) / namespace
        self.path.mkdir(parents=True, exist_ok=True)
        self._parts: list[str] = []
        self._keys: dict[str, tuple[int, int]] = {}
        self._dim: int | None = None
        self._loaded: dict[int, np.ndarray | None] = {}
        self._rows_needed: list[int] | None = None  # per part: 1 + the largest row a key uses
        index = self.path / self.INDEX
        if index.is_file():
            try:
                raw = json.loads(index.read_text(encoding="utf-8"))
                parts = [str(p) for p in raw["parts"]]
                keys = {str(k): (int(p), int(r)) for k, (p, r) in raw["keys"].items()}
                dim = None if raw["dim"] is None else int(raw["dim"])
                if any(not 0 <= p < len(parts) or r < 0 for p, r in keys.values()):
                    raise ValueError("a key points outside the parts")
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                warnings.warn(f"embedding cache index {index} is unreadable ({exc}); ignoring the cache "
                              f"there: its vectors will be computed again", stacklevel=2)
            else:
                self._parts, self._keys, self._dim = parts, keys, dim

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def _part(self, p: int) -> np.ndarray | None:
        """Shard ``p`` (memory-mapped), or ``None`` with a warning when it cannot be used."""
        if p not in self._loaded:
            path = self.path / self._parts[p]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if self._rows_needed is None or len(self._rows_needed) != len(self._parts):
                    self._rows_needed = [0] * len(self._parts)
                    for q, r in self._keys.values():
                        self._rows_needed[q] = max(self._rows_needed[q], r + 1)
                need = self._rows_needed[p]
                if arr.ndim != 2 or arr.shape[0] < need or arr.shape[1] != self._dim or arr.dtype != np.float32:
                    raise ValueError(f"shape {arr.shape} {arr.dtype}, the index needs ({need}, {self._dim}) float32")
            except (OSError, ValueError, EOFError) as exc:
                warnings.warn(f"embedding cache file {path} is unreadable ({exc}); its vectors will be "
                              f"computed again", stacklevel=3)
                arr = None
            self._loaded[p] = arr
        return self._loaded[p]

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: ``found`` (n,) bool, ``vectors`` (found.sum(), d) float32 for
        the found keys in order. Reads each shard once, rows gathered in bulk."""
        locs = [self._keys.get(k) for k in keys]
        part = np.fromiter((-1 if loc is None else loc[0] for loc in locs), dtype=np.int64, count=len(keys))
        row = np.fromiter((-1 if loc is None else loc[1] for loc in locs), dtype=np.int64, count=len(keys))
        for p in np.unique(part[part >= 0]).tolist():
            if self._part(p) is None:
                part[part == p] = -1  # a broken shard: its keys count as missing
        found = part >= 0
        out = np.empty((int(found.sum()), self._dim or 0), dtype=np.float32)
        where = np.flatnonzero(found)
        for p in np.unique(part[found]).tolist():
            mine = part[where] == p
            out[mine] = self._part(p)[row[where[mine]]]
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
        if self._dim is not None and embeddings.shape[1] != self._dim:
            raise ValueError(f"cache holds {self._dim}-d vectors, got {embeddings.shape[1]}-d")
        fresh: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in fresh and (k not in self._keys or self._part(self._keys[k][0]) is None):
                fresh[k] = i
        if not fresh:
            return
        p = len(self._parts)
        name = f"part-{p:05d}.npy"
        rows = np.ascontiguousarray(embeddings[list(fresh.values())])
        write_atomic(self.path / name, lambda fh: np.save(fh, rows))
        self._parts.append(name)
        self._loaded[p] = rows
        for r, k in enumerate(fresh):
            self._keys[k] = (p, r)
        self._dim = int(embeddings.shape[1])
        index = {"dim": self._dim, "parts": self._parts, "keys": {k: list(v) for k, v in self._keys.items()}}
        write_atomic(self.path / self.INDEX, lambda fh: fh.write(json.dumps(index).encode("utf-8")))
