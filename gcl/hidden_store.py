"""Variable-length hidden states on disk, keyed by (frozen-part fingerprint, token ids).

The outputs ``H(x) = B(x)`` of a model's frozen lower layers (:mod:`gcl.training.frozen_cache`)
depend only on those layers' weights and on the token ids of ``x``, so they can be computed once
and shared by every training run, arm and seed, every dev evaluation and every ``gcl evaluate`` of
a model whose lower layers are those. Layout, beside gcl's other caches
(:func:`gcl.embedding_cache.default_cache_dir`, i.e. ``$GCL_CACHE_DIR``)::

    <root>/hidden-<fingerprint>/index.json   {"width": w, "dtype": "float32", "parts": [names],
                                              "keys": {key: [part, first row, n rows]}}
    <root>/hidden-<fingerprint>/part-*.npy   (rows, w): the real (non-padded) tokens' states, text after text

``fingerprint`` identifies the frozen part (its weights, depth and configuration: see
:meth:`gcl.training.frozen_cache.FrozenBottom.fingerprint`); a key is the sha1 of a text's token
ids (:func:`token_key`), so the tokenizer and the token limit are part of the key itself. Files are
written with :func:`gcl.atomic.write_atomic` (temporary file, fsync, rename) under a lock on
``index.lock``; the index is re-read under the lock before it is rewritten, so concurrent runs
add to it instead of overwriting each other. An unreadable index or part is ignored with a
warning: its entries count as missing, are computed again and written anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from gcl.atomic import write_atomic

NAMESPACE_PREFIX = "hidden-"


def token_key(ids: Sequence[int]) -> str:
    """sha1 hex of a text's token ids (int64, little-endian): the key of its hidden states."""
    return hashlib.sha1(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    import fcntl

    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class HiddenStore:
    """The hidden states of one frozen part (one namespace directory), by :func:`token_key`."""

    INDEX = "index.json"

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.path = Path(root) / f"{NAMESPACE_PREFIX}{fingerprint}"
        self.path.mkdir(parents=True, exist_ok=True)
        self._parts: list[str] = []
        self._keys: dict[str, tuple[int, int, int]] = {}
        self._meta: dict = {}
        self._arrays: dict[str, np.ndarray | None] = {}
        self._need: dict[int, int] | None = None  # _rows_needed() of the current keys, computed once
        self._read_index()

    def __len__(self) -> int:
        return len(self._keys)

    def _read_index(self) -> None:
        index = self.path / self.INDEX
        if not index.is_file():
            return
        try:
            raw = json.loads(index.read_text(encoding="utf-8"))
            parts = [str(p) for p in raw["parts"]]
            keys = {str(k): (int(p), int(a), int(n)) for k, (p, a, n) in raw["keys"].items()}
            if any(not 0 <= p < len(parts) or a < 0 or n < 1 for p, a, n in keys.values()):
                raise ValueError("a key points outside the parts")
            meta = {"width": int(raw["width"]), "dtype": str(raw["dtype"])}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            warnings.warn(f"hidden-state cache index {index} is unreadable ({exc}); ignoring it: the frozen "
                          f"layers' outputs will be computed again", stacklevel=3)
            return
        self._parts, self._keys, self._meta = parts, keys, meta
        self._need = None

    def _array(self, p: int) -> np.ndarray | None:
        """Part ``p`` memory-mapped, or ``None`` (with a warning) when it cannot be used."""
        name = self._parts[p]
        if name not in self._arrays:
            path = self.path / name
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if self._need is None:
                    self._need = self._rows_needed()
                need = self._need.get(p, 0)
                if (arr.ndim != 2 or arr.shape[0] < need or arr.shape[1] != self._meta["width"]
                        or str(arr.dtype) != self._meta["dtype"]):
                    raise ValueError(f"shape {arr.shape} {arr.dtype}, the index needs ({need}, "
                                     f"{self._meta['width']}) {self._meta['dtype']}")
            except (OSError, ValueError, EOFError) as exc:
                warnings.warn(f"hidden-state cache file {path} is unreadable ({exc}); its texts' frozen-layer "
                              f"outputs will be computed again", stacklevel=3)
                arr = None
            self._arrays[name] = arr
        return self._arrays[name]

    def _rows_needed(self) -> dict[int, int]:
        """Per part: 1 + the last row an entry uses (a shorter file is broken)."""
        need: dict[int, int] = {}
        for p, a, n in self._keys.values():
            need[p] = max(need.get(p, 0), a + n)
        return need

    def lookup(self, keys: Sequence[str], lengths: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(found, states)``: ``found`` (n,) bool; ``states`` the (length, width) arrays of the
        found keys, in order. An entry whose length differs from ``lengths`` counts as missing."""
        found = np.zeros(len(keys), dtype=bool)
        states: list[np.ndarray] = []
        for i, k in enumerate(keys):
            loc = self._keys.get(k)
            if loc is None or loc[2] != int(lengths[i]):
                continue
            arr = self._array(loc[0])
            if arr is None:
                continue
            found[i] = True
            states.append(arr[loc[1]: loc[1] + loc[2]])
        return found, states

    def put(self, keys: Sequence[str], flat: np.ndarray, lengths: np.ndarray) -> None:
        """Store texts' states: ``flat`` (Σ lengths, width), text after text, under ``keys``."""
        flat = np.ascontiguousarray(flat)
        if flat.ndim != 2 or len(keys) != len(lengths) or int(np.sum(lengths)) != len(flat):
            raise ValueError(f"{len(keys)} keys, lengths summing to {int(np.sum(lengths))}, states {flat.shape}")
        if not len(keys):
            return
        meta = {"width": int(flat.shape[1]), "dtype": str(flat.dtype)}
        name = f"part-{uuid.uuid4().hex[:16]}.npy"
        write_atomic(self.path / name, lambda fh: np.save(fh, flat))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        with _locked(self.path / "index.lock"):
            self._read_index()  # what other writers added since
            if self._meta and self._meta != meta:  # another dtype: start the namespace afresh
                self._parts, self._keys = [], {}
            self._meta = meta
            p = len(self._parts)
            self._parts.append(name)  # read back memory-mapped when needed: no second copy held here
            for k, a, n in zip(keys, starts.tolist(), np.asarray(lengths).tolist()):
                self._keys[k] = (p, int(a), int(n))
            self._need = None
            index = {**self._meta, "parts": self._parts, "keys": {k: list(v) for k, v in self._keys.items()}}
            write_atomic(self.path / self.INDEX, lambda fh: fh.write(json.dumps(index).encode("utf-8")))


def open_store(root: str | Path | None, fingerprint: str) -> HiddenStore | None:
    """The store of ``fingerprint`` under ``root``; ``None`` (with a warning) when it cannot be
    created (e.g. a read-only directory): the caller then computes without persisting."""
    if root is None:
        return None
    try:
        return HiddenStore(root, fingerprint)
    except OSError as exc:
        warnings.warn(f"cannot use the hidden-state cache at {root} ({exc}); the frozen layers' outputs "
                      f"are computed and kept in memory only", stacklevel=2)
        return None


def safe_put(store: HiddenStore | None, keys: Sequence[str], flat: np.ndarray, lengths: np.ndarray) -> None:
    """:meth:`HiddenStore.put`, a failed write (full disk, ...) only warned about."""
    if store is None:
        return
    try:
        store.put(keys, flat, lengths)
    except OSError as exc:
        warnings.warn(f"could not write the hidden-state cache at {store.path} ({exc})", stacklevel=2)


