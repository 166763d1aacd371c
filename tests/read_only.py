"""Test helpers: a directory made read-only, and ``flock`` made unsupported, as a cache meets them.

``read_only(path, how, monkeypatch)``: ``"chmod"`` takes the write bits off ``path`` and
everything below it (the test is skipped where that binds nothing: as root); ``"erofs"`` gives
every call that would create or open for writing under ``path`` (``os.mkdir``, ``os.open`` with a
write or create flag, which ``tempfile.mkstemp`` uses) the answer of a read-only mount,
``OSError(EROFS)``, and runs as any user. (A real ``mount -o remount,bind,ro`` answered the
same calls with the same error.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

import pytest

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under(p, root: Path) -> bool:
    return Path(os.path.abspath(os.fspath(p))).is_relative_to(root)


def _erofs(p) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(p))


@contextlib.contextmanager
def read_only(path: Path, how: str, monkeypatch):
    root = Path(os.path.abspath(path))
    if how == "erofs":
        real_mkdir, real_open = os.mkdir, os.open

        def mkdir(p, *args, **kwargs):
            if _under(p, root):
                raise _erofs(p)
            return real_mkdir(p, *args, **kwargs)

        def open_(p, flags, *args, **kwargs):
            if flags & WRITE_FLAGS and _under(p, root):
                raise _erofs(p)
            return real_open(p, flags, *args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(os, "mkdir", mkdir)
            m.setattr(os, "open", open_)
            yield
        return
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for d in dirs:
        d.chmod(0o555)
    try:
        try:
            (root / ".probe").touch()
        except OSError:
            pass
        else:
            (root / ".probe").unlink()
            pytest.skip("chmod does not make a directory read-only here (running as root): see the 'erofs' case")
        yield
    finally:
        for d in dirs:
            d.chmod(0o755)


def no_flock(monkeypatch) -> None:
    """``fcntl.flock`` raises ``OSError(ENOLCK)``, as on a network file system without lock support."""

    def flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", flock)
