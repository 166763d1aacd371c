"""``gcl.evaluation.run.evaluate_model`` (what ``gcl train --evaluate`` calls) writes what ``gcl evaluate``
writes with its defaults; ``gcl.cli.train`` no longer imports the CLI entry point."""

from __future__ import annotations

import json

from gcl.cli.main import main


def test_evaluate_model_equals_gcl_evaluate_with_defaults(tmp_path, capsys):
    from tiny_models import make_tiny_sentence_transformer

    from gcl.evaluation.run import evaluate_model
    from gcl.training.config import DataConfig

    model_dir = make_tiny_sentence_transformer(tmp_path / "model")
    assert main(["evaluate", "--data", "synthetic", "--model", str(model_dir), "--out", str(tmp_path / "cli"),
                 "--no-cache", "--no-progress"]) == 0
    out = evaluate_model(model_dir, DataConfig(source="synthetic"), tmp_path / "fn", use_cache=False, show_progress=False)
    cli, fn = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "cli", out))
    assert fn["meta"] == cli["meta"]
    assert {n: s["summary"] for n, s in fn["splits"].items()} == {n: s["summary"] for n, s in cli["splits"].items()}
    assert "results written to" in capsys.readouterr().out


def test_train_module_does_not_import_the_cli_entry_point():
    """No cli.main <-> cli.train cycle: not at import time, not inside a function either."""
    import ast

    import gcl.cli.train

    tree = ast.parse(open(gcl.cli.train.__file__, encoding="utf-8").read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "gcl.cli.main" not in imported and "gcl.cli" not in imported
