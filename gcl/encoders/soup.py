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
paths), the same tensor names, shapes and dtypes, and the same other files (``gcl_model.json``'s
fields and fusion weights, the transformer, pooling, image-tower and tokenizer configs: JSON
compared parsed, without ``_name_or_path`` and without the padding / truncation state a fast
tokenizer saves from its last call, which differs between a model saved untrained and one saved
after training; other files byte for byte). Integer tensors must be
equal, except BatchNorm's ``num_batches_tracked`` (the largest is kept). Anything else is a
:class:`~gcl.errors.ConfigError` naming the file and tensor. Those shared files are the first
ingredient's; records that belong to one model's weights are not carried over
(``gcl_calibration.json``: a calibration is fitted to one model) or are re-checked at load
(``gcl_frozen.json``: used only if the soup's lower layers still match it).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Sequence

from gcl.errors import ConfigError

MODEL_FILE = "gcl_model.json"
SOUP_FILE = "gcl_soup.json"
# not compared between the ingredients: notes, and records of one model's weights
NOT_COMPARED = {"README.md", "gcl_frozen.json", "gcl_calibration.json", SOUP_FILE}
NOT_COPIED = ("*.safetensors", "gcl_calibration.json", SOUP_FILE)
# runtime state a fast tokenizer writes into tokenizer.json (the padding / truncation of its last
# call: sentence-transformers sets both per call), not part of the vocabulary or the model
RUNTIME_KEYS = {"tokenizer.json": ("padding", "truncation")}
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


def _shared_files(model: Path) -> dict[str, object]:
    """Every file but the weights and :data:`NOT_COMPARED`: JSON parsed (``_name_or_path``, where a
    model was loaded from, dropped), other files as bytes."""
    out: dict[str, object] = {}
    for f in sorted(model.rglob("*")):
        rel = str(f.relative_to(model))
        if not f.is_file() or f.suffix == ".safetensors" or f.name in NOT_COMPARED:
            continue
        if f.suffix == ".json":
            try:
                raw = json.loads(f.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{f} is not valid JSON: {exc}") from exc
            if isinstance(raw, dict):
                drop = {"_name_or_path", *RUNTIME_KEYS.get(f.name, ())}
                raw = {k: v for k, v in raw.items() if k not in drop}
            out[rel] = raw
        else:
            out[rel] = f.read_bytes()
    return out


def _load(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the weights ({exc})") from exc


def soup(models: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None) -> dict:
    """Write the weighted average of ``models`` to ``out`` (a new or empty directory); returns a
    summary: ingredients, normalised weights, tensors averaged and copied."""
    import torch
    from safetensors.torch import save_file

    paths = [Path(m).expanduser() for m in models]
    w = soup_weights(len(paths), weights)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty directory")
    files, shared = _weight_files(paths[0]), _shared_files(paths[0])
    for p in paths[1:]:
        if (other := _weight_files(p)) != files:
            raise ConfigError(f"{p}: weight files {other} differ from {paths[0]}'s {files}")
        theirs = _shared_files(p)
        for rel in sorted(set(shared) | set(theirs)):
            if shared.get(rel) != theirs.get(rel):
                what = ("fields or fusion weights differ" if rel == MODEL_FILE else
                        "is missing" if rel not in theirs else "is not in the first model" if rel not in shared
                        else "differs")
                raise ConfigError(f"{p / rel}: {what} from {paths[0] / rel}; a soup mixes models of one "
                                  "architecture and configuration only")
    mixed: dict[str, dict[str, torch.Tensor]] = {}
    averaged = copied = 0
    for name in files:
        states = [_load(p / name) for p in paths]
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
                if key.endswith("num_batches_tracked"):  # BatchNorm's step counter: not a weight
                    mixed[name][key] = torch.stack(ts).amax(0)
                    continue
                raise ConfigError(f"{name}: integer tensor {key} differs between the models; they are not one architecture")
            else:
                acc = sum(a * t.to(torch.float64) for a, t in zip(w, ts))
                mixed[name][key] = acc.to(ts[0].dtype).contiguous()
                averaged += 1
    summary = {"models": [str(p) for p in paths], "weights": w, "averaged_tensors": averaged,
               "copied_tensors": copied}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.soup-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # written beside OUT, then renamed: a killed soup leaves no half-written model at OUT
        shutil.copytree(paths[0], tmp, ignore=shutil.ignore_patterns(*NOT_COPIED))
        for name, tensors in mixed.items():
            save_file(tensors, str(tmp / name), metadata={"format": "pt"})
        (tmp / SOUP_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
