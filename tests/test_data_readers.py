"""The generic table reader and the Home Depot reader (real data via the ``data_dir`` fixture)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from gcl.data import DataError, Field, FieldKind, read_table
from gcl.data.homedepot import default_data_dir, read_homedepot
from gcl.data.readers import detect_format

ROWS = [
    {"qid": "q1", "q": "red shirt", "doc": 10, "title": "Red Shirt", "rel": 3.0},
    {"qid": "q1", "q": "red shirt", "doc": 11, "title": "Blue Shirt", "rel": 2.0},
    {"qid": "q2", "q": "oak table", "doc": 10, "title": "Red Shirt", "rel": 1.0},
    {"qid": "q2", "q": "oak table", "doc": 12, "title": "NA", "rel": 2.5},
]
MAPPING = dict(query_col="q", doc_id_col="doc", score_col="rel")


def _write(tmp_path: Path, name: str, rows=ROWS) -> Path:
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    elif ".jsonl" in name:
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False, sep="\t" if ".tsv" in name else ",")
    return path


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.csv.xz", "t.tsv", "t.jsonl", "t.parquet"])
def test_every_format_reads_the_same(tmp_path, name):
    ds = read_table(_write(tmp_path, name), **MAPPING)
    assert list(ds.queries.index) == ["red shirt", "oak table"]
    assert list(ds.documents.index) == ["10", "11", "12"]
    assert ds.documents.loc["12", "title"] == "NA"  # text, not a missing value
    assert ds.judgments["score"].tolist() == [3.0, 2.0, 1.0, 2.5]
    assert ds.judgments["doc_id"].tolist() == ["10", "11", "10", "12"]
    assert ds.name == "t"


def test_query_id_column_and_extra_fields(tmp_path):
    rows = [dict(r, img=f"{r['doc']}.jpg") for r in ROWS]
    ds = read_table(
        _write(tmp_path, "t.csv", rows),
        **MAPPING,
        query_id_col="qid",
        doc_fields={"name": "title", Field("image", FieldKind.IMAGE): "img"},
    )
    assert list(ds.queries.index) == ["q1", "q2"]
    assert ds.queries.loc["q2", "query"] == "oak table"
    assert [f.name for f in ds.doc_fields] == ["name", "image"]
    assert ds.doc_fields[1].kind == FieldKind.IMAGE
    assert ds.documents.loc["11", "image"] == "11.jpg"


def test_queries_are_stripped_and_merged(tmp_path):
    rows = [dict(ROWS[0], q="  red shirt "), ROWS[1]]
    ds = read_table(_write(tmp_path, "t.csv", rows), **MAPPING)
    assert list(ds.queries.index) == ["red shirt"]


def test_conflicting_document_fields_keep_first_and_are_counted(tmp_path):
    rows = [*ROWS, {"qid": "q3", "q": "mug", "doc": 11, "title": "Blue Shirt XL", "rel": 1.0}]
    ds = read_table(_write(tmp_path, "t.csv", rows), **MAPPING)
    assert ds.documents.loc["11", "title"] == "Blue Shirt"
    assert any("1 document ids have conflicting" in n and "1 rows" in n for n in ds.notes)


@pytest.mark.parametrize(
    ("mode", "expected_scores", "note"),
    [
        ("mean", [2.5, 2.0, 1.0, 2.5], "2 repeated (query, document) rows merged into 1"),
        ("first", [3.0, 2.0, 1.0, 2.5], "2 repeated"),
    ],
)
def test_duplicate_judgments(tmp_path, mode, expected_scores, note):
    rows = [*ROWS, dict(ROWS[0], rel=2.0), dict(ROWS[0], rel=2.5)]
    ds = read_table(_write(tmp_path, "t.csv", rows), **MAPPING, duplicates=mode)
    assert ds.judgments["score"].tolist() == expected_scores
    assert any(note in n for n in ds.notes)


def test_duplicate_judgments_error(tmp_path):
    rows = [*ROWS, dict(ROWS[2], rel=2.0)]
    with pytest.raises(DataError) as info:
        read_table(_write(tmp_path, "t.csv", rows), **MAPPING, duplicates="error")
    assert info.value.row == 4 and info.value.field == "doc"


def test_negative_scores_need_opt_in(tmp_path):
    rows = [*ROWS, dict(ROWS[0], doc=99, rel=-1.0)]
    path = _write(tmp_path, "t.csv", rows)
    with pytest.raises(DataError, match="allow_negative=True") as info:
        read_table(path, **MAPPING)
    assert info.value.row == 4
    assert read_table(path, **MAPPING, allow_negative=True).judgments["score"].min() == -1.0


def test_no_score_column_gives_constant_scores(tmp_path):
    ds = read_table(_write(tmp_path, "t.csv"), query_col="q", doc_id_col="doc", score_col=None)
    assert set(ds.judgments["score"]) == {1.0}
    assert any("no score column" in n for n in ds.notes)


def test_format_detection(tmp_path):
    assert detect_format("a/b.csv.xz") == "csv"
    assert detect_format("b.TSV.gz") == "tsv"
    assert detect_format("b.jsonl") == "jsonl"
    assert detect_format("b.parquet") == "parquet"
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format("b.xlsx")
    path = tmp_path / "data.txt"
    path.write_text(json.dumps(dict(ROWS[0])) + "\n")
    assert len(read_table(path, **MAPPING, format="jsonl").judgments) == 1


# ---------------------------------------------------------------------------- Home Depot
def test_homedepot_counts_match_the_readme(homedepot):
    assert len(homedepot.judgments) == 74_067
    assert len(homedepot.queries) == 11_795  # stripping merges no query
    assert len(homedepot.documents) == 54_667
    assert homedepot.judgments["score"].between(1.0, 3.0).all()
    # 15 products carry two different titles: the first is kept and the conflict is counted
    assert any(n.startswith("15 document ids have conflicting") for n in homedepot.notes)
    assert not any("duplicates" in n for n in homedepot.notes)  # no repeated pair


def test_homedepot_values(homedepot):
    assert homedepot.documents.loc["100001", "title"] == "Simpson Strong-Tie 12-Gauge Angle"
    first = homedepot.judgments.iloc[0]
    assert (first["query_id"], first["doc_id"], first["score"]) == ("angle bracket", "100001", 3.0)
    per_query = homedepot.judgments.groupby("query_id").size()
    assert per_query.median() == 7 and per_query.max() == 16


def test_homedepot_reads_in_a_few_seconds(data_dir):
    start = time.perf_counter()
    read_homedepot(data_dir=data_dir)
    assert time.perf_counter() - start < 10


def test_homedepot_missing_file_explains_where(tmp_path):
    with pytest.raises(DataError, match="Kaggle") as info:
        read_homedepot(data_dir=tmp_path)
    assert "train.csv.xz" in str(info.value)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GCL_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("GCL_DATA_DIR")
    found = default_data_dir()
    assert found is None or found.is_dir()


def test_quoted_fields_with_commas_and_newlines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('q,doc,rel,title\n"red, shirt",1,2,"Shirt\nwith a ""quote"""\n')
    ds = read_table(path, **MAPPING)
    assert list(ds.queries.index) == ["red, shirt"]
    assert ds.documents.loc["1", "title"] == 'Shirt\nwith a "quote"'


def test_query_fields_and_conflicting_query_text(tmp_path):
    rows = [dict(r, lang="en") for r in ROWS]
    rows[1] = dict(rows[1], q="red shirts")  # same query id, different text
    ds = read_table(_write(tmp_path, "t.csv", rows), **MAPPING, query_id_col="qid", query_fields=["lang"])
    assert [f.name for f in ds.query_fields] == ["query", "lang"]
    assert ds.queries.loc["q1", "query"] == "red shirt"
    assert ds.queries.loc["q1", "lang"] == "en"
    assert any(n.startswith("1 query ids have conflicting") for n in ds.notes)


# ---------------------------------------------------------------------------- vectorised = naive
def _naive_dataset(rows: list[dict], duplicates: str) -> dict:
    """The reader's rules as an explicit loop over rows (query = stripped text, doc = stripped id,
    first row's fields kept, conflicts counted, duplicate pairs merged by ``duplicates``)."""
    docs, queries, pairs, order = {}, {}, {}, []
    conflict_rows, conflict_ids = 0, set()
    for row in rows:
        q, d = row["q"].strip(), str(row["doc"]).strip()
        image = row["img"] if row["img"] not in (None, "") else None
        fields = {"title": row["title"], "img": image}
        if d not in docs:
            docs[d] = fields
        elif docs[d] != fields:
            conflict_rows += 1
            conflict_ids.add(d)
        queries.setdefault(q, q)
        if (q, d) not in pairs:
            order.append((q, d))
            pairs[(q, d)] = []
        pairs[(q, d)].append(float(row["rel"]))
    judge = (lambda s: sum(s) / len(s)) if duplicates == "mean" else (lambda s: s[0])
    return {
        "docs": docs,
        "queries": list(queries),
        "judgments": [(q, d, judge(pairs[(q, d)])) for q, d in order],
        "conflicts": (len(conflict_ids), conflict_rows),
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("duplicates", ["mean", "first"])
def test_vectorised_reader_equals_a_naive_loop(tmp_path, seed, duplicates):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    pick = lambda options: options[int(rng.integers(0, len(options)))]  # noqa: E731
    rows = [
        {
            "q": pick(["red shirt", " red shirt", "oak table ", "mug", "fence  mesh", "fence mesh"]),
            "doc": pick(["d1", "d2", " d3", "d4", "10", "d5"]),
            "title": pick(["Red Shirt", "Mug", "", "NA", 'say "hi", ok']),
            "img": pick(["", "a.jpg", "b.jpg"]),
            "rel": pick(["1", "2.5", "0", "3"]),
        }
        for _ in range(n)
    ]
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    ds = read_table(path, query_col="q", doc_id_col="doc", score_col="rel",
                    doc_fields=["title", Field("img", FieldKind.IMAGE)], duplicates=duplicates)
    ref = _naive_dataset(rows, duplicates)
    assert list(ds.documents.index) == list(ref["docs"])
    assert ds.documents["title"].tolist() == [v["title"] for v in ref["docs"].values()]
    assert ds.documents["img"].tolist() == [v["img"] for v in ref["docs"].values()]
    assert list(ds.queries.index) == ref["queries"] == ds.queries["query"].tolist()
    assert list(ds.judgments.itertuples(index=False, name=None)) == ref["judgments"]
    n_ids, n_rows = ref["conflicts"]
    expected = f"{n_ids} document ids have conflicting field values across rows ({n_rows} rows differ"
    assert any(note.startswith(expected) for note in ds.notes) == (n_rows > 0)


CSV_CASES = {
    "quoted.csv": b'q,d,s,t\nred shirt,d1,1,"a, b"\n"x""y",d2,2.50,\n',
    "null_words.csv": b'q,d,s,t\nNA,null,,N/A\nNaN,None,1,""\n',
    "bom.csv": b"\xef\xbb\xbfq,d,s,t\na,b,1,c\n",
    "blank_lines.csv": b"q,d,s,t\n\na,b,1,c\n\n\nx,y,2,z\n",
    "crlf.csv": b'q,d,s,t\r\na,b,1,"multi\r\nline"\r\nx,y,2,z\r\n',
    "tab.tsv": b'q\td\ts\tt\na b\tc\t1\t"q"\n',
    "spaces.csv": b"q,d,s,t\n a , b ,1, c \n",
    "unicode.csv": "q,d,s,t\nkäse,ü,1,日本\n".encode(),
    "no_final_newline.csv": b"q,d,s,t\na,b,1,c",
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_csv_columns_equal_pandas_read_csv(name, tmp_path):
    """The direct pyarrow parse gives pandas' ``read_csv(dtype=str, keep_default_na=False)`` frame."""
    from gcl.data.table_files import load_columns

    path = tmp_path / name
    path.write_bytes(CSV_CASES[name])
    sep = "\t" if name.endswith(".tsv") else ","
    columns = ["t", "q", "s"]
    got = load_columns(path, columns, format="tsv" if sep == "\t" else "csv")
    want = pd.read_csv(path, sep=sep, usecols=columns, dtype=str, keep_default_na=False)[columns]
    assert list(got.columns) == columns
    assert got.astype(object).to_dict("list") == want.astype(object).to_dict("list")
