"""``gcl index build`` writes the lexical index; ``gcl search --mode``; ``gcl evaluate --hybrid``."""

from __future__ import annotations

import json

import pytest

from gcl.cli.main import main
from gcl.index import VectorIndex
from gcl.index.lexical import LEXICAL_DIR, LexicalIndex

pytest.importorskip("faiss")
pytest.importorskip("bm25s")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("indexes") / "c1"
    argv = ["index", "build", "--model", str(tiny_model_dir), "--data", "synthetic", "--out", str(out),
            "--batch-size", "64", "--no-progress"]
    assert main(argv) == 0
    return out


def json_hits(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]


def test_build_writes_a_current_lexical_index(built_index):
    assert (built_index / LEXICAL_DIR / "lexical.json").is_file()
    lex = LexicalIndex.open(VectorIndex.load(built_index), built_index)
    lex.search(["chair"], k=3)
    assert lex.rebuilds == 0  # read from disk: it matches the index's documents


def test_search_lexical_equals_the_lexical_index(built_index, capsys):
    title = VectorIndex.load(built_index).live_documents()[3][5]["title"]
    capsys.readouterr()
    assert main(["search", "--index", str(built_index), title, "-k", "5", "--mode", "lexical", "--json"]) == 0
    got = json_hits(capsys)
    want = LexicalIndex(VectorIndex.load(built_index)).search([title], k=5)[0]
    assert [(g["doc_id"], g["score"]) for g in got] == [(h.doc_id, round(h.score, 6)) for h in want]
    assert got[0]["fields"]["title"] == title


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_search_hybrid_fuses_dense_and_lexical(built_index, fusion, capsys):
    from gcl.index.hybrid import HybridParams, fuse_hits
    from gcl.encoders.base import load_model
    from gcl.encoders.query import encode_query_texts

    index = VectorIndex.load(built_index)
    query = "red chair"
    capsys.readouterr()
    assert main(["search", "--index", str(built_index), query, "-k", "4", "--mode", "hybrid", "--fusion", fusion,
                 "--alpha", "0.3", "--json"]) == 0
    got = json_hits(capsys)
    params = HybridParams(fusion=fusion, alpha=0.3)
    dense = index.search(encode_query_texts(load_model(index.model), [query]), params.depth)[0]
    lexical = LexicalIndex(index).search([query], params.depth)[0]
    want = fuse_hits(dense, lexical, params, 4)
    assert [(g["doc_id"], g["score"]) for g in got] == [(h.doc_id, round(h.score, 6)) for h in want]
    assert len(got) == 4


def test_dense_mode_is_the_default(built_index, capsys):
    capsys.readouterr()
    assert main(["search", "--index", str(built_index), "red chair", "-k", "3", "--json"]) == 0
    default = json_hits(capsys)
    assert main(["search", "--index", str(built_index), "red chair", "-k", "3", "--json", "--mode", "dense"]) == 0
    assert json_hits(capsys) == default


@pytest.mark.parametrize("argv, message", [
    (["--mode", "fuzzy"], "invalid choice: 'fuzzy'"),
    (["--mode", "hybrid", "--alpha", "1.5"], "expected a number in [0, 1]"),
    (["--mode", "hybrid", "--fusion", "max"], "invalid choice: 'max'"),
])
def test_bad_mode_options_are_argparse_errors(built_index, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--index", str(built_index), "chair", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_hybrid_on_synthetic(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", "synthetic", "--splits", "zero_shot",
                 "--hybrid", "convex", "--alpha", "0.4", "--depth", "50", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "hybrid-convex" in json.dumps(results) and "alpha=0.4" in capsys.readouterr().out


def test_evaluate_hybrid_with_bm25_is_refused(tmp_path, capsys):
    assert main(["evaluate", "--bm25", "--hybrid", "rrf", "--data", "synthetic", "--out", str(tmp_path / "e")]) == 2
    assert "--hybrid fuses a dense retriever with BM25" in capsys.readouterr().err


def test_fusion_options_without_a_fusion_are_refused(built_index, tmp_path, capsys):
    capsys.readouterr()
    assert main(["search", "--index", str(built_index), "chair", "--alpha", "0.2"]) == 2
    assert "--alpha only apply with --mode hybrid" in capsys.readouterr().err
    assert main(["evaluate", "--bm25", "--k-rrf", "10", "--data", "synthetic", "--out", str(tmp_path / "e")]) == 2
    assert "--k-rrf only apply with --hybrid" in capsys.readouterr().err
