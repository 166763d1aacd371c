"""Array rows on disk under string keys: ``.npy`` part files plus one JSON index.

The machinery shared by gcl's two on-disk caches, :class:`gcl.embedding_cache.EmbeddingCache`
(one vector per key) and :class:`gcl.hidden_store.HiddenStore` (a variable number of token states
per key). One store is one directory::

    <path>/index.json   {<layout>, "parts": [part file names], "keys": {key: <entry>}}
    <path>/<part>.npy   (rows, width) array of the layout's dtype; written once, never changed
    <path>/index.lock   the hidden-state store's writers' ``flock`` (the embedding cache's
                        writers flock the directory itself: no file)

An entry places a key at rows ``first .. first + n - 1`` of part ``p``. The subclass spells the
layout and the entries in JSON (:meth:`RowStore._decode`, :meth:`RowStore._encode`): the embedding
cache writes ``"dim": d`` and ``[p, row]`` (``n = 1``), the hidden-state store ``"width": w,
"dtype": "..."`` and ``[p, first, n]``.

Reading checks, and nothing that fails a check is served as data:

* the index must parse, name its parts and have every entry satisfy ``0 <= p < len(parts)``,
  ``first >= 0``, ``n >= 1``; else it is ignored with the warning
  ``"<label> index <file> is unreadable (<why>); ..."``: the store then holds no keys (or,
  re-read by a writer, keeps what it held);
* a part is memory-mapped on first use and must be 2-d, of the layout's width and dtype, and hold
  ``need(p) = max over p's entries of first + n`` rows (a truncated file is shorter); else the
  warning ``"<label> file <file> is unreadable (<why>); ..."`` and its keys count as missing;
* a part held (mapped or kept from a put) is dropped at the next index read when its file is no
  longer the same file (device, inode, size, mtime): the directory was deleted and written anew by
  another run, which may reuse the part's name for other rows.

The caller computes missing keys again and writes them anew. Every file is written by ``write``
(default :func:`gcl.atomic.write_atomic`: temporary file, fsync, rename), a part before the index
that names it, so a crash leaves the previous index or the new one and never an index naming a
partial part. Writers hold :meth:`RowStore.locked` while they re-read the index, add their part
and rewrite it, so concurrent writers add to one another's entries instead of overwriting them.
Where the file system refuses ``flock`` they go on unlocked with a warning (the embedding cache
then gives its part a random suffix): a concurrent writer's new entries may be lost from the index
and computed again, never pointed at another writer's rows. Callers open a store with
:meth:`RowStore.open_or_warn` and write with :func:`put_or_warn`, so a directory that cannot be
created or written (a read-only mount, a full disk) costs a warning and the caching, not the run.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from gcl.atomic import write_atomic

Entry = tuple[int, int, int]  # (part, first row, rows)


class RowStore:
    """Rows of memory-mapped ``.npy`` parts under string keys, indexed by ``index.json``.

    A subclass says how its index is spelled (:meth:`_decode`, :meth:`_encode`), names its
    parts and decides what ``put`` means; this class reads, checks, locates and appends.
    """

    INDEX = "index.json"
    LOCK: str | None = "index.lock"  # what writers flock (None: the directory)
    LABEL = "row store"  # the warnings' subject: "<LABEL> index ..." / "<LABEL> file ..."
    INDEX_LOST = "ignoring it: its keys count as missing"  # what an unreadable index means
    PART_LOST = "its keys count as missing"  # what an unreadable part means
    NOT_STORED = "its rows are computed and not stored"  # what a store that cannot be opened means

    def __init__(self, path: str | Path, *, write: Callable = write_atomic) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._write = write
        self._parts: list[str] = []
        self._keys: dict[str, Entry] = {}
        self._width: int | None = None
        self._dtype: str | None = None
        self._arrays: dict[str, np.ndarray | None] = {}  # by part name: a written part never changes
        self._files: dict[str, tuple] = {}  # by part name: the identity of the file its array came from
        self._need: dict[int, int] | None = None  # need(p) of the current entries, computed once

    @classmethod
    def open_or_warn(cls, where: str | Path, *args, **kwargs) -> "RowStore | None":
        """``cls(where, ...)``, or ``None`` with the warning ``"cannot use the <LABEL> at <where>
        (<why>); <NOT_STORED>"`` when its directory cannot be created (``OSError``: a read-only
        mount, ...): the caller then computes without persisting."""
        try:
            return cls(where, *args, **kwargs)
        except OSError as exc:
            warnings.warn(f"cannot use the {cls.LABEL} at {where} ({exc}); {cls.NOT_STORED}", stacklevel=3)
            return None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    # -- the subclass's spelling of the index
    def _decode(self, raw: dict) -> tuple[list[str], dict[str, Entry], int | None, str | None]:
        """``(parts, entries, width, dtype)`` from the parsed JSON; raises on a malformed one."""
        raise NotImplementedError

    def _encode(self) -> dict:
        """The JSON object of the current parts, entries, width and dtype."""
        raise NotImplementedError

    # -- reading
    def read_index(self) -> bool:
        """Replace the state by ``index.json`` when it is there and readable (``True``); an
        unreadable index is warned about and the state kept (``False``)."""
        index = self.path / self.INDEX
        if not index.is_file():
            return False
        try:
            parts, keys, width, dtype = self._decode(json.loads(index.read_text(encoding="utf-8")))
            if any(not 0 <= p < len(parts) or a < 0 or n < 1 for p, a, n in keys.values()):
                raise ValueError("a key points outside the parts")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            warnings.warn(f"{self.LABEL} index {index} is unreadable ({exc}); {self.INDEX_LOST}", stacklevel=3)
            return False
        self._parts, self._keys, self._width, self._dtype = parts, keys, width, dtype
        self._need = None
        self._forget_replaced_parts()
        return True

    def _file_identity(self, name: str) -> tuple | None:
        """``(device, inode, size, mtime)`` of part file ``name``; ``None`` when it is gone."""
        try:
            st = (self.path / name).stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _forget_replaced_parts(self) -> None:
        """Drop the arrays held under part names whose file is no longer the one they came from (the
        directory deleted and written anew by another run, reusing the names): mapped again on use."""
        for name in [n for n in self._arrays if self._file_identity(n) != self._files.get(n)]:
            del self._arrays[name]
            self._files.pop(name, None)

    def _rows_needed(self) -> dict[int, int]:
        """Per part ``p``: ``need(p) = max(first + n)`` over its entries (a shorter file is broken)."""
        need: dict[int, int] = {}
        for p, a, n in self._keys.values():
            need[p] = max(need.get(p, 0), a + n)
        return need

    def _array(self, p: int) -> np.ndarray | None:
        """Part ``p`` memory-mapped, or ``None`` (with a warning) when it fails the checks."""
        name = self._parts[p]
        if name not in self._arrays:
            path = self.path / name
            self._files[name] = self._file_identity(name)  # before the read: a file replaced since counts as other
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if self._need is None:
                    self._need = self._rows_needed()
                need = self._need.get(p, 0)
                if arr.ndim != 2 or arr.shape[0] < need or arr.shape[1] != self._width or str(arr.dtype) != self._dtype:
                    raise ValueError(f"shape {arr.shape} {arr.dtype}, the index needs ({need}, {self._width}) "
                                     f"{self._dtype}")
            except (OSError, ValueError, EOFError) as exc:
                warnings.warn(f"{self.LABEL} file {path} is unreadable ({exc}); {self.PART_LOST}", stacklevel=4)
                arr = None
            self._arrays[name] = arr
        return self._arrays[name]

    def readable(self, key: str) -> bool:
        """``key`` is present and its part passes the checks."""
        return key in self._keys and self._array(self._keys[key][0]) is not None

    def locate(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(part, first, n)`` int64 arrays, one element per key; ``part`` is -1 for an absent key.
        Reads no part: see :meth:`drop_unreadable`."""
        locs = [self._keys.get(k) for k in keys]
        out = [np.fromiter((-1 if loc is None else loc[i] for loc in locs), dtype=np.int64, count=len(keys))
               for i in range(3)]
        return out[0], out[1], out[2]

    def drop_unreadable(self, part: np.ndarray) -> np.ndarray:
        """Set to -1, in place, the ``part`` values (from :meth:`locate`) whose file fails the checks;
        each part touched is checked once. Returns ``part``."""
        for p in np.unique(part[part >= 0]).tolist():
            if self._array(p) is None:
                part[part == p] = -1
        return part

    def rows(self, p: int) -> np.ndarray:
        """Part ``p`` (memory-mapped); only for a part :meth:`drop_unreadable` kept."""
        return self._arrays[self._parts[p]]

    # -- writing
    @contextlib.contextmanager
    def locked(self):
        """An exclusive ``flock`` for the block: on ``<path>/<LOCK>`` (created if needed), or on the
        store's directory itself when ``LOCK`` is ``None`` (no file added). Yields ``True``; where
        the file system refuses ``flock`` (``OSError``: some network file systems) it warns and
        yields ``False``, and the block runs unlocked: a concurrent writer's new entries may then
        be lost from the index (and computed again), never pointed at another writer's rows."""
        import fcntl
        import os

        if self.LOCK is None:
            target, flags = self.path, os.O_RDONLY
        else:
            target, flags = self.path / self.LOCK, os.O_RDWR | os.O_CREAT | os.O_APPEND
        fd = os.open(target, flags, 0o666)  # the mode only applies when the lock file is created
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                warnings.warn(f"{self.LABEL}: cannot flock {target} ({exc}); writing without the lock (a "
                              f"concurrent writer's new entries may be lost and computed again)", stacklevel=4)
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def write_part(self, name: str, rows: np.ndarray) -> None:
        """Write ``rows`` as the part file ``name`` (not yet in the index)."""
        self._write(self.path / name, lambda fh: np.save(fh, rows))

    def add_part(self, name: str, entries: Iterable[tuple[str, int, int]], *, width: int, dtype: str,
                 keep: np.ndarray | None = None) -> None:
        """Record the written part ``name`` with ``(key, first, n)`` entries (replacing those keys'
        entries) and rewrite the index. ``keep``: the part's rows, held in memory instead of
        being memory-mapped back."""
        p = len(self._parts)
        self._parts.append(name)
        if keep is not None:
            self._arrays[name] = keep
            self._files[name] = self._file_identity(name)
        for k, a, n in entries:
            self._keys[k] = (p, int(a), int(n))
        self._width, self._dtype = int(width), str(dtype)
        self._need = None
        index = self._encode()
        self._write(self.path / self.INDEX, lambda fh: fh.write(json.dumps(index).encode("utf-8")))


def put_or_warn(store, *args) -> bool:
    """``store.put(*args)``; a failed write (``OSError``: a read-only or full disk) is only warned
    about, ``"could not write the <LABEL> at <path> (<why>)"``: the caller's rows stand and the next
    run computes them again. ``True`` when written. ``store``: a :class:`RowStore`, or anything
    with its ``put`` (an in-memory stand-in)."""
    try:
        store.put(*args)
    except OSError as exc:
        warnings.warn(f"could not write the {getattr(store, 'LABEL', 'cache')} at {store.path} ({exc})", stacklevel=3)
        return False
    return True
