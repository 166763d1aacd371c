"""Bad input raises DataError naming the file, the 0-based data row and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gcl.data import DataError, read_table
from gcl.data.marqo import read_corpus, read_ground_truth, read_marqo_split, write_marqo_layout

HEADER = "query,doc,score,title\n"
GOOD = ["red shirt,d1,3,Red Shirt", "red shirt,d2,1,Blue Mug", "oak table,d3,2,Oak Table"]
MAPPING = dict(query_col="query", doc_id_col="doc", score_col="score")


def _csv(tmp_path: Path, lines: list[str], name: str = "j.csv", header: str = HEADER, encoding="utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes((header + "".join(line + "\n" for line in lines)).encode(encoding))
    return path


def _raises(path: Path, *, row=None, field=None, match=None, **kwargs) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        read_table(path, **{**MAPPING, **kwargs})
    err = info.value
    assert err.source == str(path)
    assert str(path) in str(err)
    assert err.row == row
    assert err.field == field
    return err


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.csv", match="file not found")


def test_missing_columns_lists_the_present_ones(tmp_path):
    path = _csv(tmp_path, GOOD)
    err = _raises(path, field="relevance", match="missing column", score_col="relevance")
    assert "['query', 'doc', 'score', 'title']" in str(err)


def test_missing_columns_parquet_and_jsonl(tmp_path):
    frame = pd.DataFrame({"query": ["a"], "doc": ["d"], "title": ["t"]})
    frame.to_parquet(tmp_path / "j.parquet")
    frame.to_json(tmp_path / "j.jsonl", orient="records", lines=True)
    for name in ("j.parquet", "j.jsonl"):
        err = _raises(tmp_path / name, field="score", match="missing column")
        assert "'title'" in str(err)


@pytest.mark.parametrize("column", ["title", "doc", "query"])
def test_parquet_bytes_that_are_not_utf8_name_the_row_and_column(tmp_path, column):
    """A Parquet binary column is decoded as UTF-8; bytes that are not UTF-8 are a DataError
    naming the first bad row and the column (it was a raw UnicodeDecodeError)."""
    frame = pd.DataFrame({"query": [b"red shirt", b"oak"], "doc": [b"d1", b"d2"], "score": [3.0, 2.0],
                          "title": [b"Red", b"Oak"]})
    frame.loc[1, column] = b"\xff\xfe caf\xe9"
    frame.to_parquet(tmp_path / "j.parquet")
    _raises(tmp_path / "j.parquet", row=1, field=column, match="bytes that are not UTF-8")
    frame.loc[1, column] = "café".encode()  # valid UTF-8 bytes are text
    frame.to_parquet(tmp_path / "ok.parquet")
    assert len(read_table(tmp_path / "ok.parquet", **MAPPING).judgments) == 2


def test_wrong_encoding_suggests_latin1_and_names_the_row(tmp_path):
    path = _csv(tmp_path, [*GOOD, "café chair,d4,2,Chaise café"], encoding="latin-1")
    err = _raises(path, row=3, match='encoding="latin-1"')
    assert "utf-8" in str(err)
    assert read_table(path, **MAPPING, encoding="latin-1").queries.index[-1] == "café chair"


def test_wrong_encoding_in_a_compressed_file(tmp_path):
    import lzma

    raw = (HEADER + "".join(line + "\n" for line in [*GOOD, "café,d4,2,x"])).encode("latin-1")
    path = tmp_path / "j.csv.xz"
    path.write_bytes(lzma.compress(raw))
    _raises(path, row=3, match="latin-1")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("high", "score 'high' is not a number"),
        ("", "missing score"),
        ("nan", "is not a number"),
        ("inf", "not finite"),
    ],
)
def test_bad_scores(tmp_path, value, match):
    path = _csv(tmp_path, [*GOOD, f"mug,d4,{value},Mug"])
    _raises(path, row=3, field="score", match=match)


def test_null_score_in_jsonl(tmp_path):
    path = tmp_path / "j.jsonl"
    rows = [{"query": "a", "doc": "d1", "score": 1}, {"query": "b", "doc": "d2", "score": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _raises(path, row=1, field="score", match="missing score", doc_fields=[])


def test_negative_score(tmp_path):
    path = _csv(tmp_path, [*GOOD, "mug,d4,-1,Mug"])
    _raises(path, row=3, field="score", match="negative score")


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_text(tmp_path, query):
    path = _csv(tmp_path, [GOOD[0], f"{query},d2,1,Blue Mug"])
    _raises(path, row=1, field="query", match="empty query text")


def test_empty_query_id_and_doc_id(tmp_path):
    path = _csv(tmp_path, ["a,d1,1,t,q1", "b,d2,1,t,"], header="query,doc,score,title,qid\n")
    _raises(path, row=1, field="qid", match="empty query id", query_id_col="qid")
    path = _csv(tmp_path, ["a,d1,1,t", "b,,1,t"], name="k.csv")
    _raises(path, row=1, field="doc", match="empty document id")


def test_duplicate_judgments_error_names_the_repeat(tmp_path):
    path = _csv(tmp_path, [*GOOD, "red shirt,d2,2,Blue Mug"])
    _raises(path, row=3, field="doc", match="judged more than once", duplicates="error")
    with pytest.raises(ValueError, match="duplicates must be"):
        read_table(path, **MAPPING, duplicates="max")


@pytest.mark.parametrize(("content", "match"), [(b"", "file is empty"), (HEADER.encode(), "no data rows")])
def test_empty_files(tmp_path, content, match):
    path = tmp_path / "j.csv"
    path.write_bytes(content)
    _raises(path, match=match)


def test_empty_jsonl(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("")
    _raises(path, match="empty")


def test_malformed_csv_row(tmp_path):
    path = _csv(tmp_path, [*GOOD, "mug,d4,1,Mug,extra,fields"])
    _raises(path, row=3, match="malformed CSV")


def test_malformed_jsonl_row(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"query": "a", "doc": "d1", "score": 1}\n{"query": "b", "doc": \n')
    _raises(path, row=1, match="malformed JSON")


# ---------------------------------------------------------------------------- Marqo layout
def _split_csv(tmp_path: Path) -> Path:
    path = tmp_path / "query_0_product_id_0.csv"
    pd.DataFrame({"query": ["a", "a"], "product_id": ["x", "y"], "score_linear": [2.0, 1.0]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{}", "corpus is empty"),
        ("[1, 2]", "expected an object"),
        ('{"x": {"title": "t"}, "y": 3}', "'y' is not an object"),
        ('{"x": {"name": "t"}, "y": {"name": "u"}}', r"no document has field 'title'; fields present: \['name'\]"),
        ('{"x": {"title": "t"', "invalid JSON"),
    ],
)
def test_bad_corpus(tmp_path, content, match):
    path = tmp_path / "corpus_1.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        read_marqo_split(_split_csv(tmp_path), path, doc_fields=("title",))
    assert info.value.source == str(path)


def test_judged_document_missing_from_corpus(tmp_path):
    path = tmp_path / "corpus_1.json"
    path.write_text('{"x": {"title": "t"}}')
    with pytest.raises(DataError, match="unknown document 'y'") as info:
        read_marqo_split(_split_csv(tmp_path), path, doc_fields=("title",))
    assert info.value.row == 1 and info.value.field == "doc_id"
    assert str(path) in str(info.value)


def test_missing_corpus_file(tmp_path):
    with pytest.raises(DataError, match="corpus file not found"):
        read_corpus(tmp_path / "corpus_1.json")


@pytest.mark.parametrize(
    ("content", "match", "row"),
    [
        ("[]", "expected an object", None),
        ('{"q_": {"d": 1.5}}', "not an integer", 0),
        ('{"a": {}, "q_": 3}', "expected", 1),
    ],
)
def test_bad_ground_truth(tmp_path, content, match, row):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        read_ground_truth(path)
    assert info.value.row == row


def test_image_bytes_cannot_be_written_to_the_json_layout(tiny_dataset, tmp_path):
    tiny_dataset.documents["image_local"] = [b"\x89PNG"] * len(tiny_dataset.documents)
    with pytest.raises(DataError, match="image bytes cannot be written") as info:
        write_marqo_layout(tmp_path, {}, {"corpus_1": tiny_dataset})
    assert info.value.row == 0 and info.value.field == "image_local"


def test_short_csv_row(tmp_path):
    path = _csv(tmp_path, [*GOOD, "mug,d4"])
    _raises(path, row=3, match="the row has 2 fields, the header has 4")
