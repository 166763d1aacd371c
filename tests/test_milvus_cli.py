"""``gcl index build --backend milvus`` / ``gcl search`` / ``gcl index info`` on milvus-lite, through the factory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gcl.cli.main import main
from gcl.index import VectorIndex, open_index

pytest.importorskip("faiss")
pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def corpus():
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig

    return load_benchmark(DataConfig(source="synthetic")).corpus_1


@pytest.fixture(scope="module")
def both_built(tmp_path_factory, tiny_model_dir):
    """The same corpus and model built into a directory and into a milvus-lite collection."""
    root = tmp_path_factory.mktemp("built")
    common = ["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--batch-size", "64", "--no-progress"]
    assert main(common + ["--out", str(root / "dir")]) == 0
    assert main(common + ["--backend", "milvus", "--uri", str(root / "hd.db"), "--collection", "syn"]) == 0
    return root / "dir", root / "hd.db"


def test_milvus_build_holds_the_same_documents_and_vectors(both_built, corpus, tiny_model_dir):
    directory, db = both_built
    faiss_index, milvus_index = VectorIndex.load(directory), open_index(db, collection="syn")
    try:
        assert type(milvus_index).__name__ == "MilvusIndex"
        assert len(milvus_index) == len(faiss_index) == len(corpus)
        assert milvus_index.model == faiss_index.model == str(tiny_model_dir.resolve())
        for doc_id in corpus.index[:50]:
            a, b = faiss_index.get(doc_id), milvus_index.get(doc_id)
            np.testing.assert_allclose(a.vector, b.vector, atol=1e-6)
            assert a.fields == b.fields
    finally:
        milvus_index.close()


def test_search_through_either_location_prints_the_same_ranking(both_built, corpus, capsys):
    directory, db = both_built
    title = corpus["title"].iloc[11]
    out = {}
    for name, argv in (("dir", ["--index", str(directory)]), ("milvus", ["--index", str(db), "--collection", "syn"])):
        capsys.readouterr()
        assert main(["search", *argv, title, "-k", "5", "--json"]) == 0
        out[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["doc_id"] for r in out["dir"]] == [r["doc_id"] for r in out["milvus"]]
    assert out["milvus"][0]["doc_id"] == corpus.index[11]
    np.testing.assert_allclose([r["score"] for r in out["dir"]], [r["score"] for r in out["milvus"]], atol=1e-5)
    capsys.readouterr()
    assert main(["index", "info", "--index", str(db), "--collection", "syn"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == len(corpus) and info["format"] == "gcl-milvus-collection" and info["collection"] == "syn"


def test_rebuilding_a_milvus_collection_replaces_it(tmp_path, tiny_model_dir, corpus):
    db = tmp_path / "r.db"
    index = open_index(db, collection="gcl_documents", dim=32)
    index.add(["stale"], np.ones((1, 32)))
    index.close()
    assert main(["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(db),
                 "--kind", "hnsw", "--hnsw-m", "8", "--no-progress"]) == 0
    index = open_index(db)
    try:
        assert len(index) == len(corpus) and "stale" not in index and index.kind == "hnsw"
    finally:
        index.close()


def test_backend_mistakes_exit_2(tmp_path, capsys):
    cases = [
        (["index", "build", "--backend", "milvus", "--uri", str(tmp_path / "plain_dir"), "--data", "synthetic"],
         "--backend milvus needs a Milvus URI"),
        (["index", "build", "--backend", "faiss", "--out", str(tmp_path / "x.db"), "--data", "synthetic"],
         "is a Milvus location"),
        (["search", "--index", str(tmp_path / "none.db"), "--collection", "nope", "chair"], "no collection 'nope'"),
        (["search", "--index", str(tmp_path), "--collection", "c", "chair"], "apply to a Milvus index only"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (argv, err)
