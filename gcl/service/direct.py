"""The service's store for an index that is durable by itself (Milvus): locking, no log.

A Milvus server or milvus-lite acknowledges a write only once it is durable, and a ``Strong``
search sees every acknowledged write (see docs/index.md), so the service writes straight through:
a 2xx means Milvus acknowledged the write. The readers/writer lock keeps the service's
created/updated bookkeeping exact and a search from seeing half of a batch write.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from gcl.index.locks import ReadWriteLock
from gcl.index.base import normalise
from gcl.service.durable import LockedIndex, UpsertResult


class DirectIndex(LockedIndex):
    """Same interface as :class:`gcl.service.durable.DurableIndex` over any ``SearchIndex`` (here: Milvus)."""

    replayed = 0
    pending = 0
    checkpoints = 0

    def __init__(self, index) -> None:
        self.index = index
        self._lock = ReadWriteLock()

    def upsert(self, ids: Sequence[str], vectors: Any, fields: Sequence[Mapping[str, Any]]) -> UpsertResult:
        ids = [str(d) for d in ids]
        x = normalise(vectors, self.dim, "document")
        with self._lock.write():
            created = [d for d in ids if d not in self.index]
            self.index.upsert(ids, x, [dict(f) for f in fields])
        known = set(created)
        return UpsertResult(created=created, updated=[d for d in ids if d not in known])

    def delete(self, ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(str(d) for d in ids))
        with self._lock.write():
            known = [d for d in ids if d in self.index]
            if known:
                self.index.delete(known)
        return known

    def checkpoint(self, *, force: bool = True) -> bool:
        with self._lock.read():
            self.index.flush()
        return True

    def close(self, *, checkpoint: bool = True) -> None:
        if checkpoint:
            self.checkpoint()
        self.index.close()
