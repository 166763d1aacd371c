"""Crash-safe writes: a temporary file (or directory) beside the target, fsync, rename over it.

* :func:`write_atomic` -- one file;
* :func:`write_directory_atomic` -- a whole directory (an index, its lexical part), swapped in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it over ``path``.

    A crash at any moment leaves either the previous file or the new one, never a partial file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_directory_atomic(directory: str | Path, fill: Callable[[Path], object], *,
                           old_name: str | None = None) -> Path:
    """Call ``fill(tmp)`` on a new sibling directory ``.<name>.tmp-*``, then swap it in as ``directory``.

    An existing ``directory`` is first moved to ``.<name>.old-*/<old_name>`` (default: its own
    name), the new copy renamed into place, and the old copy removed. A crash leaves the old
    directory, or the completed new copy and the old one beside it (which
    :func:`gcl.service.durable.recover_interrupted_save` puts back for an index); a failure in
    ``fill`` removes the temporary directory and re-raises.
    """
    directory = Path(directory)
    parent = directory.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    try:
        fill(tmp)
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=parent))
            os.replace(directory, old / (old_name or directory.name))
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
