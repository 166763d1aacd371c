"""The on-disk form of a :class:`gcl.index.store.VectorIndex` directory: ``manifest.json``,
``vectors.faiss``, ``documents.jsonl`` (one ``{"id", "label", "fields"}`` per live document, in
label order) and ``tombstones.npy``, written into a temporary sibling and swapped in with
:func:`gcl.atomic.write_directory_atomic` (a reader sees the old index or the new one), and read
back with every file checked against the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gcl.atomic import write_directory_atomic
from gcl.errors import ConfigError, DataError

FORMAT = "gcl-vector-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
FAISS_FILE = "vectors.faiss"
DOCUMENTS_FILE = "documents.jsonl"
TOMBSTONES_FILE = "tombstones.npy"


def _write_json(path: Path, write) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def save_files(index, directory: Path) -> Path:
    """Write ``index`` to ``directory`` atomically; an existing ``directory`` is replaced only if it is
    empty or holds an index (a ``manifest.json``). The caller holds the index's read lock."""
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError(f"{directory} exists and is not a directory")
        if any(directory.iterdir()) and not (directory / MANIFEST_FILE).is_file():
            raise ConfigError(f"{directory} is not empty and holds no index ({MANIFEST_FILE}); refusing to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> None:
        index._write_faiss(tmp / FAISS_FILE)
        _write_json(tmp / DOCUMENTS_FILE, lambda fh: fh.writelines(
            json.dumps({"id": index._doc_of[label], "label": label, "fields": index._fields[label]},
                       ensure_ascii=False) + "\n" for label in sorted(index._doc_of)))
        np.save(tmp / TOMBSTONES_FILE, np.asarray(sorted(index._tombstones), dtype=np.int64))
        index._write_extra(tmp)
        _write_json(tmp / MANIFEST_FILE, lambda fh: json.dump(index.manifest(), fh, indent=2))

    # old_name "index": gcl.service.durable.recover_interrupted_save looks for .<name>.old-*/index
    return write_directory_atomic(directory, fill, old_name="index")


def load_files(cls, directory):
    """An instance of ``cls`` read from ``directory`` (see :meth:`gcl.index.store.VectorIndex.load`)."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise DataError(f"no index here ({MANIFEST_FILE} not found)", source=str(directory))
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{MANIFEST_FILE} is not valid JSON ({exc})", source=str(directory)) from exc
    if manifest.get("format") != FORMAT:
        raise DataError(f"{MANIFEST_FILE} is not a {FORMAT} manifest", source=str(directory))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{directory}: index format version {manifest.get('format_version')} is not supported "
                          f"(this gcl reads version {FORMAT_VERSION}); rebuild the index")
    params = manifest.get("params", {})
    index = cls(dim=manifest["dim"], kind=manifest["kind"], model=manifest.get("model"), **params)
    for name in (FAISS_FILE, DOCUMENTS_FILE):
        if not (directory / name).is_file():
            raise DataError(f"index file {name} is missing", source=str(directory))
    try:
        raw = index._read_faiss(directory / FAISS_FILE)
    except RuntimeError as exc:  # faiss reports a truncated or corrupt file as a RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read the faiss index (corrupt or truncated? rebuild it): {first}",
                        source=str(directory / FAISS_FILE)) from exc
    if not index._faiss_fits(raw):
        raise DataError(f"{FAISS_FILE} is not the id-mapped faiss index of a {index.kind} index of dimension "
                        f"{index.dim}", source=str(directory))
    index._faiss_index = raw
    if index.kind == "hnsw":
        index._inner().hnsw.efSearch = index.ef_search
    with open(directory / DOCUMENTS_FILE, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            try:
                rec = json.loads(line)
                doc_id, label, fields = rec["id"], int(rec["label"]), rec.get("fields") or {}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(f"bad record ({exc})", source=str(directory / DOCUMENTS_FILE), row=line_no) from exc
            index._label_of[doc_id] = label
            index._doc_of[label] = doc_id
            index._fields[label] = fields
    tomb_path = directory / TOMBSTONES_FILE
    tombstones = np.load(tomb_path) if tomb_path.is_file() else np.zeros(0, dtype=np.int64)
    index._tombstones = set(tombstones.tolist())
    index._next_label = int(manifest.get("next_label", max(index._doc_of, default=-1) + 1))
    index._load_extra(directory)
    expected = np.sort(np.concatenate([np.fromiter(index._doc_of, dtype=np.int64, count=len(index._doc_of)),
                                       tombstones.astype(np.int64)]))
    if len(index._label_of) != len(index._doc_of) or not np.array_equal(np.sort(index._stored_labels()), expected):
        raise DataError(f"{FAISS_FILE} and {DOCUMENTS_FILE} disagree about the stored documents "
                        f"({raw.ntotal} vectors, {len(index._doc_of)} documents, {len(tombstones)} tombstones)",
                        source=str(directory))
    index._path = directory
    return index
