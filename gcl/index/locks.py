"""Locks of an index: in a process, a readers/writer lock (searches run together, a write runs
alone); across processes, :class:`WriterLock` (one writing process per index)."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gcl.errors import ConfigError


class ReadWriteLock:
    """Writer-preferring readers/writer lock (not reentrant: a holder must not acquire it again).

    Any number of readers hold it together; a writer holds it alone. A waiting writer stops new
    readers from entering, so a stream of searches cannot starve writes.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


# ---------------------------------------------------------------------------- one writer per index
class IndexLockedError(ConfigError):
    """Another process holds the writer lock of an index (the message names it)."""


_SECRET_OPTION = re.compile(r"token|key|password|secret", re.IGNORECASE)


def writer_lock_path(location: str | Path) -> Path:
    """The lock file of the index at ``location``: ``.<name>.lock`` *beside* it.

    Beside, not inside: ``VectorIndex.save`` replaces the whole directory by a rename, which would
    take a lock file inside it away from under its holder.
    """
    target = Path(location).resolve()
    return target.with_name(f".{target.name}.lock")


def _redacted_command(argv: list[str]) -> str:
    """The command line with the values of secret-looking options (``--token x``) hidden."""
    out, hide = [], False
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if hide:
            out.append("REDACTED")
        elif eq and name.startswith("-") and _SECRET_OPTION.search(name):
            out.append(f"{name}=REDACTED")
        else:
            out.append(arg)
        hide = not eq and arg.startswith("-") and bool(_SECRET_OPTION.search(arg))
    return shlex.join(out)[:500]


class WriterLock:
    """An exclusive advisory lock (``fcntl.flock``) on an index: one writing process at a time.

    ``with WriterLock(location, purpose="gcl serve"):`` takes the lock on
    :func:`writer_lock_path` without waiting; if another process holds it, an
    :class:`IndexLockedError` names that process (pid, host, command, since when: what the holder
    wrote into the lock file). The OS releases a flock when its holder dies, SIGKILL included, so
    a crash leaves no stale lock (the file stays; its contents are only a description). Readers
    (``VectorIndex.load``, ``gcl search``) never take it. Two holders in one process conflict too
    (a flock belongs to an open file, not to a process). Without ``fcntl`` (Windows) it does nothing.
    """

    def __init__(self, location: str | Path, *, purpose: str) -> None:
        self.location = Path(location)
        self.path = writer_lock_path(location)
        self.purpose = purpose
        self._fh = None

    def acquire(self) -> "WriterLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not a POSIX system
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read()
            fh.close()
            raise IndexLockedError(f"{self.location} is already open for writing ({self._describe(holder)}); "
                                   f"one writer per index: stop that process first (lock file {self.path})") from None
        except BaseException:
            fh.close()
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                             "command": _redacted_command(sys.argv),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    @staticmethod
    def _describe(holder: str) -> str:
        try:
            info = json.loads(holder)
            return (f"pid {info['pid']} on host {info['host']}, {info['purpose']} since {info['since']}: "
                    f"{info['command']}")
        except (ValueError, KeyError, TypeError):
            return "a process that has not written its pid yet"

    def release(self) -> None:
        """Empty the description and unlock (closing the file unlocks)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.seek(0)
            fh.truncate()
        finally:
            fh.close()

    @property
    def held(self) -> bool:
        return self._fh is not None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
