"""Read graded judgments from a CSV, TSV, JSONL or Parquet table into a :class:`GradedDataset`.

One row of the table is one judgment: a query, a document and a score. The column mapping is
explicit (``query_col``, ``doc_id_col``, ``score_col``, optional ``query_id_col``) and the
document fields are named columns (``doc_fields``, default ``["title"]``)::

    ds = read_table("judgments.csv.gz", query_col="search_term", doc_id_col="product_uid",
                    score_col="relevance", doc_fields={"title": "product_title"})

Bad input raises :class:`~gcl.errors.DataError` naming the file, the 0-based data row and
the column. Nothing is dropped silently: merged duplicate judgments and conflicting document or
query fields are counted in ``dataset.notes``. The rules are in ``docs/data.md``.

Everything is vectorised, so a 10-million-row table reads without a Python loop per row (loops
only run on the error path, to find the row at fault): each id column is hashed once
(``pandas.factorize``, i.e. pyarrow's ``dictionary_encode``) and the per-id work runs on the
integer codes, with strings kept in Arrow buffers: an id's first row is where the running
maximum of the codes grows; only the later rows of a repeated id are compared with its first
row (``pyarrow.compute.not_equal`` on gathered blocks); repeated (query, document) pairs are
looked for by a stable sort of one integer key per pair, and hashed only when there are some.
On a table of at least ``PARALLEL_ROWS`` rows each step runs in a thread as soon as the steps it
needs are done (query ids, document ids and scores; the queries' table once the query ids are
hashed, the documents' table, one thread per field, once the document ids are; the duplicate
merge once all ids are); the result, and the error raised when several steps fail, are those of
a sequential run. At 10^7 Marqo-shaped rows the critical path is the product-id hash (2–3 s of
CPU, one thread: Arrow's hash is single-threaded) followed by the documents' table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gcl.errors import DataError
from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, Field, FieldKind, GradedDataset
from gcl.data.table_files import Format, check_columns, detect_format, load_columns  # noqa: F401 - re-exported

__all__ = ["read_table", "dataset_from_frame", "detect_format", "load_columns", "Format", "Duplicates", "FieldSpec"]

Duplicates = Literal["mean", "first", "error"]
FieldSpec = Sequence["str | Field"] | Mapping["str | Field", str] | None


# ---------------------------------------------------------------------------- public API
def read_table(
    path: str | Path,
    *,
    query_col: str,
    doc_id_col: str,
    score_col: str | None,
    query_id_col: str | None = None,
    query_fields: FieldSpec = None,
    doc_fields: FieldSpec = None,
    format: Format | None = None,
    encoding: str = "utf-8",
    duplicates: Duplicates = "mean",
    allow_negative: bool = False,
    strip_queries: bool = True,
    name: str | None = None,
) -> GradedDataset:
    """Read a judgment table (``.csv[.gz|.xz|.bz2]``, ``.tsv``, ``.jsonl``, ``.parquet``).

    Args:
        path: the file; the format comes from its extension unless ``format`` is given.
        query_col: column with the query text (stored as query field ``"query"``).
        doc_id_col: column with the document id (converted to ``str``).
        score_col: column with the graded score; ``None`` gives every judgment score 1.0.
        query_id_col: column with a query id; without it the query id is the query text.
        query_fields: extra query-side columns kept as query fields (first value per query).
        doc_fields: document fields: a list of column names (field name = column name) or a
            mapping ``{field: column}``; a :class:`Field` key or item sets the kind (image).
            Default ``["title"]``.
        encoding: text encoding of CSV/TSV/JSONL files.
        duplicates: what to do with a (query, document) pair judged more than once: ``"mean"``
            averages the scores, ``"first"`` keeps the first row, ``"error"`` raises.
        allow_negative: accept negative scores (rejected by default; see ``docs/data.md``).
        strip_queries: strip surrounding whitespace from query text (and query ids).
        name: dataset name (default: the file name without its extensions).
    """
    path = Path(path)
    fmt = format or detect_format(path)
    q_fields = _field_map(query_fields, default=[])
    d_fields = _field_map(doc_fields, default=["title"])
    needed = [query_col, doc_id_col]
    needed += [c for c in (score_col, query_id_col) if c is not None]
    needed += list(q_fields.values()) + list(d_fields.values())
    frame = load_columns(path, _unique(needed), format=fmt, encoding=encoding)
    return dataset_from_frame(
        frame,
        query_col=query_col,
        doc_id_col=doc_id_col,
        score_col=score_col,
        query_id_col=query_id_col,
        query_fields=q_fields,
        doc_fields=d_fields,
        duplicates=duplicates,
        allow_negative=allow_negative,
        strip_queries=strip_queries,
        name=name or _stem(path),
        source=str(path),
    )


def dataset_from_frame(
    frame: pd.DataFrame,
    *,
    query_col: str,
    doc_id_col: str,
    score_col: str | None,
    query_id_col: str | None = None,
    query_fields: FieldSpec = None,
    doc_fields: FieldSpec = None,
    duplicates: Duplicates = "mean",
    allow_negative: bool = False,
    strip_queries: bool = True,
    name: str = "dataset",
    source: str = "<frame>",
) -> GradedDataset:
    """Build a validated :class:`GradedDataset` from one-judgment-per-row ``frame``.

    Same arguments as :func:`read_table`; ``source`` names the origin in errors. Row numbers in
    errors are positions in ``frame`` (0-based).
    """
    if duplicates not in ("mean", "first", "error"):
        raise ValueError(f"duplicates must be 'mean', 'first' or 'error', not {duplicates!r}")
    frame = frame.reset_index(drop=True)
    q_fields = _field_map(query_fields, default=[])
    d_fields = _field_map(doc_fields, default=["title"])
    needed = [query_col, doc_id_col, *(c for c in (score_col, query_id_col) if c is not None)]
    check_columns(frame.columns, _unique(needed + list(q_fields.values()) + list(d_fields.values())), source)
    if len(frame) == 0:
        raise DataError("the table has no data rows", source=source)
    notes = [f"read {len(frame)} rows from {source}"]

    # ---- the steps and what each needs: ids and scores are independent; a table of documents or
    # queries needs only its own ids, the judgments need all of them. On a large table each step
    # runs in a thread as soon as its inputs are ready (the hashing, gathers and comparisons happen
    # in Arrow and numpy, without the GIL), so the queries' table and the scores are done while
    # the documents' ids (the longest step) are still being hashed. Errors are raised in this
    # order whatever finishes first: those of a sequential run.
    query_cols = {Field("query"): None, **q_fields}

    def query_table(by_text, by_id):
        text, q_codes, q_index = by_text
        if by_id is not None:
            _, q_codes, q_index = by_id
        return _entity_table(q_codes, q_index, frame, query_cols, "query", source=source, first_values={"query": text},
                             same_as_id=("query",) if query_id_col is None else ())

    def judgments_table(by_text, by_id, docs, score):
        qid, q_codes, _ = by_id if by_id is not None else by_text
        did, d_codes, d_index = docs
        score = pd.Series(np.ones(len(frame)), index=frame.index) if score is None else score
        judgments = pd.DataFrame({QUERY_ID: qid, DOC_ID: did, SCORE: score.astype(float)})
        pair_key = q_codes * np.int64(len(d_index)) + d_codes  # one int64 per (query, document) pair
        return _merge_duplicates(judgments, pair_key, duplicates, source, doc_id_col)

    done = _run_steps(len(frame), [
        (lambda: _text_ids(frame[query_col], QUERY_ID, strip=strip_queries, empty="empty query text",
                           source=source, column=query_col), ()),
        (lambda: None if query_id_col is None else _text_ids(
            frame[query_id_col], QUERY_ID, strip=strip_queries, empty="empty query id", source=source,
            column=query_id_col), ()),
        (lambda: _text_ids(frame[doc_id_col], DOC_ID, strip=True, empty="empty document id", source=source,
                           column=doc_id_col), ()),
        (lambda: None if score_col is None else _scores(frame[score_col], source, score_col, allow_negative), ()),
        (lambda docs: _entity_table(docs[1], docs[2], frame, d_fields, "document", source=source), (2,)),
        (query_table, (0, 1)),
        (judgments_table, (0, 1, 2, 3)),
    ])
    (documents, doc_note), (queries, query_note), (judgments, dup_note) = done[4:]
    if score_col is None:
        notes.append("no score column: every judgment has score 1.0")
    notes += [n for n in (doc_note, query_note, dup_note) if n]

    ds = GradedDataset(
        queries=queries,
        documents=documents,
        judgments=judgments,
        query_fields=tuple(query_cols),
        doc_fields=tuple(d_fields),
        name=name,
        notes=notes,
    )
    # The tables are built from the judgments' own factorised ids, so the id invariants (unique,
    # known, no repeated pair, every query judged) hold by construction; the rest is checked.
    return ds.validate(source=source, check_ids=False)


# ---------------------------------------------------------------------------- threads
PARALLEL_ROWS = 1 << 17  # tables with at least this many rows run independent steps in threads


def _in_threads(n_rows: int, steps: Sequence) -> list:
    """``[step() for step in steps]``, in threads when ``n_rows >= PARALLEL_ROWS`` and the machine
    has more than one core (see :func:`_run_steps`)."""
    return _run_steps(n_rows, [(step, ()) for step in steps])


def _run_steps(n_rows: int, steps: Sequence[tuple]) -> list:
    """Run ``steps``, each ``(fn, deps)``: ``fn`` is called with the results of the earlier steps
    whose positions ``deps`` lists. Returns every step's result, in order.

    Below ``PARALLEL_ROWS`` rows, or on one core, the steps run one after the other. Otherwise each
    step gets its own thread and starts once its inputs are ready, so nothing waits for a step it
    does not need (one thread per step: a step waiting for its inputs never holds a thread another
    step needs). Either way, when steps fail the first failing step in order raises: the error of
    a sequential run (a step whose input failed fails with that input's error, which comes earlier).
    """
    if any(d >= i for i, (_, deps) in enumerate(steps) for d in deps):
        raise ValueError("a step can only depend on earlier steps")
    if n_rows < PARALLEL_ROWS or (os.cpu_count() or 1) < 2 or len(steps) < 2:
        results: list = []
        for fn, deps in steps:
            results.append(fn(*(results[d] for d in deps)))
        return results
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="gcl-read") as pool:
        futures: list = []
        for fn, deps in steps:
            inputs = [futures[d] for d in deps]
            futures.append(pool.submit(lambda fn=fn, inputs=inputs: fn(*(f.result() for f in inputs))))
        return [f.result() for f in futures]


# ---------------------------------------------------------------------------- conversions
def _field_map(spec: FieldSpec, *, default: Sequence[str]) -> dict[Field, str]:
    """Normalise a field spec to ``{Field: column}``."""
    spec = default if spec is None else spec
    items = spec.items() if isinstance(spec, Mapping) else ((f, None) for f in spec)
    out: dict[Field, str] = {}
    for key, column in items:
        field = key if isinstance(key, Field) else Field(str(key))
        out[field] = column if column is not None else field.name
    return out


def _as_text(series: pd.Series, source: str = "<frame>", column: str | None = None) -> pd.Series:
    """Values as ``str`` with missing values as ``""`` (vectorised; ``bytes`` are decoded as UTF-8).

    Bytes that are not UTF-8 (a Parquet binary column) raise :class:`DataError` naming the first
    such row and ``column``.
    """
    try:
        return series.astype(str).fillna("")
    except UnicodeDecodeError as exc:
        row = next((i for i, v in enumerate(series) if isinstance(v, (bytes, bytearray)) and not _is_utf8(v)), 0)
        raise DataError(f"value is bytes that are not UTF-8 text ({exc.reason} at byte {exc.start})",
                        source=source, row=row, field=column if column is not None else series.name) from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _as_image(series: pd.Series) -> pd.Series:
    """Image values: a path (``str``) or ``bytes``; missing (``None``/NaN/``""``) -> ``None``."""
    values = series.astype(object)
    missing = values.isna().to_numpy() | (values == "").to_numpy()
    values = values.where(~missing, None)
    return values


def _parse_floats(raw: pd.Series) -> pd.Series:
    """Text to float64: pyarrow's cast when every value parses, else pandas' (NaN where not a number)."""
    if isinstance(raw.dtype, pd.StringDtype) and raw.dtype.storage == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            values = pc.cast(pa.array(raw.array), pa.float64()).to_numpy(zero_copy_only=False)
            return pd.Series(values, index=raw.index)
        except pa.ArrowInvalid:  # some value is not a number: pandas marks which (error path)
            pass
    return pd.to_numeric(raw, errors="coerce")


def _scores(raw: pd.Series, source: str, column: str, allow_negative: bool) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw):
        raise DataError("scores are booleans, not numbers", source=source, row=0, field=column)
    numeric = raw if pd.api.types.is_numeric_dtype(raw) else _parse_floats(raw)
    numeric = numeric.astype(float)
    nan = numeric.isna().to_numpy()
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        value = raw.iloc[i]
        blank = value is None or (isinstance(value, str) and value.strip() == "")
        if not blank and not isinstance(value, str) and pd.isna(value):
            blank = True  # a null in JSONL/Parquet
        what = "missing score" if blank else f"score {value!r} is not a number"
        raise DataError(f"{what} ({int(nan.sum())} such rows)", source=source, row=i, field=column)
    inf = ~np.isfinite(numeric.to_numpy())
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise DataError(f"score {raw.iloc[i]!r} is not finite", source=source, row=i, field=column)
    if not allow_negative:
        neg = (numeric < 0).to_numpy()
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise DataError(
                f"negative score {float(numeric.iloc[i])} ({int(neg.sum())} such rows); if negative scores are "
                "meaningful, allow them with --allow-negative (config data.allow_negative, Python allow_negative=True)",
                source=source,
                row=i,
                field=column,
            )
    return numeric


def _factorize(ids: pd.Series, name: str) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of ``ids`` (numbered in order of first appearance) and the distinct ids."""
    codes, uniques = pd.factorize(ids)
    return codes.astype(np.int64, copy=False), pd.Index(uniques, name=name)


def _text_ids(
    raw: pd.Series, name: str, *, strip: bool, empty: str, source: str, column: str
) -> tuple[pd.Series, np.ndarray, pd.Index]:
    """Text values as (per-row values, codes, distinct values named ``name``).

    Surrounding whitespace is stripped (when ``strip``) on the distinct values, and the rows
    are rebuilt only when stripping changes one (values equal after stripping become one). A
    value that is empty or whitespace is an error (``empty``), naming its first row.
    """
    values = _as_text(raw, source, column)
    codes, uniques = _factorize(values, name)
    stripped = uniques.str.strip()
    blank = np.asarray(stripped == "", dtype=bool)
    if blank.any():
        _fail_where(blank[codes], empty, source, column)
    if strip and not bool((stripped == uniques).all()):
        merged, distinct = pd.factorize(stripped)  # in order of first appearance, as before
        codes = merged.astype(np.int64, copy=False)[codes]
        uniques = pd.Index(distinct, name=name)
        values = pd.Series(uniques.take(codes).array, index=values.index)
    return values, codes, uniques


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """The row of each code's first occurrence, in code order.

    Codes numbered in order of first appearance make row ``i`` a first occurrence exactly when
    ``codes[i]`` exceeds every earlier code, i.e. where the running maximum grows.
    """
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    top = np.maximum.accumulate(codes)
    new = np.empty(len(codes), dtype=bool)
    new[0] = True
    np.greater(top[1:], top[:-1], out=new[1:])
    return np.flatnonzero(new)


def _later_rows(first: np.ndarray, n: int) -> np.ndarray:
    """The rows that are not their id's first row (``first`` as from :func:`_first_rows`)."""
    later = np.ones(n, dtype=bool)
    later[first] = False
    return np.flatnonzero(later)


def _arrow_text(values: pd.Series):
    """A text column (as from :func:`_as_text`: ``str``, no missing value) as one pyarrow array,
    or ``None`` when its storage is not pyarrow."""
    from gcl.data.arrow_text import arrow_strings, one_array

    if not (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"):
        return None
    arr = arrow_strings(values)
    if arr is None or arr.null_count:
        return None
    return arr.chunk(0) if getattr(arr, "num_chunks", 0) == 1 else one_array(arr)


def _one_chunk_text(values: pd.Series) -> pd.Series:
    """A text column with its Arrow chunks combined once (its gathers then read one array)."""
    arr = _arrow_text(values)
    return values if arr is None else pd.Series(pd.array(arr, dtype=values.dtype), index=values.index)


def _differs_from_first(
    values: pd.Series, rows: np.ndarray, first_of_rows: np.ndarray, image: bool, block: int = 1 << 20
) -> np.ndarray:
    """Whether ``values[rows[k]] != values[first_of_rows[k]]`` for each ``k`` (missing = ``""`` = ``None``).

    ``rows`` are the rows to check (the later rows of repeated ids) and ``first_of_rows`` the
    first row of each one's id. Strings (text, or image paths, where missing = ``""``) are
    compared in Arrow, ``block`` rows at a time (the two gathered copies stay small).
    """
    if isinstance(values.dtype, pd.StringDtype):
        values = values.fillna("")
        arr = _arrow_text(values)
        if arr is not None:
            import pyarrow as pa
            import pyarrow.compute as pc

            out = np.empty(len(rows), dtype=bool)
            for start in range(0, len(rows), block):
                here, there = pa.array(rows[start:start + block]), pa.array(first_of_rows[start:start + block])
                differ = pc.not_equal(arr.take(here), arr.take(there))
                out[start:start + len(here)] = differ.to_numpy(zero_copy_only=False)
            return out
    a = (_as_image(values) if image else values).to_numpy(dtype=object)
    here, there = a[rows], a[first_of_rows]
    return (here != there) & ~(pd.isna(here) & pd.isna(there))


def _first_values(values: pd.Series, first: np.ndarray, index: pd.Index, image: bool) -> pd.Series:
    """``values`` at rows ``first``, indexed by ``index`` (text gathered in Arrow; dtype kept)."""
    arr = None if image else _arrow_text(values)
    if arr is not None:
        import pyarrow as pa

        return pd.Series(pd.array(arr.take(pa.array(first)), dtype=values.dtype), index=index)
    kept = _as_image(values.iloc[first]) if image else values.iloc[first]
    return pd.Series(kept.array, index=index, dtype=kept.dtype)  # keeps object dtype


def _entity_table(
    codes: np.ndarray,
    index: pd.Index,
    frame: pd.DataFrame,
    fields: Mapping[Field, str | None],
    label: str,
    first_values: Mapping[str, pd.Series] | None = None,
    same_as_id: Sequence[str] = (),
    source: str = "<frame>",
) -> tuple[pd.DataFrame, str | None]:
    """One row per id (its first row); count ids whose field values differ between rows.

    ``codes``/``index``: the ids of ``frame``'s rows as from :func:`_factorize`. Only the later
    rows of repeated ids are compared with their id's first row (a first row cannot differ).
    Fields named in ``same_as_id`` hold the id itself (the query text when it is the query id):
    their column is ``index``, with nothing to compare.
    """
    first = _first_rows(codes)
    later = _later_rows(first, len(codes))
    first_of_later = first[codes[later]]

    def one_field(field: Field, column: str | None) -> tuple[pd.Series, np.ndarray | None]:
        """The field's first values and, for the later rows, whether they differ from them."""
        raw = first_values[field.name] if first_values and field.name in first_values else frame[column]
        image = field.kind == FieldKind.IMAGE
        values = raw if image else _as_text(raw, source, column if column is not None else field.name)
        if field.name in same_as_id:  # a field equal to the id: its first values are the ids
            return pd.Series(index.array, index=index, dtype=values.dtype), None
        if not image:
            values = _one_chunk_text(values)
        differ = _differs_from_first(values, later, first_of_later, image) if len(later) else None
        return _first_values(values, first, index, image), differ

    done = _in_threads(len(codes), [lambda f=f, c=c: one_field(f, c) for f, c in fields.items()])
    columns = {field.name: values for field, (values, _) in zip(fields, done)}
    differs = np.zeros(len(later), dtype=bool)
    for _, differ in done:
        if differ is not None:
            differs |= differ
    table = pd.DataFrame(columns, index=index)
    note = None
    if differs.any():
        n_ids = len(np.unique(codes[later[differs]]))
        note = (
            f"{n_ids} {label} ids have conflicting field values across rows "
            f"({int(differs.sum())} rows differ from the first); the first row's values were kept"
        )
    return table, note


def _merge_duplicates(
    judgments: pd.DataFrame, pair_key: np.ndarray, duplicates: Duplicates, source: str, doc_id_col: str
) -> tuple[pd.DataFrame, str | None]:
    """Apply the ``duplicates`` policy; ``pair_key`` is one integer per (query, document) pair."""
    if not _has_repeats(pair_key):
        return judgments, None
    extra = pd.Series(pair_key).duplicated().to_numpy()
    n_extra = int(extra.sum())
    if duplicates == "error":
        i = int(np.flatnonzero(extra)[0])
        raise DataError(
            f"(query, document) pair ({judgments[QUERY_ID].iloc[i]!r}, {judgments[DOC_ID].iloc[i]!r}) "
            f"judged more than once ({n_extra} repeated rows); pass duplicates='mean' or 'first'",
            source=source,
            row=i,
            field=doc_id_col,
        )
    if duplicates == "first":
        kept = judgments.loc[~extra].reset_index(drop=True)
        return kept, (f"duplicates='first': {n_extra} repeated (query, document) rows dropped, first kept"
                      f"{_duplicate_examples(judgments, extra)}")
    pairs, _ = pd.factorize(pair_key)  # numbered in order of first appearance
    merged = judgments.iloc[_first_rows(pairs)].reset_index(drop=True)
    merged[SCORE] = judgments[SCORE].groupby(pairs, sort=False).mean().to_numpy()
    n_pairs = len(np.unique(pair_key[extra]))
    note = (
        f"duplicates='mean': {n_extra} repeated (query, document) rows merged into "
        f"{n_pairs} judgments by averaging their scores{_duplicate_examples(judgments, extra)}"
    )
    return merged[[QUERY_ID, DOC_ID, SCORE]], note


def _has_repeats(keys: np.ndarray) -> bool:
    """Whether any value of ``keys`` occurs twice: neighbours equal after a sort.

    A stable sort (timsort) runs in about linear time on the long sorted runs that pair keys
    have when a table lists each query's judgments together: 0.2 s for 10^7 keys, against 2 s
    for a hash pass (``pandas.Series.duplicated``), which only runs when there are repeats.
    """
    ordered = np.sort(keys, kind="stable")
    return bool((ordered[1:] == ordered[:-1]).any())


def _duplicate_examples(judgments: pd.DataFrame, extra: np.ndarray, n: int = 3) -> str:
    """``"; e.g. ('red shirt', 'd2') scores [1.0, 2.0]"`` for the first ``n`` repeated pairs."""
    pairs = judgments.loc[extra, [QUERY_ID, DOC_ID]].drop_duplicates().head(n)
    rows = judgments.merge(pairs, on=[QUERY_ID, DOC_ID])  # only the rows of the shown pairs
    shown = [f"({q!r}, {d!r}) scores {[float(x) for x in g[SCORE]]}"
             for (q, d), g in rows.groupby([QUERY_ID, DOC_ID], sort=False)]
    return "; e.g. " + ", ".join(shown)


# ---------------------------------------------------------------------------- errors


def _fail_where(mask: pd.Series, message: str, source: str, column: str) -> None:
    bad = np.asarray(mask, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{message} ({int(bad.sum())} such rows)", source=source, row=i, field=column)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _stem(path: Path) -> str:
    name = path.name
    while Path(name).suffix:
        name = Path(name).stem
    return name
