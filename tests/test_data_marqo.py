"""The Marqo-GS-10M layout: split CSVs, corpora, ground truth and the Parquet form."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gcl.data import FieldKind, GradedDataset
from gcl.data.marqo import (
    QUERY_KEY_SUFFIX,
    SPLIT_COLUMNS,
    query_key,
    read_corpus,
    read_ground_truth,
    read_marqo_parquet,
    read_marqo_split,
    split_frame,
    write_ground_truth,
    write_marqo_layout,
)


def _with_images(ds: GradedDataset) -> GradedDataset:
    images = [f"images/{d}.jpg" if i % 3 else None for i, d in enumerate(ds.documents.index)]
    ds.documents["image_local"] = pd.Series(images, index=ds.documents.index, dtype=object)
    return ds


def test_query_key():
    assert QUERY_KEY_SUFFIX == "_{!@#~}_"
    assert query_key("red shirt") == "red shirt_{!@#~}_"


def test_real_ground_truth_file(data_dir, tmp_path):
    path = data_dir / "marqo-gs-format" / "gt_results.json"
    gt = read_ground_truth(path)
    assert len(gt) == 4000
    assert sum(len(docs) for docs in gt.values()) == 4053
    assert all(key.endswith(QUERY_KEY_SUFFIX) for key in gt)
    assert {g for docs in gt.values() for g in docs.values()} == {1}
    out = write_ground_truth(tmp_path / "gt.json", gt)
    assert out.read_bytes() == path.read_bytes()  # written exactly as the reference writes it


def test_layout_round_trip_with_query_ids(tiny_dataset, tmp_path, assert_same_dataset):
    ds = _with_images(tiny_dataset)
    written = write_marqo_layout(tmp_path, {"query_0_product_id_0": ds}, {"corpus_1": ds})
    assert sorted(p.name for p in written.values()) == ["corpus_1.json", "query_0_product_id_0.csv"]
    back = read_marqo_split(written["query_0_product_id_0"], written["corpus_1"], query_id_col="query_id")
    assert_same_dataset(ds, back)
    assert back.documents["image_local"].iloc[0] is None
    assert [(f.name, f.kind) for f in back.doc_fields] == [("title", FieldKind.TEXT), ("image_local", FieldKind.IMAGE)]


def test_layout_round_trip_keyed_by_query_text(tiny_dataset, tmp_path, assert_same_dataset):
    # Without a query-id column the query text is the id, as in the reference protocol.
    ds = tiny_dataset
    text = ds.queries["query"]
    ds.judgments["query_id"] = text.reindex(ds.judgments["query_id"]).to_numpy()
    ds.queries = ds.queries.set_index(pd.Index(text.to_numpy(), name="query_id", dtype=str))
    write_marqo_layout(tmp_path, {"s": ds}, {"c": ds})
    back = read_marqo_split(tmp_path / "s.csv", tmp_path / "c.json", doc_fields=("title",))
    assert_same_dataset(ds, back)


def test_split_csv_columns_and_positions():
    ds = GradedDataset(
        queries=pd.DataFrame({"query": ["a", "b"]}, index=pd.Index(["qa", "qb"], name="query_id")),
        documents=pd.DataFrame({"title": ["X", "Y", "Z"]}, index=pd.Index(["x", "y", "z"], name="doc_id")),
        judgments=pd.DataFrame(
            {"query_id": ["qa", "qa", "qb", "qa"], "doc_id": ["x", "y", "x", "z"], "score": [1.0, 3.0, 2.0, 3.0]}
        ),
    )
    frame = split_frame(ds)
    assert tuple(frame.columns) == SPLIT_COLUMNS
    assert frame["position"].tolist() == [3, 1, 1, 2]  # ties keep judgment order
    np.testing.assert_allclose(frame["score_reciprocal"], [1 / 3, 1, 1, 1 / 2])
    assert frame["no_score"].tolist() == [1, 1, 1, 1]
    assert frame["pair_id"].tolist() == [0, 1, 2, 3]
    assert frame["query"].tolist() == ["a", "a", "b", "a"]
    assert frame["title"].tolist() == ["X", "Y", "X", "Z"]
    assert frame["image_local"].tolist() == [""] * 4


def test_corpus_keeps_unjudged_documents(tiny_dataset, tmp_path):
    judged = tiny_dataset.judgments["doc_id"].nunique()
    write_marqo_layout(tmp_path, {"s": tiny_dataset}, {"corpus_1": tiny_dataset})
    corpus = json.loads((tmp_path / "corpus_1.json").read_text())
    assert len(corpus) == len(tiny_dataset.documents) > judged
    assert set(next(iter(corpus.values()))) == {"title", "image_local"}
    back = read_marqo_split(tmp_path / "s.csv", tmp_path / "corpus_1.json", query_id_col="query_id")
    assert len(back.documents) == len(tiny_dataset.documents)
    assert read_corpus(tmp_path / "corpus_1.json", ("title",)).shape == (len(tiny_dataset.documents), 1)


def test_split_without_corpus_takes_documents_from_the_csv(tiny_dataset, tmp_path):
    ds = _with_images(tiny_dataset)
    write_marqo_layout(tmp_path, {"s": ds}, {})
    back = read_marqo_split(tmp_path / "s.csv", query_id_col="query_id")
    assert len(back.documents) == ds.judgments["doc_id"].nunique()
    pd.testing.assert_frame_equal(back.documents, ds.documents.loc[back.documents.index], check_dtype=False)


def test_split_without_score_column_scores_one(tiny_dataset, tmp_path):
    write_marqo_layout(tmp_path, {"s": tiny_dataset}, {})
    back = read_marqo_split(tmp_path / "s.csv", score_col=None, query_id_col="query_id", doc_fields=("title",))
    assert set(back.judgments["score"]) == {1.0}


def _parquet_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query": ["red shirt", "red shirt", "oak table"],
            "product_id": ["p1", "p2", "p1"],
            "title": ["Red Shirt", "Blue Shirt", "Red Shirt"],
            "score_linear": [0.9, 0.4, 0.2],
            "image": [b"\x89PNG-1", b"\x89PNG-2", b"\x89PNG-1"],
        }
    )


def test_parquet_with_image_bytes(tmp_path):
    path = tmp_path / "query_0_product_id_0.parquet"
    _parquet_frame().to_parquet(path)
    ds = read_marqo_parquet(path)
    assert ds.name == "query_0_product_id_0"
    assert list(ds.queries.index) == ["red shirt", "oak table"]
    assert ds.documents.loc["p2", "image"] == b"\x89PNG-2"
    assert ds.doc_fields[1].kind == FieldKind.IMAGE
    assert ds.judgments["score"].tolist() == [0.9, 0.4, 0.2]


def test_parquet_hugging_face_image_struct_and_shards(tmp_path):
    frame = _parquet_frame()
    images = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(frame.pop("image"))])
    table = pa.Table.from_pandas(frame, preserve_index=False).append_column("image", images)
    shards = tmp_path / "data"
    shards.mkdir()
    pq.write_table(table.slice(0, 2), shards / "part-0.parquet")
    pq.write_table(table.slice(2), shards / "part-1.parquet")
    ds = read_marqo_parquet(shards)
    assert len(ds.judgments) == 3
    assert ds.documents.loc["p1", "image"] == b"\x89PNG-1"


def test_homedepot_round_trip(homedepot, tmp_path, assert_same_dataset):
    queries = homedepot.queries.index[:800]  # real text: quotes, commas, latin-1 characters
    judged = homedepot.judgments.loc[homedepot.judgments["query_id"].isin(queries), "doc_id"].unique()
    part = homedepot.subset(queries, judged, name="hd")
    write_marqo_layout(tmp_path, {"s": part}, {"c": part})
    back = read_marqo_split(tmp_path / "s.csv", tmp_path / "c.json", query_id_col="query_id")
    assert_same_dataset(part, back, doc_fields=["title"])
