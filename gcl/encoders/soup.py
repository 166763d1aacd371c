"""Weight averaging of saved models: a "model soup" (Wortsman et al., ICML 2022) or, with the
untrained start as one ingredient, WiSE-FT (Wortsman et al., CVPR 2022).

For models :math:`\\theta_1, \\dots, \\theta_n` fine-tuned from the same start and non-negative
weights :math:`a_i` (normalised to sum to 1)

.. math::  \\theta_{\\text{soup}} = \\sum_i a_i \\, \\theta_i

tensor by tensor. The soup is one model: it encodes, indexes and serves like its ingredients,
at the cost of one of them. Two details keep it exact where it can be:

* a tensor equal in every ingredient is copied, not averaged (a weighted mean of equal floats
  can differ in the last bit). A lower part frozen in training therefore stays bit-identical,
  its ``gcl_frozen.json`` stays valid, and its stored outputs keep serving the soup
  (:mod:`gcl.training.frozen_reuse`);
* the sum runs in float64 and is cast back to each tensor's dtype.

Only directories of the same architecture mix: the same ``*.safetensors`` files (relative
paths), the same tensor names, shapes and dtypes, and the same ``gcl_model.json`` (fields and
fusion weights); integer tensors must be equal. Anything else is a :class:`~gcl.errors.ConfigError`
naming the file and tensor. Every other file (config, tokenizer, pooling) is the first
ingredient's.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Sequence

from gcl.errors import ConfigError

MODEL_FILE = "gcl_model.json"
# weight formats that would be copied from the first model unaveraged: refused
OTHER_WEIGHTS = {".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack"}


def soup_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    """``weights`` (default: uniform) checked and normalised to sum to 1."""
    if n < 2:
        raise ConfigError(f"a soup needs at least two models, got {n}")
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"{len(w)} weights for {n} models: give one weight per model")
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ConfigError(f"soup weights must be finite, >= 0 and not all 0, got {w}")
    total = sum(w)
    return [x / total for x in w]


def _weight_files(model: Path) -> list[str]:
    if not model.is_dir():
        raise ConfigError(f"{model}: not a model directory")
    other = sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.suffix in OTHER_WEIGHTS)
    if other:
        raise ConfigError(f"{model}: has weights a soup cannot average ({', '.join(other[:3])}); it reads "
                          "safetensors only (gcl and sentence-transformers save them; ONNX exports are not souped)")
    files = sorted(str(p.relative_to(model)) for p in model.rglob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model}: no *.safetensors weights")
    return files


def _gcl_model(model: Path):
    f = model / MODEL_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def soup(models: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None) -> dict:
    """Write the weighted average of ``models`` to ``out`` (a new or empty directory); returns a
    summary: ingredients, normalised weights, tensors averaged and copied."""
    import torch
    from safetensors.torch import load_file, save_file

    paths = [Path(m).expanduser() for m in models]
    w = soup_weights(len(paths), weights)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty directory")
    files = _weight_files(paths[0])
    for p in paths[1:]:
        if (other := _weight_files(p)) != files:
            raise ConfigError(f"{p}: weight files {other} differ from {paths[0]}'s {files}")
        if _gcl_model(p) != _gcl_model(paths[0]):
            raise ConfigError(f"{p / MODEL_FILE}: fields or fusion weights differ from {paths[0] / MODEL_FILE}")
    mixed: dict[str, dict[str, torch.Tensor]] = {}
    averaged = copied = 0
    for name in files:
        states = [load_file(str(p / name)) for p in paths]
        keys = set(states[0])
        for p, s in zip(paths[1:], states[1:]):
            if set(s) != keys:
                raise ConfigError(f"{p / name}: tensor names differ from {paths[0] / name} "
                                  f"(e.g. {sorted(set(s) ^ keys)[:3]})")
        mixed[name] = {}
        for key in sorted(keys):
            ts = [s[key] for s in states]
            for p, t in zip(paths[1:], ts[1:]):
                if t.shape != ts[0].shape or t.dtype != ts[0].dtype:
                    raise ConfigError(f"{p / name}: tensor {key} is {tuple(t.shape)} {t.dtype}, "
                                      f"{paths[0] / name} has {tuple(ts[0].shape)} {ts[0].dtype}")
            if all(torch.equal(ts[0], t) for t in ts[1:]):
                mixed[name][key] = ts[0].clone()
                copied += 1
            elif not ts[0].is_floating_point():
                raise ConfigError(f"{name}: integer tensor {key} differs between the models; they are not one architecture")
            else:
                acc = sum(a * t.to(torch.float64) for a, t in zip(w, ts))
                mixed[name][key] = acc.to(ts[0].dtype).contiguous()
                averaged += 1
    tmp = out.parent / f".{out.name}.soup-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(paths[0], tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for name, tensors in mixed.items():
        save_file(tensors, str(tmp / name), metadata={"format": "pt"})
    summary = {"models": [str(p) for p in paths], "weights": w, "averaged_tensors": averaged,
               "copied_tensors": copied}
    (tmp / "gcl_soup.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return summary
