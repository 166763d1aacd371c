"""The Marqo-GS-10M layout: split CSVs, corpora, ground truth and the Parquet form."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gcl.data import Field, FieldKind, GradedDataset, build_splits, make_synthetic
from gcl.data.marqo import (
    QUERY_KEY_SUFFIX,
    SPLIT_COLUMNS,
    query_key,
    read_corpus,
    read_ground_truth,
    read_marqo_parquet,
    rank_in_query,
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


# ---------------------------------------------------------------------------- the fast writers
TRICKY = ["plain", "", "comma, here", 'a "quoted" word', "line\nbreak", "back\\slash", "café ™", "tab\there",
          "ctrl\x01", "emoji 🙂", "  spaces  ", "del\x7f", "slash / path", "[brackets]~", "\r\n crlf"]


def _tricky_dataset() -> GradedDataset:
    """Text with every character class the CSV and JSON writers escape differently."""
    docs = [f"d{i}" for i in range(len(TRICKY))] + ['d"q', "d,c", "dé"]
    titles = TRICKY + ["t1", "t2", "t3"]
    images = [None if i % 4 == 0 else f"img/{t}.jpg" for i, t in enumerate(titles)]
    queries = ["red, shirt", 'oak "table"', "mug\nlid", "plain"]
    rows = [(q, d, float((i * 7 + j) % 5) + 0.25 * j) for i, q in enumerate(queries)
            for j, d in enumerate(docs) if (i + j) % 2 == 0]
    return GradedDataset(
        queries=pd.DataFrame({"query": queries}, index=pd.Index(queries, name="query_id", dtype=str)),
        documents=pd.DataFrame({"title": titles, "image_local": pd.Series(images, dtype=object)},
                               index=pd.Index(docs, name="doc_id", dtype=str)),
        judgments=pd.DataFrame(rows, columns=["query_id", "doc_id", "score"]),
        doc_fields=(Field("title"), Field("image_local", FieldKind.IMAGE)),
    ).validate()


def _old_split_csv(ds: GradedDataset, path) -> None:
    """The writer before pyarrow: pandas ``to_csv`` of a frame built with ``reindex``."""
    j = ds.judgments
    position = j.groupby("query_id", sort=False)["score"].rank(method="first", ascending=False).to_numpy(dtype=np.int64)
    image = ds.documents["image_local"].reindex(j["doc_id"].to_numpy()).astype(object)
    pd.DataFrame({
        "query": ds.queries["query"].reindex(j["query_id"].to_numpy()).to_numpy(),
        "product_id": j["doc_id"].to_numpy(),
        "position": position,
        "title": ds.documents["title"].reindex(j["doc_id"].to_numpy()).to_numpy(dtype=object),
        "image_local": image.where(image.notna(), "").to_numpy(dtype=object),
        "pair_id": np.arange(len(j)),
        "score_linear": j["score"].to_numpy(dtype=float),
        "score_reciprocal": 1.0 / position,
        "no_score": np.ones(len(j), dtype=np.int64),
        "query_id": j["query_id"].to_numpy(),
    }).to_csv(path, index=False)


def _old_corpus_json(documents: pd.DataFrame, path) -> None:
    """The writer before the vectorised path: ``json.dump`` of ``to_dict(orient="index")``."""
    table = documents.astype(object)
    table = table.where(table.notna(), "")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(table.to_dict(orient="index"), fh)


def _parsed(path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ("position", "pair_id", "no_score", "score_linear", "score_reciprocal"):
        frame[col] = frame[col].astype(float)
    return frame


@pytest.mark.parametrize("make", [_tricky_dataset, lambda: _with_images(make_synthetic(40, 120))], ids=["tricky", "synthetic"])
def test_fast_writers_match_the_pandas_and_json_writers(make, tmp_path):
    ds = make()
    write_marqo_layout(tmp_path / "new", {"s": ds}, {"c": ds})
    (tmp_path / "old").mkdir()
    _old_split_csv(ds, tmp_path / "old" / "s.csv")
    _old_corpus_json(ds.documents, tmp_path / "old" / "c.json")
    # corpus JSON: the same bytes; split CSV: the same parsed contents (pyarrow quotes every text
    # cell and writes 1.0 as 1, pandas quotes only where needed)
    assert (tmp_path / "new" / "c.json").read_bytes() == (tmp_path / "old" / "c.json").read_bytes()
    pd.testing.assert_frame_equal(_parsed(tmp_path / "new" / "s.csv"), _parsed(tmp_path / "old" / "s.csv"))
    back = read_marqo_split(tmp_path / "new" / "s.csv", tmp_path / "new" / "c.json", query_id_col="query_id")
    pd.testing.assert_frame_equal(back.judgments, ds.judgments, check_dtype=False)


def test_corpus_with_non_string_fields_takes_the_json_dump_path(tmp_path):
    docs = pd.DataFrame({"title": ["a", "b"], "price": [1.5, float("nan")]}, index=pd.Index(["x", "y"], name="doc_id"))
    write_marqo_layout(tmp_path, {}, {"c": docs})
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "x": {"title": "a", "price": 1.5, "image_local": ""}, "y": {"title": "b", "price": "", "image_local": ""}}


def test_rank_in_query_equals_pandas_groupby_rank():
    rng = np.random.default_rng(0)
    q = pd.Series(rng.integers(0, 30, 2000).astype(str))
    score = rng.integers(0, 5, 2000).astype(float)  # many ties
    expected = pd.Series(score).groupby(q, sort=False).rank(method="first", ascending=False).to_numpy()
    np.testing.assert_array_equal(rank_in_query(q, score), expected)


# ---------------------------------------------------------------------------- shared corpora
class CountingModel:
    """A fake encoder: counts the documents it encodes, one entry per call."""

    def __init__(self) -> None:
        self.document_calls: list[int] = []

    @staticmethod
    def _vectors(texts: list[str]) -> np.ndarray:
        out = np.array([[len(t) % 7 + 1, sum(map(ord, t)) % 11 + 1, 1.0] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_documents(self, documents: pd.DataFrame, **_) -> np.ndarray:
        self.document_calls.append(len(documents))
        return self._vectors(documents["title"].astype(str).tolist())

    def encode_queries(self, queries: pd.DataFrame, **_) -> np.ndarray:
        return self._vectors(queries["query"].astype(str).tolist())


def test_marqo_directory_encodes_and_parses_each_corpus_once(tiny_dataset, tmp_path, monkeypatch):
    import gcl.data.marqo as marqo
    from gcl.data.sources import load_marqo_dir
    from gcl.evaluation.evaluator import Protocol, evaluate_task, prepare_task
    from gcl.evaluation.retrievers import DenseRetriever

    build_splits(tiny_dataset, seed=0).write(tmp_path)
    parsed = []
    real = marqo._load_json_object
    monkeypatch.setattr(marqo, "_load_json_object", lambda path, shape: parsed.append(path.name) or real(path, shape))
    bench = load_marqo_dir(tmp_path, ["title"])
    assert sorted(parsed) == ["corpus_1.json", "corpus_2.json"]  # was corpus_1 x4, corpus_2 x2

    corpus_1, corpus_2 = bench.splits["in_domain"].documents, bench.splits["novel_corpus"].documents
    assert bench.splits["novel_query"].documents is corpus_1 and bench.splits["zero_shot"].documents is corpus_2
    assert bench.train.documents is corpus_1 and bench.dev.documents is corpus_1

    model = CountingModel()
    retriever, protocol = DenseRetriever(model, show_progress=False), Protocol(name="all", depth=10)
    for name in ("in_domain", "novel_query", "novel_corpus", "zero_shot"):
        evaluate_task(prepare_task(bench.eval_split(name), protocol, name=name), retriever, protocol)
    assert model.document_calls == [len(corpus_1), len(corpus_2)]  # was 4 encodes for 2 corpora
