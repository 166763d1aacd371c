"""Build a :class:`~gcl.index.store.VectorIndex` from a documents table, resumably.

Encoding a large corpus is the slow part of building an index, so it is checkpointed: documents
are encoded ``batch_size`` at a time, and every ``checkpoint_every`` batches the new vectors are
appended to a *shard log* in a work directory beside the output (``<out_dir>.partial/``)::

    shard-0000000000.npy     positions [0, 2560) of the encoding order, float32 (rows, dim)
    shard-0000002560.npy     positions [2560, 5120) ...
    progress.json            {"fingerprint", "batch_size", "model", "dim", "encoded_rows", "shards": [...]}

Each shard is written to a temporary file and renamed, *then* ``progress.json`` is rewritten the
same way, so the log on disk is always a consistent prefix of the encoding order.

The encoding order (:func:`encoding_order`) is the table's rows sorted by text length, longest
first, ties in table order: it depends on the documents only, so a resumed build recomputes it.
Batches of similar length pad little (a sentence-transformers model pads each batch to its
longest text), which on Home Depot titles cuts the padded tokens encoded by about 1.4× against
batches in table order. Documents enter the index in this order too (it is the write order that
breaks exact score ties). When encoding fails with
an exception, the batches already encoded in memory are flushed to the log before it propagates;
after a hard kill at most ``checkpoint_every - 1`` batches are encoded again. A re-run with the
same documents, model and batch size resumes at ``encoded_rows``; one with different ones is
refused (``restart=True`` discards the log). When every row is encoded, the index is built from the
shards with the documents' fields, saved atomically to ``out_dir``, and the work directory removed.

``out_dir`` may also be a Milvus location (``milvus://host:19530``, ``http(s)://...`` or a
milvus-lite ``.db`` file; see :mod:`gcl.index.factory`). Encoding and its shard log are the same
(the work directory defaults to ``<file>.partial`` beside a ``.db`` file, and to
``.gcl-index-build/<host>-<collection>.partial`` in the working directory for a server); at the
end the collection is dropped and recreated, the shards are upserted into it (an upsert by id, so
a build killed while loading and run again still holds every document once) and the log is
removed. Unlike the directory backend, readers of the collection see it empty or partly loaded
while this final step runs.

A build holds its output's writer lock (:class:`gcl.index.locks.WriterLock`; for a Milvus output
the shard log's) from start to end, so a second build of the same output, or a ``gcl serve`` on
it, is refused with an error naming this process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gcl.atomic import write_atomic
from gcl.errors import ConfigError, DataError
from gcl.data.schema import DOC_ID
from gcl.index.base import IndexParams, SearchIndex
from gcl.index.factory import backend_for
from gcl.index.locks import WriterLock

PROGRESS_FILE = "progress.json"
PROGRESS_VERSION = 1


class DocumentEncoder(Protocol):
    """What the builder needs of a model: the document side of :class:`gcl.encoders.base.EmbeddingModel`."""

    @property
    def doc_field_names(self) -> list[str]: ...

    def field_kinds(self, side: str) -> dict[str, str]: ...

    @property
    def source(self) -> str | None: ...

    def encode_documents(self, documents: pd.DataFrame, *, batch_size: int = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class BuildResult:
    """The built (and saved) index and what this run did."""

    index: SearchIndex  # a VectorIndex, or a MilvusIndex when the output was a Milvus location
    out_dir: Path
    n_documents: int
    encoded_batches: int  # batches encoded by this run
    resumed_rows: int  # rows found already encoded in the shard log when this run started
    seconds: float
    location: str = ""  # where the index is: the directory, or the Milvus URI


def default_work_dir(out_dir: str | Path, collection: str | None = None) -> Path:
    """Where the shard log of a build into ``out_dir`` lives (see :meth:`gcl.index.factory.Backend.work_dir`)."""
    return backend_for(out_dir).work_dir(str(out_dir), collection)


def _doc_ids(documents: pd.DataFrame) -> list[str]:
    raw = documents[DOC_ID] if DOC_ID in documents.columns else documents.index
    ids = [str(x) for x in raw]
    if len(set(ids)) != len(ids):
        dup = pd.Index(ids)[pd.Index(ids).duplicated()][0]
        raise DataError(f"duplicate document id {dup!r}", field=DOC_ID)
    return ids


def encoding_order(documents: pd.DataFrame, text_cols: Sequence[str]) -> np.ndarray:
    """Row positions, longest text first (summed over ``text_cols``), ties in table order."""
    cols = [c for c in text_cols if c in documents.columns]
    if not cols:
        return np.arange(len(documents))
    length = np.zeros(len(documents), dtype=np.int64)
    for c in cols:
        length += documents[c].fillna("").astype(str).str.len().to_numpy(dtype=np.int64)
    return np.argsort(-length, kind="stable")


def _fingerprint(ids: list[str], documents: pd.DataFrame, text_cols: list[str]) -> str:
    """sha256 of the ids and the encoded columns, in order: a resumed build must see the same table."""
    h = hashlib.sha256()
    h.update("\x1f".join(ids).encode("utf-8"))
    for col in text_cols:
        h.update(col.encode("utf-8"))
        h.update(pd.util.hash_pandas_object(documents[col].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()


def _load_progress(work_dir: Path, expect: dict[str, Any], restart: bool) -> dict[str, Any]:
    """The shard log's progress, checked against this build; a fresh one when there is none."""
    fresh = {"version": PROGRESS_VERSION, **expect, "dim": None, "encoded_rows": 0, "shards": []}
    path = work_dir / PROGRESS_FILE
    if restart and work_dir.exists():
        shutil.rmtree(work_dir)
    if not path.is_file():
        return fresh
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{PROGRESS_FILE} is unreadable ({exc}); pass restart to start over", source=str(work_dir)) from exc
    for key, value in expect.items():
        if progress.get(key) != value:
            raise ConfigError(
                f"{work_dir} holds a partial build with another {key} ({progress.get(key)!r}, now {value!r}); "
                "rebuild with the same documents, model and batch size, or restart (gcl index build --restart)"
            )
    # keep the longest prefix of shards that are really there (a lost shard is encoded again)
    kept, row = [], 0
    for shard in progress.get("shards", []):
        f = work_dir / shard["file"]
        try:
            shape = np.load(f, mmap_mode="r").shape
        except (OSError, ValueError):
            break
        if shard["start"] != row or shape != (shard["stop"] - shard["start"], progress["dim"]):
            break
        kept.append(shard)
        row = shard["stop"]
    progress["shards"], progress["encoded_rows"] = kept, row
    return progress


def _check_quantization(kind: str, quantization: Mapping[str, int] | None, dim: Any) -> dict[str, int]:
    """The compressed kinds' settings, checked before encoding starts (``pq_m`` against the model's
    dimension when it has one); empty for exact/hnsw."""
    from gcl.index.base import QUANTIZED_KINDS, QuantParams

    if kind not in QUANTIZED_KINDS:
        return {}
    checked = QuantParams(**dict(quantization or {}))
    if kind == "ivfpq" and isinstance(dim, int):
        checked.check_dim(dim)
    return dict(checked.__dict__)


def _check_output(location: str, *, options: dict[str, Any]):
    """The backend of ``location``; a bad URI, options the backend does not take, or a directory
    that holds something else than an index fail now, not after encoding."""
    backend = backend_for(location)
    unknown = sorted(set(options) - set(backend.options))
    if unknown:
        raise ConfigError("collection, token and db_name apply to a Milvus output only")
    backend.check_output(location)
    return backend


def _encode_to_shards(model: DocumentEncoder, documents: pd.DataFrame, order: np.ndarray, progress: dict[str, Any],
                      work_dir: Path, *, batch_size: int, checkpoint_every: int, show_progress: bool) -> int:
    """Encode the rows not yet in the shard log, in ``order``, ``batch_size`` at a time; append a
    shard (then ``progress.json``) every ``checkpoint_every`` batches, and flush what is encoded
    when encoding fails. Returns the number of batches encoded by this call."""
    pending: list[np.ndarray] = []
    encoded_batches = 0

    def flush() -> None:
        if not pending:
            return
        block = np.concatenate(pending)
        start = progress["encoded_rows"]
        shard = {"file": f"shard-{start:010d}.npy", "start": start, "stop": start + len(block)}
        write_atomic(work_dir / shard["file"], lambda fh: np.save(fh, block))
        progress["shards"].append(shard)
        progress["encoded_rows"] = shard["stop"]
        write_atomic(work_dir / PROGRESS_FILE, lambda fh: fh.write(json.dumps(progress, indent=1).encode()))
        pending.clear()

    n, resumed_rows = len(documents), progress["encoded_rows"]
    bar = tqdm(total=n, initial=resumed_rows, unit="doc", desc="encode", disable=not show_progress)
    try:
        for start in range(resumed_rows, n, batch_size):
            batch = documents.iloc[order[start : start + batch_size]]
            emb = np.asarray(model.encode_documents(batch, batch_size=batch_size), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(batch) or (progress["dim"] not in (None, emb.shape[1])):
                raise DataError(f"the model returned vectors of shape {emb.shape} for {len(batch)} documents"
                                + (f" (earlier batches had dimension {progress['dim']})" if progress["dim"] else ""))
            progress["dim"] = int(emb.shape[1])
            pending.append(emb)
            encoded_batches += 1
            bar.update(len(batch))
            if len(pending) >= checkpoint_every:
                flush()
        flush()
    except BaseException:
        try:
            flush()  # keep what was encoded before the failure
        except (OSError, ValueError, MemoryError):  # the shard write's own failures (disk full, no memory
            pass  # to join the batches): the original error, re-raised below, matters more
        raise
    finally:
        bar.close()
    return encoded_batches


def _load_shards(write, work_dir: Path, shards: list[dict], order: np.ndarray, ids: list[str],
                 fields: pd.DataFrame | None) -> None:
    """``write(ids, vectors, fields)`` every shard of the log, in encoding order."""
    id_array = np.asarray(ids, dtype=object)
    for shard in shards:
        rows = order[shard["start"] : shard["stop"]]
        vectors = np.load(work_dir / shard["file"])
        write(id_array[rows].tolist(), vectors, fields.iloc[rows].to_dict("records") if fields is not None else None)


def _one_writer(build):
    """Run ``build`` holding the :class:`~gcl.index.locks.WriterLock` of its output directory (for a
    Milvus output: of its shard log), so a second build or a ``gcl serve`` on it is refused."""

    @functools.wraps(build)
    def locked(model, documents, out_dir, **options):
        target = backend_for(out_dir).lock_target(str(out_dir), options.get("work_dir"), options.get("collection"))
        with WriterLock(target, purpose="gcl index build"):
            return build(model, documents, out_dir, **options)

    return locked


@_one_writer
def build_index(
    model: DocumentEncoder,
    documents: pd.DataFrame,
    out_dir: str | Path,
    *,
    kind: Literal["exact", "hnsw"] = IndexParams.kind,
    batch_size: int = 256,
    checkpoint_every: int = 10,
    fields: Sequence[str] | None = None,
    model_path: str | None = None,
    hnsw_m: int = IndexParams.hnsw_m,
    ef_construction: int = IndexParams.ef_construction,
    ef_search: int = IndexParams.ef_search,
    quantization: Mapping[str, int] | None = None,
    work_dir: str | Path | None = None,
    restart: bool = False,
    show_progress: bool = True,
    collection: str | None = None,
    token: str | None = None,
    db_name: str | None = None,
) -> BuildResult:
    """Encode ``documents`` (ids in the index or a ``doc_id`` column) and save a :class:`VectorIndex`.

    ``fields``: the columns stored with each document (default: all of them). ``model_path`` is
    recorded in the index manifest so that ``gcl search`` can encode queries with the same model
    (default: ``model.source``, where the model was loaded from). See the module docstring for
    the shard log and resuming. ``collection``, ``token``, ``db_name``: for a Milvus ``out_dir``.
    ``quantization``: fields of :class:`gcl.index.base.QuantParams` for a compressed ``kind``.
    """
    t0 = time.perf_counter()
    for name, value in (("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if len(documents) == 0:
        raise DataError("no documents to index")
    IndexParams(kind=kind, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)  # checks them
    quantization = _check_quantization(kind, quantization, getattr(model, "dim", None))
    location, out_dir = str(out_dir), Path(out_dir)
    given = {k: v for k, v in (("collection", collection), ("token", token), ("db_name", db_name)) if v}
    backend = _check_output(location, options=given)
    backend.check_kind(location, kind)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(location, collection)
    if model_path is None:
        model_path = model.source
    ids = _doc_ids(documents)
    field_cols = [c for c in documents.columns if c != DOC_ID] if fields is None else list(fields)
    unknown = [c for c in field_cols if c not in documents.columns]
    if unknown:
        raise DataError(f"field(s) {unknown} not in the documents; have {list(documents.columns)}")
    encoded_cols = [c for c in model.doc_field_names if c in documents.columns]  # the fields the model reads
    kinds = model.field_kinds("doc")
    order = encoding_order(documents, [c for c in encoded_cols if kinds.get(c) == "text"])
    expect = {
        "fingerprint": _fingerprint(ids, documents, encoded_cols),
        "order": "length",  # shards hold positions of encoding_order(), not table rows
        "n_documents": len(ids),
        "batch_size": batch_size,
        "model": model_path,
    }
    progress = _load_progress(work_dir, expect, restart)
    work_dir.mkdir(parents=True, exist_ok=True)
    resumed_rows = progress["encoded_rows"]

    n = len(ids)
    encoded_batches = _encode_to_shards(model, documents, order, progress, work_dir, batch_size=batch_size,
                                        checkpoint_every=checkpoint_every, show_progress=show_progress)

    params = dict(dim=progress["dim"], kind=kind, hnsw_m=hnsw_m, ef_construction=ef_construction,
                  ef_search=ef_search, model=model_path, **quantization)
    index, write = backend.create(location, params, **given)
    _load_shards(write, work_dir, progress["shards"], order, ids, documents[field_cols] if field_cols else None)
    backend.finish(index, location)
    shutil.rmtree(work_dir, ignore_errors=True)
    return BuildResult(index=index, out_dir=out_dir, n_documents=n, encoded_batches=encoded_batches,
                       resumed_rows=resumed_rows, seconds=time.perf_counter() - t0, location=location)
