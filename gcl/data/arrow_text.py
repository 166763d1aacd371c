"""pyarrow helpers for columns of strings: conversion, gathering, joining, JSON escaping.

They keep text in Arrow buffers (pandas 3 stores ``str`` columns there), so the readers,
the split builder and the Marqo-layout writer work on millions of strings without a Python
object per value. pyarrow is imported where used (importing :mod:`gcl.data` stays cheap).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def prefer_jemalloc_pool() -> bool:
    """Make pyarrow allocate from its jemalloc pool, where this pyarrow build has one and the
    user has not chosen a pool (``ARROW_DEFAULT_MEMORY_POOL``). It hands freed pages back to the
    operating system sooner than the default mimalloc pool, so a command that parses, gathers
    and frees large tables in turn peaks closer to its live data: ``gcl split`` of 10^6
    Marqo-shaped rows peaks at 458 MB instead of 553 MB, same CPU time. Process-wide, so only
    commands call it (``gcl split``), not library functions. Returns whether the pool changed.
    """
    import os

    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return False
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a build without jemalloc: keep the default
        return False
    return True


def one_array(values):
    """A pyarrow chunked array as one array (a copy only when there are several chunks)."""
    import pyarrow as pa

    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def arrow_strings(values):
    """``values`` as a pyarrow string (chunked) array when they are all strings (or missing), else ``None``.

    A pandas ``str`` column backed by pyarrow converts without copying (its chunks kept); an
    object array of ``str`` is converted (about 0.05 s per 10^6 values).
    """
    import pyarrow as pa

    arr = values.array if isinstance(values, (pd.Series, pd.Index)) else values
    if isinstance(arr, (pa.Array, pa.ChunkedArray)):
        out = arr
    elif isinstance(getattr(arr, "dtype", None), pd.StringDtype) and arr.dtype.storage == "pyarrow":
        out = pa.array(arr)
    else:
        arr = np.asarray(arr, dtype=object)
        if pd.api.types.infer_dtype(arr, skipna=True) not in ("string", "empty"):
            return None
        out = pa.array(arr, type=pa.large_string(), from_pandas=True)
    return out if pa.types.is_string(out.type) or pa.types.is_large_string(out.type) else None


def json_strings(values):
    """``json.dumps(v)`` (``ensure_ascii``) of each string of a pyarrow array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.large_string())
    quoted = join_strings('"', values, '"')
    special = pc.invert(pc.match_substring_regex(values, r'^[ !#-\[\]-~]*$')).to_numpy(zero_copy_only=False)
    if special.any():
        escaped = [json.encoder.encode_basestring_ascii(v) for v in values.filter(special).to_pylist()]
        quoted = pc.replace_with_mask(quoted, pa.array(special), pa.array(escaped, pa.large_string()))
    return quoted



def join_strings(*parts):
    """Element-wise concatenation of pyarrow ``large_string`` arrays and ``str`` constants."""
    import pyarrow as pa
    import pyarrow.compute as pc

    large = pa.large_string()
    args = [pa.scalar(p, large) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", large))



def to_strings(values: pd.Series):
    """A column of ids or texts as a pyarrow string array (``str()`` of other values)."""
    import pyarrow as pa

    arr = arrow_strings(values)
    if arr is None:
        arr = pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values],
                       pa.large_string())
    return arr



def take_strings(values: pd.Series, pos: np.ndarray, *, convert=None):
    """``values`` at positions ``pos`` (``-1`` = missing = null) as a pyarrow string array.

    Values that are not all strings are gathered as Python objects and passed to ``convert``
    (default :func:`to_strings`), so the caller can check them row by row of the result.
    """
    import pyarrow as pa

    arr = arrow_strings(values)
    if arr is not None:
        return arr.take(pa.array(pos, pa.int64(), mask=pos < 0))
    taken = pd.Series(values.to_numpy(dtype=object)[pos], name=values.name, dtype=object)
    taken[pos < 0] = None
    return (convert or to_strings)(taken)
