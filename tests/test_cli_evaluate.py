"""``gcl evaluate`` and ``gcl split`` run in-process: outputs, the split round trip, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gcl.cli.main import main

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


def summaries(out_dir) -> dict[str, dict[str, float]]:
    payload = json.loads((out_dir / "results.json").read_text())
    return {name: split["summary"] for name, split in payload["splits"].items()}


def test_evaluate_bm25_on_synthetic(tmp_path, capsys):
    out = tmp_path / "bm25"
    assert main(["evaluate", "--data", "synthetic", "--bm25", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    table = stdout[stdout.index("split") :]
    assert all(name in table for name in SPLITS)
    assert "bm25 on synthetic (reference protocol)" in stdout
    got = summaries(out)
    assert list(got) == list(SPLITS)
    assert all(0 < s["ndcg@10"] <= 1 for s in got.values())
    assert (out / "results.csv").exists() and (out / "zero_shot_per_query.csv").exists()
    assert not (out / "zero_shot.run").exists()  # TREC files only with --trec


def test_evaluate_tiny_model_with_trec_files(tmp_path, capsys, tiny_model_dir):
    out = tmp_path / "dense"
    argv = ["evaluate", "--data", "synthetic", "--model", str(tiny_model_dir), "--out", str(out),
            "--protocol", "all", "--depth", "100", "--trec", "--no-progress"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert all(name in stdout for name in SPLITS)
    assert list(summaries(out)) == list(SPLITS)
    for name in SPLITS:
        assert (out / f"{name}.run").exists() and (out / f"{name}.qrels").exists()
        assert (out / f"{name}_gt_test.json").exists()
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["model"] == str(tiny_model_dir) and meta["protocol"]["name"] == "all"


def test_split_then_evaluate_reads_back_the_same_benchmark(tmp_path, capsys):
    layout = tmp_path / "layout"
    assert main(["split", "--data", "synthetic", "--split-seed", "3", "--out", str(layout)]) == 0
    for stem in ("query_0_product_id_0", "query_1_product_id_0", "query_0_product_id_1", "query_1_product_id_1",
                 "train", "dev"):
        assert (layout / f"{stem}.csv").exists(), stem
    assert (layout / "corpus_1.json").exists() and (layout / "corpus_2.json").exists()
    sizes = json.loads(capsys.readouterr().out)
    assert set(SPLITS) <= set(sizes)

    assert main(["evaluate", "--data", str(layout), "--bm25", "--out", str(tmp_path / "from_dir")]) == 0
    assert main(["evaluate", "--data", "synthetic", "--split-seed", "3", "--bm25", "--out", str(tmp_path / "direct")]) == 0
    from_dir, direct = summaries(tmp_path / "from_dir"), summaries(tmp_path / "direct")
    assert list(from_dir) == list(direct) == list(SPLITS)
    for name in SPLITS:
        assert from_dir[name] == pytest.approx(direct[name], rel=1e-12, abs=1e-12), name
    # and the split seed matters: another seed gives other numbers
    assert main(["evaluate", "--data", "synthetic", "--bm25", "--out", str(tmp_path / "seed0")]) == 0
    assert summaries(tmp_path / "seed0") != direct


def test_evaluate_precomputed_embeddings(tmp_path, capsys):
    from gcl.data.synthetic import make_synthetic

    ds = make_synthetic()
    rng = np.random.default_rng(0)
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "queries.npy", rng.standard_normal((len(ds.queries), 8)).astype(np.float32))
    np.save(emb / "documents.npy", rng.standard_normal((len(ds.documents), 8)).astype(np.float32))
    (emb / "query_ids.txt").write_text("\n".join(ds.queries.index) + "\n")
    (emb / "doc_ids.txt").write_text("\n".join(ds.documents.index) + "\n")
    out = tmp_path / "out"
    argv = ["evaluate", "--data", "synthetic", "--embeddings", str(emb), "--out", str(out), "--splits", "novel_query"]
    assert main(argv) == 0
    assert list(summaries(out)) == ["novel_query"]
    assert "in_domain" not in capsys.readouterr().out
    # a missing id is a user error naming it
    (emb / "doc_ids.txt").write_text("\n".join(["other", *ds.documents.index[1:]]) + "\n")
    assert main(argv[:-2]) == 2  # every split: both corpora, so the renamed document is asked for
    assert ds.documents.index[0] in capsys.readouterr().err


def test_small_dataset_skips_empty_splits(tmp_path, capsys):
    data = tmp_path / "small.csv"
    data.write_text("query,doc_id,title,score\nred shirt,d1,Red Shirt,2.5\nblue lamp,d2,Blue Lamp,3\n"
                    "blue lamp,d1,Red Shirt,1\n")
    assert main(["evaluate", "--data", str(data), "--bm25", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "skipped: no judgments" in err
    assert main(["evaluate", "--data", str(data), "--bm25", "--splits", "zero_shot", "--out", str(tmp_path / "o")]) == 2
    assert "error: split 'zero_shot' has no judgments" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ user errors
def _bad_inputs(tmp_path):
    no_column = tmp_path / "no_column.csv"
    no_column.write_text("query,doc_id,title\nred shirt,d1,Red Shirt\n")
    not_numeric = tmp_path / "not_numeric.csv"
    not_numeric.write_text("query,doc_id,title,score\nred shirt,d1,Red Shirt,2.5\nblue lamp,d2,Blue Lamp,high\n")
    return {
        "missing data file": (["--data", str(tmp_path / "missing.csv"), "--bm25"], ["missing.csv", "not found"]),
        "missing column": (["--data", str(no_column), "--bm25"], ["no_column.csv", "'score'", "missing column"]),
        "non-numeric score": (["--data", str(not_numeric), "--bm25"], ["not_numeric.csv", "row 1", "'high'"]),
        "unknown split": (["--data", "synthetic", "--bm25", "--splits", "novel_query,bogus"], ["'bogus'", "unknown split"]),
        "missing model dir": (["--data", "synthetic", "--model", str(tmp_path / "no_model")], ["no_model", "cannot load"]),
        "no homedepot data": (["--data", "homedepot", "--data-dir", "/nonexistent", "--bm25"],
                              ["/nonexistent", "train.csv.xz"]),
        "missing embeddings": (["--data", "synthetic", "--embeddings", str(tmp_path / "no_emb")], ["no_emb", "not found"]),
    }


@pytest.mark.parametrize("case", ["missing data file", "missing column", "non-numeric score", "unknown split",
                                  "missing model dir", "no homedepot data", "missing embeddings"])
def test_evaluate_user_errors_exit_2_with_one_error_line(case, tmp_path, capsys):
    argv, expected = _bad_inputs(tmp_path)[case]
    assert main(["evaluate", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("case", ["missing data file", "missing column", "non-numeric score", "no homedepot data"])
def test_split_user_errors_exit_2_with_one_error_line(case, tmp_path, capsys):
    argv, expected = _bad_inputs(tmp_path)[case]
    argv = [a for a in argv if a != "--bm25"]
    assert main(["split", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(text in lines[0] for text in expected), lines[0]
    assert not (tmp_path / "out").exists()


def test_evaluate_a_split_directory_does_not_read_train_csv(tmp_path, capsys):
    """Evaluation needs only the split files: an unreadable train.csv / dev.csv changes nothing
    (it used to be parsed: ~4M judgments, a third of the data loaded, at Marqo-GS scale)."""
    layout = tmp_path / "layout"
    assert main(["split", "--data", "synthetic", "--out", str(layout)]) == 0
    assert main(["evaluate", "--data", str(layout), "--bm25", "--out", str(tmp_path / "intact")]) == 0
    for name in ("train.csv", "dev.csv"):
        (layout / name).write_text("not,a\nsplit,file,at all\n", encoding="utf-8")
    assert main(["evaluate", "--data", str(layout), "--bm25", "--out", str(tmp_path / "broken")]) == 0
    assert summaries(tmp_path / "broken") == summaries(tmp_path / "intact")
    # --seen-unseen needs the training queries, so it still reads train.csv (and names the bad file)
    assert main(["evaluate", "--data", str(layout), "--bm25", "--seen-unseen", str(tmp_path),
                 "--out", str(tmp_path / "seen")]) == 2
    assert "train.csv" in capsys.readouterr().err
