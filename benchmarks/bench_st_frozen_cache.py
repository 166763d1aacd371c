"""A sentence-transformers peer's step with and without the cached frozen layers, in one run.

Both arms are ``experiments/st_peers.py``'s ``SentenceTransformerTrainer`` on the table's config
(``configs/homedepot_gcl_fast.yaml``: MiniLM, lower 4 of 6 layers frozen, batch 64, Home Depot
training pairs; the synthetic set when the data is absent), same seed, same batches:

* **library forward** (``model.cache_frozen=false``): every step runs all 6 layers, as the
  library does on its own;
* **cached** (``model.cache_frozen=true``, :func:`gcl.sentence_transformers.freeze_lower_layers`):
  a step reads the frozen layers' outputs from the cache (memory, then the on-disk store that
  ``gcl train`` fills) and runs the top 2 layers only.

Printed: seconds per optimiser step of each (the steps after ``--warmup``; batch loading and
collating included, dev evaluation off), the ratio, minutes per epoch of the 27,965 training
pairs, the texts whose frozen outputs were computed / read, and the largest difference between
the two runs' trained weights (the same function: float rounding only, then the paths drift
apart as any two float orders do). The cached arm runs first, so a cold store is paid by it.

    python benchmarks/bench_st_frozen_cache.py --steps 40 --arm mnrl-thresholded
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
EPOCH_PAIRS = 27_965


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps not counted")
    p.add_argument("--arm", default="mnrl-thresholded")
    p.add_argument("--config", default=str(ROOT / "configs/homedepot_gcl_fast.yaml"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for both arms")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import st_peers
    from gcl.encoders.base import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    common = [f"optim.steps={args.steps}", "eval.every=-1", *args.overrides]
    rows, weights = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cache in (("cached", "true"), ("library forward", "false")):
            cfg = st_peers.load_peer_config(args.config, [*common, f"model.cache_frozen={cache}"], None)
            peer = st_peers.Peer(args.arm, st_peers.peer_threshold(args.arm, cfg, None))
            rec = st_peers.run_peer(peer, cfg, Path(tmp) / name)
            steps = rec["step_seconds"][args.warmup:]
            s = sum(steps) / max(len(steps), 1)
            rows[name] = {"s_per_step": s, "min_per_epoch": s * EPOCH_PAIRS / cfg.batch.batch_size / 60,
                          "batch_size": cfg.batch.batch_size, "frozen_cache": rec["frozen_cache"]}
            weights[name] = {n: t.detach().clone() for n, t in load_model(Path(tmp) / name).named_parameters()}
    diff = max((weights["cached"][n] - weights["library forward"][n]).abs().max().item() for n in weights["cached"])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.platform()}; {os.cpu_count()} CPUs; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load average {load}")
    print(f"arm {args.arm}, {args.steps} steps ({args.warmup} not counted), {Path(args.config).name} {' '.join(args.overrides)}")
    print("| forward | s/step | min/epoch | frozen outputs computed / read |\n|---|---:|---:|---|")
    for name, r in rows.items():
        fc = r["frozen_cache"]
        texts = f"{fc['computed']} / {fc['read_from_store']}" if fc else "every step"
        print(f"| {name} | {r['s_per_step']:.3f} | {r['min_per_epoch']:.2f} | {texts} |")
    ratio = rows["library forward"]["s_per_step"] / rows["cached"]["s_per_step"]
    print(f"cached is {ratio:.2f}x the library forward's speed; largest weight difference after training: {diff:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "ratio": ratio, "max_weight_diff": diff,
                                              "argv": argv or sys.argv[1:], "load_average": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
