"""The Arrow-side reader gives exactly what the reader before it gave (``reader_before_arrow``).

Generated tables mix the hard cases: repeated (query, document) pairs with equal and with
different scores, documents whose fields conflict between rows, unicode and unicode whitespace,
empty strings and missing values, numeric-looking ids (``"007"``, ``"7"``, ``"7.0"``, Parquet
integers), queries that differ only by surrounding whitespace. Each is read by both readers in
CSV, Parquet and JSONL; the tables (values, dtypes, index, row order), the fields, the notes and
any error (message, row, column) must be identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import reader_before_arrow as before

import gcl.data.readers as readers
from gcl.data import DataError, Field, FieldKind, dataset_from_frame, read_table
from gcl.data.readers import _differs_from_first, _has_repeats
from gcl.data.table_files import load_columns

QUERIES = ["red shirt", " red shirt", "red shirt ", "käse", "日本 茶", "\u00a0mug", "mug", "Straße",
           "007", "7", "7.0"]
DOCS = ["d1", " d1", "007", "7", "7.0", "1e3", "ü", "NA", "B00134258", "d1\u3000", "d\u00e9", "de\u0301"]
TITLES = ["Red Shirt", "", "NA", "日本", 'say "hi", ok', "multi\nline", "a,b", "  padded  ", "d\u00e9"]
IMAGES = ["", "a.jpg", "b.jpg", "ü.png"]
SCORES = [1.0, 2.5, 0.0, 3.0, 0.125]


@pytest.fixture(autouse=True, params=["serial", "threads"])
def reader_threads(request, monkeypatch):
    """Every case twice: the small-table path (steps one after another) and the large-table path
    (each step in a thread once its inputs are ready, :func:`gcl.data.readers._run_steps`), forced on by a zero
    row threshold and two workers whatever the machine has."""
    if request.param == "threads":
        monkeypatch.setattr(readers, "PARALLEL_ROWS", 0)
        monkeypatch.setattr(readers.os, "cpu_count", lambda: 2)
    return request.param


def _rows(seed: int, *, blank_ids: bool = False) -> pd.DataFrame:
    """A table of judgments drawn with replacement from small pools (so pairs repeat)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    pool = lambda values, k: list(rng.choice(np.array(values, dtype=object), size=k))  # noqa: E731
    docs = pool(DOCS + ([""] if blank_ids else []), n)
    queries = pool(QUERIES, n)
    return pd.DataFrame({
        "q": queries,
        "qid": [f"q{QUERIES.index(q) % 5}" for q in queries],  # several texts per query id
        "lang": pool(["en", "de", ""], n),
        "doc": docs,
        "title": pool(TITLES, n),
        "img": pool(IMAGES, n),
        "rel": pool(SCORES, n),
    })


def _write(frame: pd.DataFrame, path, fmt: str):
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)


def _outcome(read):
    try:
        return read()
    except DataError as exc:
        return ("error", str(exc), exc.row, exc.field)


def _assert_same(new, old) -> None:
    if isinstance(old, tuple) or isinstance(new, tuple):
        assert new == old
        return
    for table in ("queries", "documents", "judgments"):
        pd.testing.assert_frame_equal(getattr(new, table), getattr(old, table), check_exact=True)
    assert (new.query_fields, new.doc_fields, new.name, new.notes) == (
        old.query_fields, old.doc_fields, old.name, old.notes)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
@pytest.mark.parametrize("duplicates", ["mean", "first", "error"])
@pytest.mark.parametrize("seed", range(4))
def test_read_table_equals_the_reader_before(tmp_path, fmt, duplicates, seed):
    path = tmp_path / f"t.{fmt}"
    _write(_rows(seed, blank_ids=seed == 3), path, fmt)
    variants = [
        dict(doc_fields=["title", Field("img", FieldKind.IMAGE)]),
        dict(query_id_col="qid", query_fields=["lang"], doc_fields={"name": "title", "image": "img"}),
        dict(strip_queries=False, doc_fields=["title"]),
    ]
    for kwargs in variants:
        kwargs = dict(query_col="q", doc_id_col="doc", score_col="rel", duplicates=duplicates, **kwargs)
        new = _outcome(lambda: read_table(path, **kwargs))
        old = _outcome(lambda: before.read_table(path, **kwargs))
        _assert_same(new, old)
    if duplicates != "error" and seed != 3:  # the cases above meet repeated pairs and conflicts
        notes = " ".join(read_table(path, query_col="q", doc_id_col="doc", score_col="rel",
                                    duplicates=duplicates).notes)
        assert "repeated (query, document) rows" in notes and "document ids have conflicting" in notes


@pytest.mark.parametrize("seed", range(3))
def test_frames_of_python_objects_and_numbers(seed):
    """Frames handed to ``dataset_from_frame`` directly: integer and float ids, ``None`` titles."""
    frame = _rows(seed)
    rng = np.random.default_rng(seed)
    frame["doc"] = rng.integers(0, 40, len(frame))  # numeric ids: compared as their str()
    frame["title"] = frame["title"].astype(object).where(rng.random(len(frame)) > 0.2, None)
    frame["score"] = frame["rel"].astype(str)  # scores given as text
    for doc_col in ("doc", "title"):
        kwargs = dict(query_col="q", doc_id_col=doc_col, score_col="score", doc_fields=["title", "img"])
        new = _outcome(lambda: dataset_from_frame(frame, **kwargs))
        old = _outcome(lambda: before.dataset_from_frame(frame, **kwargs))
        _assert_same(new, old)


@pytest.mark.parametrize("broken", [("q", "doc", "rel"), ("doc", "rel"), ("q", "rel"), ("rel",), ("doc",)])
def test_several_bad_columns_raise_the_first_error_in_column_order(tmp_path, broken):
    """Steps that run in threads still fail as one after another would: with a blank query, a
    blank document id and a score that is not a number in different rows, the error is the
    first in the order query, document id, score (each column's own first bad row)."""
    frame = _rows(7)
    if "q" in broken:
        frame.loc[5, "q"] = "   "
    if "doc" in broken:
        frame.loc[3, "doc"] = ""
    if "rel" in broken:
        frame["rel"] = frame["rel"].astype(object)
        frame.loc[1, "rel"] = "high"
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    kwargs = dict(query_col="q", doc_id_col="doc", score_col="rel")
    new, old = _outcome(lambda: read_table(path, **kwargs)), _outcome(lambda: before.read_table(path, **kwargs))
    _assert_same(new, old)
    assert new[0] == "error"
    assert new[2:] == {"q": (5, "q"), "doc": (3, "doc"), "rel": (1, "rel")}[broken[0]]


def test_csv_columns_reach_the_reader_as_arrow_strings(tmp_path):
    """The fast paths are the ones exercised: the CSV frame's columns are pyarrow-backed ``str``."""
    path = tmp_path / "t.csv"
    _write(_rows(0), path, "csv")
    frame = load_columns(path, ["q", "doc", "title"], format="csv")
    assert all(isinstance(frame[c].dtype, pd.StringDtype) and frame[c].dtype.storage == "pyarrow" for c in frame)


@pytest.mark.parametrize(("image", "dtype"), [(False, "str"), (True, object), (True, "str")])
def test_differs_from_first_equals_a_loop(image, dtype):
    rng = np.random.default_rng(7)
    pool = np.array(["a", "b", "", "ü", None], dtype=object)
    values = pd.Series(rng.choice(pool, 500), dtype=dtype)
    if not image:
        values = values.fillna("")
    rows = np.sort(rng.choice(500, 200, replace=False))
    first = rng.integers(0, 500, 200)
    got = _differs_from_first(values, rows, first, image, block=7)  # many blocks, a partial last one
    norm = (lambda v: None if pd.isna(v) or v == "" else v) if image else (lambda v: v)
    want = [norm(values[r]) != norm(values[f]) for r, f in zip(rows, first)]
    assert got.tolist() == want


def test_has_repeats_equals_a_set():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 50, 1000):
        for high in (3, 10**9):
            keys = rng.integers(0, high, n).astype(np.int64)
            assert _has_repeats(keys) == (len(set(keys.tolist())) < n)

