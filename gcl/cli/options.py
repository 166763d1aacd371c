"""Checks shared by the subcommands: argparse number types and the cheap, up-front checks of paths
the user named (a model that does not exist, an output directory that is a file), so that a
mistake is one ``error:`` line at once, not a traceback after the data has loaded."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gcl.errors import ConfigError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--depth 0`` is a usage error, not a table of zeros)."""
    return _int_at_least(text, 1)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def looks_like_path(ref: str) -> bool:
    """A model reference that can only be a local path: absolute, ``./``, ``../`` or ``~``
    relative, or more than one ``/`` (a hub name is ``name`` or ``org/name``)."""
    return os.path.isabs(ref) or ref.startswith((".", "~")) or ref.count("/") > 1 or "\\" in ref


def check_model(ref: str | None, option: str = "--model") -> None:
    """A model given as a local path must exist (checked before any data is loaded)."""
    if ref and looks_like_path(ref) and not Path(ref).expanduser().exists():
        raise ConfigError(f"{option} {ref}: cannot load the model: no such file or directory")


def check_out_dir(path: str | os.PathLike, option: str) -> None:
    """An output directory may exist as a directory or not at all; a file there (or a file where a
    parent directory should be) is an error naming it."""
    p = Path(path).expanduser()
    for candidate in (p, *p.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "" if candidate == p else f" ({candidate} is a file)"
                raise ConfigError(f"{option} {path}: is not a directory{where}")
            return


def check_queries(queries: list[str]) -> None:
    """Blank query text is refused, as the HTTP API refuses it."""
    for i, text in enumerate(queries, 1):
        if not text.strip():
            raise ConfigError(f"query {i} is empty: give some search text (the HTTP API refuses a blank query too)")


def check_device(text: str, option: str = "--device") -> str:
    """The torch device ``text`` names, if this machine has it: ``cpu``, ``cuda``, ``cuda:N`` (N below
    the GPUs torch sees) or ``mps``; anything else is one error line naming ``option``, before any
    data or model is loaded (not an assertion from deep inside torch after minutes of loading)."""
    if text == "cpu":
        return text  # the default: no torch import
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option} {text!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            cpu_only = torch.version.cuda is None and getattr(torch.version, "hip", None) is None
            why = "a CPU-only build" if cpu_only else "no GPU is visible"
            raise ConfigError(f"{option} {text}: CUDA is not available here (torch {torch.__version__}: {why}); "
                              "use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{option} {text}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{option} {text}: Apple's MPS is not available here; use cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"{option} {text}: gcl runs on cpu, cuda or mps, not {dev.type}")
    return text
