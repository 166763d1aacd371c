"""``build_index``: a crash mid-encoding resumes without encoding anything twice or losing anything."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest

from gcl.data.errors import ConfigError, DataError
from gcl.index import VectorIndex
from gcl.index.build import PROGRESS_FILE, build_index, default_work_dir, encoding_order

pytest.importorskip("faiss")

DIM = 8


class Crash(RuntimeError):
    pass


class CountingEncoder:
    """A deterministic fake model: a document's vector depends on its title only.

    Records every title it encodes (across runs when shared) and raises :class:`Crash` on call
    number ``crash_on`` (1-based) of this instance.
    """

    doc_field_names = ["title"]
    source = None

    def __init__(self, log: list[str], crash_on: int | None = None) -> None:
        self.log = log
        self.crash_on = crash_on
        self.calls = 0

    def field_kinds(self, side: str) -> dict[str, str]:
        return {"title": "text"}

    def encode_documents(self, documents: pd.DataFrame, *, batch_size: int = 256) -> np.ndarray:
        self.calls += 1
        if self.calls == self.crash_on:
            raise Crash(f"encoder died on call {self.calls}")
        titles = documents["title"].tolist()
        self.log.extend(titles)
        return np.stack([vector_of(t) for t in titles])


def vector_of(title: str) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(title.encode())).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def make_documents(n: int) -> pd.DataFrame:
    ids = pd.Index([f"p{i:04d}" for i in range(n)], name="doc_id")
    return pd.DataFrame({"title": [f"title {i}" for i in range(n)], "brand": [f"b{i % 3}" for i in range(n)]},
                        index=ids)


@pytest.mark.parametrize("checkpoint_every", [1, 3])
@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_crash_then_resume_encodes_each_document_exactly_once(tmp_path, kind, checkpoint_every):
    docs = make_documents(103)  # 11 batches of 10, the last one short
    out = tmp_path / "idx"
    log: list[str] = []
    with pytest.raises(Crash):
        build_index(CountingEncoder(log, crash_on=5), docs, out, kind=kind, batch_size=10,
                    checkpoint_every=checkpoint_every, show_progress=False)
    assert len(log) == 40 and not out.exists()
    progress = json.loads((default_work_dir(out) / PROGRESS_FILE).read_text())
    assert progress["encoded_rows"] == 40  # the 4 batches encoded before the crash were kept

    second = CountingEncoder(log)
    result = build_index(second, docs, out, kind=kind, batch_size=10, checkpoint_every=checkpoint_every,
                         show_progress=False)
    assert second.calls == 7 and result.encoded_batches == 7 and result.resumed_rows == 40
    assert sorted(log) == sorted(docs["title"])  # nothing encoded twice, nothing skipped
    assert not default_work_dir(out).exists()

    index = VectorIndex.load(out)
    assert len(index) == 103 and index.kind == kind
    for doc_id, row in docs.iterrows():
        got = index.get(doc_id)
        np.testing.assert_allclose(got.vector, vector_of(row["title"]), atol=1e-6)
        assert got.fields == {"title": row["title"], "brand": row["brand"]}
    hits = index.search(vector_of("title 42"), 1)[0]
    assert hits[0].doc_id == "p0042"


def test_lost_shard_is_encoded_again_and_the_rest_kept(tmp_path):
    """A hard kill can leave progress.json naming a shard that never reached the disk."""
    docs, out, log = make_documents(50), tmp_path / "idx", []
    with pytest.raises(Crash):
        build_index(CountingEncoder(log, crash_on=4), docs, out, batch_size=10, checkpoint_every=1,
                    show_progress=False)
    work = default_work_dir(out)
    (work / "shard-0000000020.npy").unlink()  # rows 20-29 lost; rows 0-19 intact
    log.clear()
    result = build_index(CountingEncoder(log), docs, out, batch_size=10, show_progress=False)
    order = encoding_order(docs, ["title"])  # "title 10".."title 49" (8 characters) before "title 0".."title 9"
    assert result.resumed_rows == 20 and log == docs["title"].iloc[order[20:]].tolist()
    assert len(result.index) == 50


def test_resume_refuses_a_different_build_unless_restarted(tmp_path):
    docs, out, log = make_documents(40), tmp_path / "idx", []
    with pytest.raises(Crash):
        build_index(CountingEncoder(log, crash_on=2), docs, out, batch_size=10, show_progress=False)
    changed = docs.copy()
    changed.loc["p0003", "title"] = "something else"
    for kwargs, what in (({"documents": changed}, "fingerprint"), ({"batch_size": 20}, "batch_size")):
        args = {"documents": docs, "batch_size": 10} | kwargs
        with pytest.raises(ConfigError, match=what):
            build_index(CountingEncoder(log), args["documents"], out, batch_size=args["batch_size"],
                        show_progress=False)
    log.clear()
    result = build_index(CountingEncoder(log), changed, out, batch_size=10, restart=True, show_progress=False)
    assert result.resumed_rows == 0 and len(log) == 40 and len(result.index) == 40


def test_build_records_model_and_chosen_fields(tmp_path):
    docs = make_documents(12)
    result = build_index(CountingEncoder([]), docs.reset_index(), tmp_path / "idx", fields=["brand"],
                         model_path="/models/tiny", kind="hnsw", hnsw_m=8, show_progress=False)
    index = VectorIndex.load(tmp_path / "idx")
    assert index.model == "/models/tiny" and index.params["hnsw_m"] == 8
    assert index.get("p0005").fields == {"brand": "b2"} and result.n_documents == 12


@pytest.mark.parametrize(
    "documents, kwargs, error, match",
    [
        (make_documents(0), {}, DataError, "no documents"),
        (make_documents(5), {"fields": ["colour"]}, DataError, "colour"),
        (make_documents(5), {"batch_size": 0}, ConfigError, "batch_size"),
        (make_documents(5), {"kind": "annoy"}, ConfigError, "annoy"),
        (pd.concat([make_documents(3), make_documents(2)]), {}, DataError, "duplicate document id 'p0000'"),
    ],
)
def test_bad_builds(tmp_path, documents, kwargs, error, match):
    if kwargs == {"fields": ["colour"]}:  # also: never build into a directory that is not an index
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")
        with pytest.raises(ConfigError, match="holds no index"):
            build_index(CountingEncoder([]), documents, tmp_path / "busy", show_progress=False)
    with pytest.raises(error, match=match):
        build_index(CountingEncoder([]), documents, tmp_path / "idx", show_progress=False, **kwargs)
    assert not (tmp_path / "idx").exists()


def test_build_with_a_real_tiny_model_matches_encoding_all_at_once(tmp_path, tiny_model_dir):
    from gcl.data.synthetic import make_synthetic
    from gcl.encoders.model import BiEncoder
    from gcl.evaluation.search import exact_search

    model = BiEncoder.load(tiny_model_dir)
    model.eval()
    docs = make_synthetic(n_queries=10, n_docs=90, seed=1).documents
    result = build_index(model, docs, tmp_path / "idx", batch_size=16, checkpoint_every=2, show_progress=False)
    assert result.index.model == str(tiny_model_dir) and result.index.dim == model.dim
    whole = model.encode_documents(docs)
    queries = model.encode_queries(pd.DataFrame({"query": ["red chair", "oak table", "steel lamp"]}))
    want_s, want_i = exact_search(queries, whole, 5)
    for hits, ws, wi in zip(result.index.search(queries, 5), want_s, want_i):
        assert [h.doc_id for h in hits] == docs.index[wi].tolist()
        np.testing.assert_allclose([h.score for h in hits], ws, atol=1e-5)
        assert all(h.fields["title"] == docs.loc[h.doc_id, "title"] for h in hits)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


class BatchRecorder(CountingEncoder):
    """Also records each call's titles, to see how the build batches the documents."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.batches: list[list[str]] = []

    def encode_documents(self, documents: pd.DataFrame, *, batch_size: int = 256) -> np.ndarray:
        self.batches.append(documents["title"].tolist())
        return super().encode_documents(documents, batch_size=batch_size)


def test_batches_are_length_sorted_and_every_id_keeps_its_own_vector(tmp_path):
    rng = np.random.default_rng(3)
    n = 97
    titles = ["x" * int(k) + f" {i}" for i, k in enumerate(rng.integers(1, 60, n))]
    titles[5] = titles[6] = "same text"  # equal lengths keep table order
    docs = pd.DataFrame({"title": titles, "brand": [f"b{i}" for i in range(n)]},
                        index=pd.Index([f"d{i:03d}" for i in range(n)], name="doc_id"))
    enc = BatchRecorder([])
    result = build_index(enc, docs, tmp_path / "idx", batch_size=8, checkpoint_every=2, show_progress=False)
    lengths = [len(t) for batch in enc.batches for t in batch]
    assert lengths == sorted(lengths, reverse=True)  # longest first, across batches and shards
    assert sorted(t for batch in enc.batches for t in batch) == sorted(titles)
    index = VectorIndex.load(tmp_path / "idx")
    assert len(index) == n and result.encoded_batches == len(enc.batches) == 13
    for doc_id, row in docs.iterrows():
        got = index.get(doc_id)
        np.testing.assert_allclose(got.vector, vector_of(row["title"]), atol=1e-6)
        assert got.fields == {"title": row["title"], "brand": row["brand"]}
    order = encoding_order(docs, ["title"])
    assert list(order).index(5) < list(order).index(6)


def test_a_partial_build_from_before_length_ordering_is_refused(tmp_path):
    """A shard log written in table order must not be resumed as if it were in encoding order."""
    docs, out = make_documents(30), tmp_path / "idx"
    with pytest.raises(Crash):
        build_index(CountingEncoder([], crash_on=2), docs, out, batch_size=10, checkpoint_every=1, show_progress=False)
    path = default_work_dir(out) / PROGRESS_FILE
    progress = json.loads(path.read_text())
    del progress["order"]  # what gcl wrote before the encoding order existed
    path.write_text(json.dumps(progress))
    with pytest.raises(ConfigError, match="order"):
        build_index(CountingEncoder([]), docs, out, batch_size=10, show_progress=False)
