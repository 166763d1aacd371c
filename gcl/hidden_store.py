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
warning: its entries count as missing, are computed again and written anew. The reading, checks,
lock and writes are :class:`gcl.row_store.RowStore`'s, shared with the embedding cache.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from gcl.atomic import write_atomic
from gcl.row_store import RowStore, put_or_warn

NAMESPACE_PREFIX = "hidden-"


def token_key(ids: Sequence[int]) -> str:
    """sha1 hex of a text's token ids (int64, little-endian): the key of its hidden states."""
    return hashlib.sha1(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


class HiddenStore(RowStore):
    """The hidden states of one frozen part (one namespace directory), by :func:`token_key`.

    A :class:`gcl.row_store.RowStore` whose entries are a text's token rows (``[part, first, n]``
    in the index), whose parts have random names, and whose ``put`` merges under the lock."""

    LABEL = "hidden-state cache"
    INDEX_LOST = "ignoring it: the frozen layers' outputs will be computed again"
    PART_LOST = "its texts' frozen-layer outputs will be computed again"
    NOT_STORED = "the frozen layers' outputs are computed and kept in memory only"

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        super().__init__(Path(root) / f"{NAMESPACE_PREFIX}{fingerprint}", write=write_atomic)
        self.read_index()

    def _decode(self, raw: dict):
        parts = [str(p) for p in raw["parts"]]
        keys = {str(k): (int(p), int(a), int(n)) for k, (p, a, n) in raw["keys"].items()}
        return parts, keys, int(raw["width"]), str(raw["dtype"])

    def _encode(self) -> dict:
        return {"width": self._width, "dtype": self._dtype, "parts": self._parts,
                "keys": {k: list(v) for k, v in self._keys.items()}}

    def lookup(self, keys: Sequence[str], lengths: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(found, states)``: ``found`` (n,) bool; ``states`` the (length, width) arrays of the
        found keys, in order. An entry whose length differs from ``lengths`` counts as missing."""
        part, first, n = self.locate(keys)
        part[n != np.asarray(lengths, dtype=np.int64)] = -1  # another length: not this text (part not read)
        found = self.drop_unreadable(part) >= 0
        states = [self.rows(p)[a: a + m] for p, a, m in zip(part[found].tolist(), first[found].tolist(),
                                                               n[found].tolist())]
        return found, states

    def put(self, keys: Sequence[str], flat: np.ndarray, lengths: np.ndarray) -> None:
        """Store texts' states: ``flat`` (Σ lengths, width), text after text, under ``keys``."""
        flat = np.ascontiguousarray(flat)
        if flat.ndim != 2 or len(keys) != len(lengths) or int(np.sum(lengths)) != len(flat):
            raise ValueError(f"{len(keys)} keys, lengths summing to {int(np.sum(lengths))}, states {flat.shape}")
        if not len(keys):
            return
        name = f"part-{uuid.uuid4().hex[:16]}.npy"
        self.write_part(name, flat)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        with self.locked():
            self.read_index()  # what other writers added since
            if self._width is not None and (self._width, self._dtype) != (flat.shape[1], str(flat.dtype)):
                self._parts, self._keys = [], {}  # another width or dtype: start the namespace afresh
            # the part is read back memory-mapped when needed: no second copy held here
            self.add_part(name, zip(keys, starts.tolist(), np.asarray(lengths).tolist()), width=flat.shape[1],
                          dtype=str(flat.dtype))


def open_store(root: str | Path | None, fingerprint: str) -> HiddenStore | None:
    """The store of ``fingerprint`` under ``root``; ``None`` (with a warning) when it cannot be
    created (e.g. a read-only directory): the caller then computes without persisting."""
    return None if root is None else HiddenStore.open_or_warn(root, fingerprint)


def safe_put(store: HiddenStore | None, keys: Sequence[str], flat: np.ndarray, lengths: np.ndarray) -> None:
    """:meth:`HiddenStore.put`, a failed write (full disk, ...) only warned about."""
    if store is not None:
        put_or_warn(store, keys, flat, lengths)
