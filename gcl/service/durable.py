"""A :class:`~gcl.index.store.VectorIndex` made safe to mutate from a server: locking and a write-ahead log.

Durability rule (what a 2xx on a write means):

* Every write (a batch upsert or a delete) is appended to a **write-ahead log**,
  ``<index dir>/service-wal.jsonl``, one line per write, and the file is ``fsync``'ed *before*
  the write is applied to the in-memory index and acknowledged. A line is
  ``<crc32 hex> <json>``: ``{"op": "upsert", "ids", "dim", "vectors": base64 float32,
  "fields"}`` or ``{"op": "delete", "ids"}``.
* Every ``checkpoint_every`` writes, and when the service shuts down, the whole index is saved
  with :meth:`VectorIndex.save` (a new directory renamed over the old one). The new directory has
  no log, so the rename installs the checkpoint and empties the log in one step.
* On start the index is loaded and its log replayed in order. A last line cut short by a crash
  (no newline, or a checksum that does not match) was never acknowledged and is dropped; a bad
  line *before* the last is a :class:`DataError` (the log is damaged, not merely cut short).
* ``VectorIndex.save`` renames the old directory away before renaming the new one in, so a kill
  between the two renames leaves no directory at the index path. On start, that case is repaired:
  a complete new copy (``.<name>.tmp-*`` with its manifest, written last) is moved into place,
  else the old copy (``.<name>.old-*/index``, with its log) is moved back.

Concurrency: searches and reads share a readers/writer lock; a write holds it alone, so a search
never sees half of a write. A checkpoint holds the read side (searches go on, writes wait).
One writer: a ``DurableIndex`` holds the index's :class:`~gcl.index.locks.WriterLock` from before
the repair and replay until :meth:`DurableIndex.close`, so a second server (or ``gcl index build``)
on the same directory is refused at start with an error naming the first; the OS drops the lock
when the process dies. Process crashes (SIGKILL) lose nothing acknowledged; an OS crash or power
cut is covered as far as ``fsync`` of the log is (the checkpoint's own files are written by faiss
without ``fsync``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gcl.errors import DataError
from gcl.index.base import normalise
from gcl.index.store import MANIFEST_FILE, SearchHit, VectorIndex
from gcl.index.locks import ReadWriteLock, WriterLock

WAL_FILE = "service-wal.jsonl"
log = logging.getLogger("gcl.service")


@dataclass(frozen=True)
class UpsertResult:
    created: list[str]
    updated: list[str]


def _encode_line(record: dict[str, Any]) -> bytes:
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one complete log line, or None if its checksum or JSON is bad."""
    crc, sep, body = line.rstrip(b"\n").partition(b" ")
    try:
        if not sep or int(crc, 16) != zlib.crc32(body):
            return None
        rec = json.loads(body)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and rec.get("op") in ("upsert", "delete") else None


def recover_interrupted_save(directory: Path) -> str | None:
    """Repair the gap a kill inside ``VectorIndex.save`` can leave (see the module docstring).

    Returns what was done (for the log), or None when nothing needed repair.
    """
    directory = Path(directory)
    if directory.exists() or not directory.parent.is_dir():
        return None
    name, parent = directory.name, directory.parent
    complete = [p for p in parent.glob(f".{name}.tmp-*") if (p / MANIFEST_FILE).is_file()]
    if complete:
        newest = max(complete, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime_ns)
        os.replace(newest, directory)
        return f"installed the completed checkpoint {newest.name}"
    old = [p / "index" for p in parent.glob(f".{name}.old-*") if (p / "index" / MANIFEST_FILE).is_file()]
    if old:
        newest = max(old, key=lambda p: (p / MANIFEST_FILE).stat().st_mtime_ns)
        os.replace(newest, directory)
        shutil.rmtree(newest.parent, ignore_errors=True)
        return f"restored the previous index from {newest.parent.name}"
    return None


class LockedIndex:
    """What both service stores share: ``self.index`` (a ``SearchIndex``) behind ``self._lock``."""

    index: Any
    _lock: ReadWriteLock

    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def model(self) -> str | None:
        return self.index.model

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, doc_id: object) -> bool:
        with self._lock.read():
            return doc_id in self.index

    def search(self, vectors: Any, k: int, *, filters: Mapping[str, str] | None = None) -> list[list[SearchHit]]:
        with self._lock.read():
            return self.index.search(vectors, k, filters=filters)

    def get(self, doc_id: str):
        with self._lock.read():
            return self.index.get(doc_id)


class DurableIndex(LockedIndex):
    """A loaded index with a write-ahead log, a readers/writer lock and periodic checkpoints.

    ``DurableIndex(directory, checkpoint_every=1000)`` loads (and, if needed, repairs and replays)
    the index in ``directory``. Reads: :meth:`search`, :meth:`get`, ``len``. Writes:
    :meth:`upsert`, :meth:`delete` (each logged and fsync'ed before it returns). :meth:`close`
    checkpoints and closes the log.
    """

    def __init__(self, directory: str | Path, *, checkpoint_every: int = 1000) -> None:
        if checkpoint_every < 1:
            raise DataError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.directory = Path(directory)
        self.checkpoint_every = int(checkpoint_every)
        self._writer = WriterLock(self.directory, purpose="DurableIndex (gcl serve)").acquire()  # before any repair
        try:
            repaired = recover_interrupted_save(self.directory)
            if repaired:
                log.warning("index %s: a save was interrupted; %s", self.directory, repaired)
            self.index = VectorIndex.load(self.directory)
            self._lock = ReadWriteLock()
            self._checkpointing = threading.Lock()
            self.replayed = self._replay()
            self.pending = self.replayed  # log records not yet in a checkpoint
            self.checkpoints = 0
            self._wal = open(self.directory / WAL_FILE, "ab")
        except BaseException:
            self._writer.release()
            raise

    # ------------------------------------------------------------------ writes
    def upsert(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Add or replace documents (vector and fields); logged and fsync'ed before returning."""
        ids = [str(d) for d in ids]
        x = normalise(vectors, self.dim, "document")
        if len(ids) != len(x) or len(fields) != len(ids) or len(set(ids)) != len(ids):
            raise DataError(f"upsert needs distinct ids and one vector and field dict per id "
                            f"(got {len(ids)} ids, {len(set(ids))} distinct, {len(x)} vectors, {len(fields)} field dicts)")
        fields = [dict(f) for f in fields]
        record = {"op": "upsert", "ids": ids, "dim": self.dim,
                  "vectors": base64.b64encode(x.astype("<f4").tobytes()).decode("ascii"), "fields": fields}
        with self._lock.write():
            created = [d for d in ids if d not in self.index]
            self._append(record)
            self.index.upsert(ids, x, fields)
            self.pending += 1
        self._maybe_checkpoint()
        known = set(created)
        return UpsertResult(created=created, updated=[d for d in ids if d not in known])

    def delete(self, ids: Sequence[str]) -> list[str]:
        """Delete the listed documents that exist; returns those deleted (logged first, as upserts)."""
        ids = list(dict.fromkeys(str(d) for d in ids))
        with self._lock.write():
            known = [d for d in ids if d in self.index]
            if not known:
                return []
            self._append({"op": "delete", "ids": known})
            self.index.delete(known)
            self.pending += 1
        self._maybe_checkpoint()
        return known

    def _append(self, record: dict[str, Any]) -> None:
        """Append one line and fsync it; on failure the file is cut back so no partial line stays."""
        line = _encode_line(record)
        start = self._wal.tell()
        try:
            self._wal.write(line)
            self._wal.flush()
            os.fsync(self._wal.fileno())
        except BaseException:
            try:
                self._wal.truncate(start)
                self._wal.seek(start)
            except OSError:  # pragma: no cover - the disk is failing; the replay drops a torn tail
                pass
            raise

    # ------------------------------------------------------------------ checkpoints
    def _maybe_checkpoint(self) -> None:
        if self.pending >= self.checkpoint_every:
            self.checkpoint(force=False)

    def checkpoint(self, *, force: bool = True) -> bool:
        """Save the index and start an empty log (only if there are logged writes; ``force`` ignores
        ``checkpoint_every``). Returns whether a checkpoint was written."""
        if not self._checkpointing.acquire(blocking=force):
            return False  # another thread is checkpointing right now
        try:
            with self._lock.read():  # writes wait; searches go on
                if not self.pending or (not force and self.pending < self.checkpoint_every):
                    return False
                self.index.save(self.directory)  # the new directory has no log: the log is now empty
                old, self._wal = self._wal, open(self.directory / WAL_FILE, "ab")
                old.close()
                self.pending = 0
                self.checkpoints += 1
                return True
        finally:
            self._checkpointing.release()

    def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint pending writes (unless ``checkpoint=False``) and close the log; unusable afterwards."""
        if self._wal.closed:
            return
        try:
            if checkpoint:
                self.checkpoint()
            self._wal.close()
        finally:
            self._writer.release()

    # ------------------------------------------------------------------ recovery
    def _replay(self) -> int:
        path = self.directory / WAL_FILE
        if not path.is_file():
            return 0
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (a torn write) or b""
        good_bytes, n = 0, 0
        for i, line in enumerate(complete):
            rec = _decode_line(line)
            if rec is None:
                if i == len(complete) - 1 and not tail:
                    break  # the last line is damaged: a write cut short, never acknowledged
                raise DataError("write-ahead log line is damaged (bad checksum or JSON) before its end; "
                                "the log cannot be replayed safely", source=str(path), row=i)
            self._apply(rec, path, i)
            good_bytes += len(line) + 1
            n += 1
        if good_bytes != len(data):
            with open(path, "r+b") as fh:  # drop the torn tail so new lines start on a clean line
                fh.truncate(good_bytes)
                fh.flush()
                os.fsync(fh.fileno())
            log.warning("index %s: dropped %d bytes of an unacknowledged write at the end of the log",
                        self.directory, len(data) - good_bytes)
        if n:
            log.info("index %s: replayed %d logged writes", self.directory, n)
        return n

    def _apply(self, rec: dict[str, Any], path: Path, row: int) -> None:
        try:
            if rec["op"] == "delete":
                self.index.delete(rec["ids"], missing_ok=True)
                return
            if int(rec["dim"]) != self.dim:
                raise DataError(f"logged vectors are {rec['dim']}-d but the index is {self.dim}-d")
            x = np.frombuffer(base64.b64decode(rec["vectors"]), dtype="<f4").reshape(len(rec["ids"]), self.dim)
            self.index.upsert(rec["ids"], x.astype(np.float32), rec["fields"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"write-ahead log record cannot be applied ({exc})", source=str(path), row=row) from exc
