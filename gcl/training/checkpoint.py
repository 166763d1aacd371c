"""Atomic, resumable training checkpoints.

A checkpoint is one file holding the config, the step, and the model, optimiser, scheduler,
loss (learnable temperature), sampler and RNG states. It is written to a temporary file in the
same directory, flushed to disk and renamed over the previous one, so a crash at any moment
leaves the last good checkpoint intact. It loads with ``torch.load(weights_only=True)``: no
arbitrary objects are unpickled.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcl.atomic import write_atomic
from gcl.errors import ConfigError

CHECKPOINT_FILE = "checkpoint.pt"


def _to_safe(obj: Any) -> Any:
    """numpy arrays -> tensors, tuples -> lists, recursively (weights_only-loadable)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_safe(v) for v in obj]
    return obj


def rng_state() -> dict:
    py = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None  # dropout on GPUs
    return {"python": [py[0], list(py[1]), py[2]], "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, state: dict) -> Path:
    """Atomically write ``state`` to ``directory/checkpoint.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / CHECKPOINT_FILE
    write_atomic(target, lambda fh: torch.save(_to_safe(state), fh))
    return target


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except torch.OutOfMemoryError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        # a corrupt file: not a pickle / disallowed objects (UnpicklingError), a damaged zip
        # (RuntimeError), empty (EOFError); OSError: unreadable
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc


def sampler_state_from_checkpoint(state: dict) -> dict:
    """Tensors back to numpy where the sampler expects arrays."""
    return {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in state.items()}
