"""Milvus's side of the protocol, without pymilvus: locations (``is_milvus_uri``, ``parse_uri``),
boolean expressions (``filter_expression``, ``id_expression``) and index-build parameters of each
gcl kind. Pure functions, cheap to import (see :mod:`gcl.index.milvus` for the index itself).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gcl.errors import ConfigError

INDEX_TYPES = {"exact": "FLAT", "hnsw": "HNSW", "sq8": "IVF_SQ8", "hnsw_sq8": "HNSW_SQ", "ivfpq": "IVF_PQ"}


def check_kind(kind: str, *, lite: bool) -> None:
    """Refuse a gcl kind that Milvus cannot hold here (a ConfigError saying why and what to use)."""
    if kind in ("binary", "binary_hnsw"):
        raise ConfigError(f"kind {kind} is not offered on Milvus: milvus-lite 3.2 has no BINARY_VECTOR field type "
                          "(it refuses one), and gcl does not map it onto a Milvus server's BIN_FLAT/BIN_IVF_FLAT "
                          "(a second, BINARY_VECTOR field that cannot be tested here); build kind binary into a "
                          "directory index, or use kind sq8 (IVF_SQ8) or hnsw_sq8 (HNSW_SQ) on Milvus")
    if lite and kind == "ivfpq":  # milvus-lite 3.2 builds HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8 only
        raise ConfigError("milvus-lite cannot build an IVF_PQ index (kind ivfpq); use a Milvus server, "
                          "or kind sq8 (IVF_SQ8) or hnsw_sq8 (HNSW_SQ)")


def build_params(kind: str, p: Mapping[str, int]) -> dict[str, Any]:
    """Milvus index-build parameters of a gcl kind (``p``: the collection's stored params)."""
    if kind in ("hnsw", "hnsw_sq8"):
        extra = {"sq_type": "SQ8"} if kind == "hnsw_sq8" else {}
        return {"M": p["hnsw_m"], "efConstruction": p["ef_construction"], **extra}
    if kind == "sq8":
        return {"nlist": p["nlist"]}
    if kind == "ivfpq":
        return {"nlist": p["nlist"], "m": p["pq_m"], "nbits": p["pq_nbits"]}
    return {}


def load_pymilvus():
    """The pymilvus module (a ConfigError naming the [milvus] extra when it is not installed)."""
    try:
        import pymilvus
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("the Milvus backend needs pymilvus (and milvus-lite for a local .db file): "
                          "pip install 'gcl[milvus]'") from exc
    return pymilvus


def is_milvus_uri(location: str | os.PathLike) -> bool:
    """``milvus://``, ``http(s)://`` and ``tcp://`` URIs, and paths ending in ``.db`` (milvus-lite)."""
    s = str(location)
    return s.startswith(("milvus://", "http://", "https://", "tcp://")) or s.endswith(".db")


def parse_uri(location: str | os.PathLike) -> tuple[str, str | None]:
    """(pymilvus uri, collection named in the URI or None).

    ``milvus://host:19530`` -> ``http://host:19530``; ``milvus://host:19530/products`` names the
    collection ``products``; ``http(s)://`` URIs are passed as they are (a path after the port
    also names the collection); a ``.db`` path is a milvus-lite file (made absolute).
    """
    s = str(location)
    if s.endswith(".db") and "://" not in s:
        return str(Path(s).expanduser().resolve()), None
    scheme, sep, rest = s.partition("://")
    if not sep or scheme not in ("milvus", "http", "https", "tcp"):
        raise ConfigError(f"not a Milvus location: {s!r} (use milvus://host:port, http(s)://host:port or a .db file)")
    host, _, path = rest.partition("/")
    if not host:
        raise ConfigError(f"no host in Milvus URI {s!r}")
    collection = path.strip("/") or None
    return f"{'http' if scheme == 'milvus' else scheme}://{host}", collection


def expression_literals(value: str) -> list[str]:
    """Milvus expression literals that a stored JSON value ``v`` with ``str(v) == value`` can equal."""
    out = [json.dumps(value, ensure_ascii=False)]
    if value in ("True", "False"):
        out.append(value.lower())
    else:
        try:
            if str(int(value)) == value:
                out.append(value)
        except ValueError:
            try:
                if str(float(value)) == value and np.isfinite(float(value)):
                    out.append(value)
            except ValueError:
                pass
    return out


def id_expression(ids: list[str]) -> str:
    """``id in [...]`` with the ids as JSON string literals (pymilvus's own quoting breaks on a backslash)."""
    return f"id in {json.dumps(ids, ensure_ascii=False)}"


def filter_expression(filters: Mapping[str, str]) -> str:
    """A Milvus boolean expression true for (at least) every document ``filters`` keeps."""
    parts = []
    for name, value in filters.items():
        key = f"fields[{json.dumps(name, ensure_ascii=False)}]"
        alts = [f"{key} == {lit}" for lit in expression_literals(value)]
        parts.append(alts[0] if len(alts) == 1 else "(" + " or ".join(alts) + ")")
    return " and ".join(parts)
