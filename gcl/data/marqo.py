"""The Marqo-GS-10M layout: split CSVs, corpus JSONs, ground-truth JSON and the Parquet form.

A dataset directory holds ``corpus_1.json`` and ``corpus_2.json`` (``{doc_id: {"title": ...,
"image_local": ...}}``) and one CSV per split, ``query_{a}_product_id_{b}.csv`` (``a`` = 0 for
training queries, 1 for novel ones; ``b`` = 0 for the training corpus ``corpus_1``, 1 for
``corpus_2``), with the columns :data:`SPLIT_COLUMNS`. Ground-truth files map a query key (the
query text followed by :data:`QUERY_KEY_SUFFIX`, or a query id) to ``{doc_id: grade}``.

Readers return a validated :class:`GradedDataset`; :func:`write_marqo_layout` writes the same
layout back (``read(write(x)) == x``). See ``docs/data.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gcl.data.arrow_text import arrow_strings, join_strings, json_strings, take_strings, to_strings
from gcl.errors import DataError
from gcl.data.readers import Duplicates, dataset_from_frame, load_columns, read_table
from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, Field, FieldKind, GradedDataset, positions

QUERY_KEY_SUFFIX = "_{!@#~}_"
SPLIT_COLUMNS = (
    "query",
    "product_id",
    "position",
    "title",
    "image_local",
    "pair_id",
    "score_linear",
    "score_reciprocal",
    "no_score",
    "query_id",
)
CORPUS_FIELDS = ("title", "image_local")


def query_key(text: str) -> str:
    """The reference evaluation's key of a query without a query-id column: text + suffix."""
    return f"{text}{QUERY_KEY_SUFFIX}"


def marqo_field(spec: str | Field) -> Field:
    """A field of the layout: names starting with ``image`` are image fields, others text."""
    if isinstance(spec, Field):
        return spec
    return Field(spec, FieldKind.IMAGE if spec.startswith("image") else FieldKind.TEXT)


# ---------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class Corpus:
    """A corpus JSON read once (:func:`load_corpus`), to share between the splits that use it.

    Splits read with the same :class:`Corpus` hold the same ``documents`` object, so evaluation
    encodes it once for all of them (the dense retrievers cache by corpus identity).
    """

    path: Path
    documents: pd.DataFrame
    notes: tuple[str, ...] = ()


def load_corpus(path: str | Path, doc_fields: Sequence[str | Field] = CORPUS_FIELDS) -> Corpus:
    """Read ``corpus_N.json`` once for :func:`read_marqo_split` (``corpus_json=`` this)."""
    documents, notes = _read_corpus(Path(path), [marqo_field(f) for f in doc_fields])
    return Corpus(Path(path), documents, tuple(notes))


def read_marqo_split(
    split_csv: str | Path,
    corpus_json: str | Path | Corpus | None = None,
    *,
    query_col: str = "query",
    doc_id_col: str = "product_id",
    score_col: str | None = "score_linear",
    query_id_col: str | None = None,
    doc_fields: Sequence[str | Field] = CORPUS_FIELDS,
    duplicates: Duplicates = "mean",
    encoding: str = "utf-8",
) -> GradedDataset:
    """Read one split CSV; documents come from ``corpus_json`` (all of them, judged or not).

    ``corpus_json`` is a path, or a :class:`Corpus` already read (:func:`load_corpus`, with the
    same ``doc_fields``), whose documents table the split then shares. Without ``corpus_json``
    the documents are the judged ones, with their fields taken from the CSV's columns. Query
    text is kept as written (not stripped) so that query keys match the reference ground truth.
    ``score_col=None`` scores every judgment 1.0 (grades all 1).
    """
    split_csv = Path(split_csv)
    fields = [marqo_field(f) for f in doc_fields]
    csv_fields = [] if corpus_json is not None else fields
    needed = [query_col, doc_id_col, *(c for c in (score_col, query_id_col) if c is not None)]
    needed += [f.name for f in csv_fields if f.name not in needed]
    frame = load_columns(split_csv, needed, format="csv", encoding=encoding)
    ds = dataset_from_frame(
        frame,
        query_col=query_col,
        doc_id_col=doc_id_col,
        score_col=score_col,
        query_id_col=query_id_col,
        doc_fields=csv_fields,
        duplicates=duplicates,
        strip_queries=False,
        name=split_csv.name.split(".")[0],
        source=str(split_csv),
    )
    if corpus_json is None:
        return ds
    corpus = corpus_json if isinstance(corpus_json, Corpus) else load_corpus(corpus_json, fields)
    documents, notes = corpus.documents, list(corpus.notes)
    missing = [f.name for f in fields if f.name not in documents.columns]
    if missing:
        raise DataError(f"the corpus was read without the field(s) {missing}", source=str(corpus.path))
    if list(documents.columns) != [f.name for f in fields]:
        documents = documents[[f.name for f in fields]]
    ds = GradedDataset(
        queries=ds.queries,
        documents=documents,
        judgments=ds.judgments,
        query_fields=ds.query_fields,
        doc_fields=tuple(fields),
        name=ds.name,
        notes=ds.notes + notes,
    )
    return ds.validate(source=f"{split_csv} with corpus {corpus.path}")


def read_corpus(path: str | Path, doc_fields: Sequence[str | Field] = CORPUS_FIELDS) -> pd.DataFrame:
    """Read ``corpus_N.json`` as a documents table (index ``doc_id``, one column per field)."""
    return _read_corpus(Path(path), [marqo_field(f) for f in doc_fields])[0]


def read_marqo_parquet(
    path: str | Path,
    *,
    query_col: str = "query",
    doc_id_col: str = "product_id",
    score_col: str | None = "score_linear",
    query_id_col: str | None = None,
    doc_fields: Sequence[str | Field] = ("title", "image"),
    duplicates: Duplicates = "mean",
) -> GradedDataset:
    """Read the Parquet form (a file or a directory of shards) of a split.

    Same columns as the CSV; an ``image`` column of bytes (or a Hugging Face ``Image`` struct
    ``{bytes, path}``) becomes an image field holding ``bytes``. Documents are the judged ones.
    """
    path = Path(path)
    return read_table(
        path,
        query_col=query_col,
        doc_id_col=doc_id_col,
        score_col=score_col,
        query_id_col=query_id_col,
        doc_fields=[marqo_field(f) for f in doc_fields],
        format="parquet",
        duplicates=duplicates,
        strip_queries=False,
        name=path.name.split(".")[0],
    )


def read_ground_truth(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a ground-truth JSON ``{query_key: {doc_id: grade}}`` and check its shape."""
    path = Path(path)
    data = _load_json_object(path, "{query: {doc_id: grade}}")
    for row, (key, docs) in enumerate(data.items()):
        if not isinstance(docs, dict):
            what = f"query {key!r}: expected {{doc_id: grade}}, got {type(docs).__name__}"
            raise DataError(what, source=str(path), row=row)
        for doc, grade in docs.items():
            if isinstance(grade, bool) or not isinstance(grade, int):
                what = f"query {key!r}, document {doc!r}: grade {grade!r} is not an integer"
                raise DataError(what, source=str(path), row=row)
    return data


def write_ground_truth(path: str | Path, ground_truth: Mapping[str, Mapping[str, int]]) -> Path:
    """Write ground truth as the reference does (``json.dump`` defaults, byte-compatible)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in ground_truth.items()}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return path


# ---------------------------------------------------------------------------- writer
def write_marqo_layout(
    out_dir: str | Path,
    splits: Mapping[str, GradedDataset],
    corpora: Mapping[str, GradedDataset | pd.DataFrame],
    row_hints: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Path]:
    """Write split CSVs (``{name}.csv``) and corpus JSONs (``{name}.json``) into ``out_dir``.

    ``splits`` maps a file stem (``"query_0_product_id_0"``, ``"train"``...) to a dataset;
    ``corpora`` maps ``"corpus_1"``/``"corpus_2"`` to a dataset (its documents) or a documents
    table. Each CSV row is one judgment, in the dataset's order, with the columns
    :data:`SPLIT_COLUMNS`: ``position`` is the rank of the document within its query by score
    descending (1-based; ties keep judgment order), ``score_reciprocal = 1 / position``,
    ``no_score = 1``, ``pair_id`` the row's 0-based index. ``row_hints`` (optional, per split
    name): what :func:`split_table` would otherwise look up, from a caller that knows it
    (``build_splits``). Returns ``{name: path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, docs in corpora.items():
        table = docs.documents if isinstance(docs, GradedDataset) else docs
        written[name] = _write_corpus(out / f"{name}.json", table)
    for name, ds in splits.items():
        path = out / f"{name}.csv"
        doc_rows, query_codes = (row_hints or {}).get(name, (None, None))
        _write_split_csv(path, split_table(ds, doc_rows=doc_rows, query_codes=query_codes))
        written[name] = path
    return written


def split_frame(ds: GradedDataset) -> pd.DataFrame:
    """The split CSV of ``ds`` as a DataFrame (columns :data:`SPLIT_COLUMNS`)."""
    return split_table(ds).to_pandas()


def split_table(ds: GradedDataset, *, doc_rows: np.ndarray | None = None, query_codes: np.ndarray | None = None):
    """The split CSV of ``ds`` as a ``pyarrow.Table`` (columns :data:`SPLIT_COLUMNS`).

    Built with vectorised lookups (``positions``) and pyarrow ``take``; ``position`` is the
    1-based rank of the row within its query by score descending, ties in judgment order.
    A caller that already knows them can pass ``doc_rows`` (each judgment's row in
    ``ds.documents``, i.e. ``positions(judgments.doc_id, documents.index)``) and ``query_codes``
    (one integer per distinct query id, e.g. its row in the source's queries table): the same
    table without hashing the string ids again.
    """
    import pyarrow as pa

    j = ds.judgments
    n = len(j)
    score = j[SCORE].to_numpy(dtype=float)
    position = rank_in_query(j[QUERY_ID] if query_codes is None else query_codes, score)
    d_pos = positions(j[DOC_ID], ds.documents.index) if doc_rows is None else np.asarray(doc_rows, dtype=np.int64)
    text = ds.queries[ds.query_fields[0].name]
    if len(text) and bool((text.to_numpy(dtype=object) == text.index.to_numpy(dtype=object)).all()):
        query = to_strings(j[QUERY_ID])  # the query ids are the texts: no lookup
    else:
        query = take_strings(text, positions(j[QUERY_ID], ds.queries.index))
    docs = ds.documents
    empty = pa.nulls(n, pa.large_string()).fill_null("")
    title = take_strings(docs["title"], d_pos).fill_null("") if "title" in docs.columns else empty
    image = empty
    if "image_local" in docs.columns:
        def image_paths(taken: pd.Series):  # checked per row of the split, so an error names it
            return pa.array(_image_paths(taken, ds.name), pa.large_string())

        image = take_strings(docs["image_local"], d_pos, convert=image_paths).fill_null("")
    columns = {
        "query": query,
        "product_id": to_strings(j[DOC_ID]),
        "position": pa.array(position, pa.int64()),
        "title": title,
        "image_local": image,
        "pair_id": pa.array(np.arange(n, dtype=np.int64)),
        "score_linear": pa.array(score, pa.float64()),
        "score_reciprocal": pa.array(1.0 / np.maximum(position, 1), pa.float64()),
        "no_score": pa.array(np.ones(n, dtype=np.int64)),
        "query_id": to_strings(j[QUERY_ID]),
    }
    return pa.table([columns[c] for c in SPLIT_COLUMNS], names=list(SPLIT_COLUMNS))


def rank_in_query(query_ids: pd.Series, score: np.ndarray) -> np.ndarray:
    """1-based rank of each row within its query by ``score`` descending; ties keep row order.

    Equals ``groupby(query_ids).rank(method="first", ascending=False)``: two stable sorts
    (score descending, then query), then the offset of each row from its query's first row.
    """
    n = len(score)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    codes, _ = pd.factorize(query_ids)
    order = np.argsort(-score, kind="stable")
    order = order[np.argsort(codes[order], kind="stable")]
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start + 1
    return rank


# ---------------------------------------------------------------------------- internals
def _load_json_object(path: Path, shape: str) -> dict:
    if not path.exists():
        raise DataError("file not found", source=str(path))
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise DataError(f"invalid JSON at {where}: {exc.msg}", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot decode the file as utf-8: {exc.reason}", source=str(path)) from None
    if not isinstance(data, dict):
        raise DataError(f"expected an object {shape}, got {type(data).__name__}", source=str(path))
    return data


def _read_corpus(path: Path, fields: Sequence[Field]) -> tuple[pd.DataFrame, list[str]]:
    if not path.exists():
        raise DataError("corpus file not found", source=str(path))
    data = _load_json_object(path, "{doc_id: {field: value}}")
    if not data:
        raise DataError("the corpus is empty: no documents", source=str(path))
    ids = list(data)
    entries = list(data.values())
    bad = [i for i, e in enumerate(entries) if not isinstance(e, dict)]
    if bad:
        what = f"document {ids[bad[0]]!r} is not an object ({len(bad)} such)"
        raise DataError(what, source=str(path), row=bad[0])
    notes = []
    columns: dict[str, object] = {}
    for field in fields:
        values = pd.Series([e.get(field.name) for e in entries], dtype=object)
        missing = int(values.isna().sum())
        if missing == len(values):
            present = sorted({k for e in entries[:1000] for k in e})
            what = f"no document has field {field.name!r}; fields present: {present}"
            raise DataError(what, source=str(path), field=field.name)
        if missing:
            notes.append(f"{path.name}: {missing} documents lack field {field.name!r} (read as missing)")
        if field.kind == FieldKind.IMAGE:
            columns[field.name] = values.where(values.notna() & (values != ""), None)
        else:
            columns[field.name] = values.astype(str).fillna("")
    table = pd.DataFrame(columns)
    table.index = pd.Index(ids, dtype=str, name=DOC_ID)
    return table, notes


def _write_corpus(path: Path, documents: pd.DataFrame) -> Path:
    """``json.dump(table.to_dict(orient="index"))`` of the corpus, byte for byte.

    ``title`` and ``image_local`` are always present (``""`` when absent), missing values are
    ``""``. When every field holds strings the JSON text is assembled with pyarrow string kernels
    (:func:`_corpus_json`); other values (numbers, say) take the ``json.dump`` path.
    """
    names = [*documents.columns, *(n for n in CORPUS_FIELDS if n not in documents.columns)]
    strings = {n: arrow_strings(documents[n]) if n in documents.columns else "" for n in names}
    if all(v is not None for v in strings.values()) and arrow_strings(documents.index) is not None:
        with open(path, "wb") as fh:
            fh.write(b"{")
            fh.write(_corpus_json(documents.index, strings))
            fh.write(b"}")
        return path
    table = pd.DataFrame(index=documents.index)
    for name in names:
        col = documents[name].astype(object) if name in documents.columns else pd.Series("", index=documents.index)
        table[name] = _image_paths(col, str(path)) if name.startswith("image") else col.where(col.notna(), "")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(table.to_dict(orient="index"), fh)
    return path


def _corpus_json(index: pd.Index, fields: Mapping[str, object]) -> memoryview:
    """``'"id": {"field": "value", ...}, ...'`` (what ``json.dump`` writes inside the braces).

    ``fields`` maps a name to a pyarrow string array (nulls written as ``""``) or a constant
    ``str``. Keys and values are escaped as ``json.dumps`` does (``ensure_ascii``; separators
    ``", "`` and ``": "``): printable ASCII without ``"`` or ``\\`` is quoted by a vectorised
    join, other strings go through ``json``'s own encoder.
    """
    import pyarrow as pa

    if len(index) == 0:
        return memoryview(b"")
    encode = json.encoder.encode_basestring_ascii
    parts: list = [json_strings(arrow_strings(index)), ": {"]
    for i, (name, values) in enumerate(fields.items()):
        parts.append((", " if i else "") + encode(str(name)) + ": ")
        if isinstance(values, str):
            parts[-1] += encode(values)
        else:
            parts.append(json_strings(values.fill_null("")))
    parts.append("}, ")
    entries = join_strings(*parts)
    if isinstance(entries, pa.ChunkedArray):
        entries = entries.combine_chunks()
    data, offsets = entries.buffers()[2], np.frombuffer(entries.buffers()[1], dtype=np.int64)
    start, stop = offsets[entries.offset], offsets[entries.offset + len(entries)]
    return memoryview(data)[start : stop - 2]  # the entries back to back, less the last ", " (no copy)


def _write_split_csv(path: Path, table) -> None:
    """Write with pyarrow's CSV writer: text cells quoted, floats shortest round-trip (``1`` for 1.0)."""
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, path)


def _image_paths(values: pd.Series, source: str) -> np.ndarray:
    """Image paths for a JSON/CSV cell: ``None`` -> ``""``; ``bytes`` cannot be written."""
    values = values.astype(object)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        is_bytes = values.map(lambda v: isinstance(v, (bytes, bytearray))).to_numpy(dtype=bool)
        if is_bytes.any():
            raise DataError(
                "image bytes cannot be written to the CSV/JSON layout; save the images as files "
                "and store their paths in 'image_local'",
                source=source,
                row=int(np.flatnonzero(is_bytes)[0]),
                field=str(values.name) if values.name is not None else None,
            )
    return values.where(values.notna(), "").to_numpy(dtype=object)
