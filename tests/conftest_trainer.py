"""Shared helpers for the trainer tests (imported explicitly: ``from conftest_trainer import ...``).

* :func:`tiny_model` -- the tiny random 2-layer BERT of :mod:`tiny_models`, built once per
  session per dropout value (a module-level cache: pytest would build an imported session
  fixture once per importing module).
* :func:`synthetic_splits` -- the built-in synthetic benchmark (``data.source=synthetic``), once.
* :func:`make_config` -- a small, fast :class:`TrainConfig` from ``"a.b": value`` overrides.
* :func:`model_state` -- a detached copy of a trainer's trainable state, for exact comparisons.

Torch is limited to one thread: the machine is small and shared, and thread contention made a
tiny-model step ten times slower.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from gcl.config import from_dict
from gcl.training.config import TrainConfig

torch.set_num_threads(1)

_MODELS: dict[float, Path] = {}
_SPLITS: dict[str, Any] = {}
_ROOT = Path(tempfile.mkdtemp(prefix="gcl-trainer-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def tiny_model(dropout: float = 0.1) -> Path:
    """Directory of a tiny sentence-transformers model (built on first use, then reused)."""
    if dropout not in _MODELS:
        from tiny_models import make_tiny_sentence_transformer

        _MODELS[dropout] = make_tiny_sentence_transformer(_ROOT / f"tiny-dropout{dropout}", dropout=dropout)
    return _MODELS[dropout]


def synthetic_splits():
    """The synthetic benchmark, split (shared: the trainer never mutates it)."""
    if "synthetic" not in _SPLITS:
        from gcl.data.sources import load_benchmark
        from gcl.training.config import DataConfig

        _SPLITS["synthetic"] = load_benchmark(DataConfig(source="synthetic"))
    return _SPLITS["synthetic"]


BASE = {
    "data.source": "synthetic",
    "batch.batch_size": 8,
    "optim.steps": 4,
    "optim.warmup_steps": 1,
    "optim.lr": 1e-3,
    "eval.every": -1,  # no dev evaluation unless a test asks for it
    "log_every": 1,
    "progress": False,
}


def make_config(out_dir: Path | str, *, dropout: float = 0.1, **overrides: Any) -> TrainConfig:
    """A TrainConfig for the tiny model; keyword names use ``__`` for dots (``optim__lr=0``)."""
    items = {**BASE, "model.text_model": str(tiny_model(dropout)), "out_dir": str(out_dir)}
    return config_from_items(items, overrides)


def config_from_items(items: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """TrainConfig from dotted keys (``"optim.lr"``) plus keyword overrides using ``__`` for dots."""
    items = {**items, **{k.replace("__", "."): v for k, v in overrides.items()}}
    data: dict[str, Any] = {}
    for key, value in items.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(TrainConfig, data)


def model_state(trainer) -> dict[str, torch.Tensor]:
    """Model and loss parameters/buffers, cloned."""
    out = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    out.update({f"loss.{k}": v.detach().clone() for k, v in trainer.loss_fn.state_dict().items()})
    return out


def grads(trainer) -> dict[str, torch.Tensor]:
    """Parameter gradients left by the last ``train_step`` (after all-reduce and clipping)."""
    named = list(trainer.model.named_parameters()) + [(f"loss.{n}", p) for n, p in trainer.loss_fn.named_parameters()]
    return {n: p.grad.detach().clone() for n, p in named if p.grad is not None}


def assert_states_close(a: dict, b: dict, *, atol: float = 0.0, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    bad = []
    for k in a:
        if atol == 0.0 and rtol == 0.0:
            ok = torch.equal(a[k], b[k])
        else:
            ok = torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=rtol)
        if not ok:
            diff = (a[k].double() - b[k].double()).abs().max().item()
            bad.append(f"{k} (max |diff| {diff:.3g})")
    assert not bad, f"{len(bad)} of {len(a)} tensors differ: {bad[:5]}"
