"""``gcl index build`` / ``gcl index info`` / ``gcl search`` in-process: outputs and user errors."""

from __future__ import annotations

import json

import pytest

from gcl.cli.main import main
from gcl.index import VectorIndex

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def synthetic_bench():
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig

    return load_benchmark(DataConfig(source="synthetic"))


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("indexes") / "c1"
    argv = ["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(out),
            "--batch-size", "64", "--no-progress"]
    assert main(argv) == 0
    return out


def test_build_writes_an_index_of_corpus_1_that_remembers_its_model(built_index, tiny_model_dir, synthetic_bench):
    index = VectorIndex.load(built_index)
    corpus = synthetic_bench.corpus_1
    assert len(index) == len(corpus) and index.kind == "exact" and index.model == str(tiny_model_dir.resolve())
    assert all(d in index for d in corpus.index)
    assert index.get(corpus.index[0]).fields == {"title": corpus["title"].iloc[0]}


def test_search_prints_ranked_results_with_the_manifest_model(built_index, synthetic_bench, capsys):
    capsys.readouterr()
    doc_id, title = synthetic_bench.corpus_1.index[7], synthetic_bench.corpus_1["title"].iloc[7]
    assert main(["search", "--index", str(built_index), title, "-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "doc_id", "title"] and len(lines) == 6
    rank, score, got_id, *got_title = lines[1].split()
    # the same text through the same tower: the document itself, with cosine 1
    assert (rank, got_id, " ".join(got_title)) == ("1", doc_id, title) and float(score) == pytest.approx(1, abs=1e-3)
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_search_json_filters_and_several_queries(built_index, synthetic_bench, tiny_model_dir, capsys):
    capsys.readouterr()
    argv = ["search", "--index", str(built_index), "--model", str(tiny_model_dir), "red chair", "oak lamp",
            "-k", "3", "--json", "--filter", "title=" + synthetic_bench.corpus_1["title"].iloc[3]]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["query"], r["rank"], r["doc_id"]) for r in rows] == [
        ("red chair", 1, synthetic_bench.corpus_1.index[3]), ("oak lamp", 1, synthetic_bench.corpus_1.index[3])]


@pytest.mark.parametrize("corpus", ["corpus_2", "all"])
def test_build_other_corpora_with_hnsw(tmp_path, tiny_model_dir, synthetic_bench, corpus, capsys):
    out = tmp_path / corpus
    assert main(["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--corpus", corpus,
                 "--out", str(out), "--kind", "hnsw", "--hnsw-m", "8", "--no-progress"]) == 0
    c1, c2 = synthetic_bench.corpus_1, synthetic_bench.splits["novel_corpus"].documents
    want = set(c2.index) if corpus == "corpus_2" else set(c1.index) | set(c2.index)
    index = VectorIndex.load(out)
    assert index.kind == "hnsw" and index.params["hnsw_m"] == 8 and len(index) == len(want)
    assert all(d in index for d in want)
    assert main(["index", "info", "--index", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the build's summary line
    assert info["count"] == len(want) and info["kind"] == "hnsw"


def test_user_errors_exit_2_with_a_clear_message(tmp_path, built_index, capsys):
    from gcl.index.store import MANIFEST_FILE

    no_model = tmp_path / "no_model"
    index = VectorIndex.load(built_index)
    index.model = None
    index.save(no_model)
    cases = [
        (["search", "--index", str(tmp_path / "missing"), "chair"], f"{MANIFEST_FILE} not found"),
        (["search", "--index", str(no_model), "chair"], "records no model; pass --model"),
        (["search", "--index", str(built_index), "  "], "query 1 is empty"),
        (["search", "--index", str(built_index), "chair", "--filter", "title"], "FIELD=VALUE"),
        (["index", "build", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x"), "--no-progress"],
         "data source not found"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (argv, err)


def test_search_with_a_model_of_another_dimension_is_refused(tmp_path, tiny_model_dir, capsys):
    index = VectorIndex(dim=3, model=str(tiny_model_dir))
    index.add(["a"], [[1, 0, 0]])
    index.save(tmp_path / "idx3")
    assert main(["search", "--index", str(tmp_path / "idx3"), "chair"]) == 2
    assert "makes 32-d vectors but the index holds 3-d ones" in capsys.readouterr().err
