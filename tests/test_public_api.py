"""The public API: ``from gcl import ...`` reaches what the docs teach, and ``import gcl`` stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import gcl


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("package", ["gcl", "gcl.training", "gcl.evaluation"])
def test_importing_the_package_loads_neither_torch_nor_pandas(package):
    loaded = modules_after(f"import {package}")
    assert package in loaded
    assert not {"torch", "pandas", "faiss", "fastapi"} & loaded


@pytest.mark.parametrize("module", ["gcl.cli.main", "gcl.service.durable", "gcl.training.checkpoint", "gcl.config"])
def test_modules_that_only_raise_data_errors_do_not_load_the_data_layer(module):
    """They import the error classes from gcl.errors, not through gcl.data (which loads pandas)."""
    loaded = modules_after(f"import {module}")
    assert not {"pandas", "gcl.data"} & loaded


def test_the_loss_is_importable_from_the_top_without_the_data_layer():
    loaded = modules_after("from gcl import GCLLoss; assert GCLLoss.__module__ == 'gcl.losses.gcl_loss'")
    assert "torch" in loaded and "pandas" not in loaded


@pytest.mark.parametrize("package", ["gcl", "gcl.training", "gcl.evaluation", "gcl.losses", "gcl.encoders",
                                     "gcl.index", "gcl.metrics", "gcl.service"])
def test_every_exported_name_is_the_object_of_its_home_module(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        home = importlib.import_module(getattr(value, "__module__", None) or package)
        assert getattr(home, name, value) is value, name
        assert name in dir(module)


def test_the_names_the_docs_teach():
    from gcl import (  # noqa: F401
        BiEncoder, EmbeddingModel, GCLLoss, MultiFieldModel, Trainer, TrainConfig, VectorIndex, build_index,
        compute_metrics, evaluate_task, exact_search, get_weight_fn, judge_run, load_config, load_model, open_index,
    )
    from gcl.encoders.base import load_model as home

    assert load_model is home


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gcl.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from gcl import nope")
