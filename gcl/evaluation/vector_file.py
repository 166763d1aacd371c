"""Rows of a ``.npy`` vector file, read without loading the file: the precomputed-embeddings path.

``gcl evaluate --embeddings DIR`` needs, per corpus, the rows of ``documents.npy`` that belong to
that corpus, in the corpus table's order, L2-normalised, as float32. Loading the file, converting
it to float32 and normalising it made two whole copies before a third (the corpus's rows) was
gathered. :class:`VectorFile` reads only the ``.npy`` header up front; :meth:`VectorFile.gather`
then walks the file in windows of ``window`` rows (sequential reads into one reused buffer; no
memory map, so the file's pages never count as the process's memory), converts and normalises the
wanted rows of each window and writes them to their places in the one output array:

    out[i] = v_{rows[i]} / max(||v_{rows[i]}||_2, 1e-12)    (float32, computed on float32(v))

Peak memory: the output (``len(rows) x dim x 4`` bytes) plus one window, whatever the file size
or dtype. Results equal ``normalise(np.load(path).astype(np.float32))[rows]`` bit for bit (for a
Fortran-ordered file, read whole through a memory map, to float32 rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gcl.errors import DataError

WINDOW_ROWS = 16384  # rows read per window (25 MiB of 384-d float32)


class VectorFile:
    """A 2-D numeric ``.npy`` file: ``shape``, ``dtype``, and :meth:`gather` of normalised rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:  # a memory map only to parse the header: no page of the data is touched
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"not a readable .npy file: {exc}", source=str(self.path)) from exc
        shape, dtype = mm.shape, mm.dtype
        fortran = mm.ndim > 1 and not mm.flags.c_contiguous
        self.offset = int(mm.offset) if isinstance(mm, np.memmap) else 0
        del mm
        if len(shape) != 2 or dtype.kind not in "fiu" or dtype.hasobject:
            raise DataError(f"expected a 2-D numeric array, got shape {shape} of dtype {dtype}", source=str(self.path))
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.fortran = bool(fortran)
        need = self.offset + self.shape[0] * self.shape[1] * dtype.itemsize
        if self.path.stat().st_size < need:
            raise DataError(f"file is truncated: {self.path.stat().st_size} bytes, the header promises {need}",
                            source=str(self.path))

    def gather(self, rows: np.ndarray, *, window: int | None = None) -> np.ndarray:
        """``(len(rows), dim)`` float32: the L2-normalised rows ``rows`` (file row numbers), reading
        ``window`` rows (default :data:`WINDOW_ROWS`) at a time."""
        window = int(window or WINDOW_ROWS)
        rows = np.asarray(rows, dtype=np.int64)
        n, dim = self.shape
        out = np.empty((len(rows), dim), dtype=np.float32)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"row numbers must lie in 0..{n - 1}")
        if self.fortran:  # column-major on disk: rows are not contiguous; rare, so read it whole
            whole = np.load(self.path, mmap_mode="r")
            for start in range(0, len(rows), window):
                out[start : start + window] = _normalised(whole[rows[start : start + window]])
            return out
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        buf = np.empty(min(window, n) * dim, dtype=self.dtype)
        row_bytes = dim * self.dtype.itemsize
        with open(self.path, "rb") as fh:
            lo = 0
            while lo < len(wanted):
                first = int(wanted[lo])
                last = min(first + window, n)  # this window: file rows first .. last - 1
                hi = int(np.searchsorted(wanted, last, side="left"))
                fh.seek(self.offset + first * row_bytes)
                view = buf[: (last - first) * dim]
                if fh.readinto(memoryview(view).cast("B")) != view.nbytes:
                    raise DataError("file ended early", source=str(self.path))
                block = view.reshape(last - first, dim)
                out[order[lo:hi]] = _normalised(block[wanted[lo:hi] - first])
                lo = hi
        return out


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x).astype(np.float32)  # a copy of just these rows
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x /= np.maximum(norms, 1e-12)
    return x
