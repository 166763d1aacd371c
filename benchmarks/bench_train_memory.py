"""Peak memory of one training step: large batches with and without GradCache.

Each setting runs in a fresh subprocess (torch's allocator keeps freed memory, so one process
cannot measure several settings) that builds the trainer on MiniLM (``max_seq_length`` 32) and
the Home Depot training pairs (the synthetic set is too small for these batches), records its
resident set size, runs one ``train_step`` and reports its peak RSS (``getrusage`` ``ru_maxrss``).
The parent prints the peak, the peak minus the pre-step RSS (what the step itself added) and the
step's wall time.

Without GradCache the activations of the whole batch are kept for the backward pass, so memory
grows linearly with the batch; with GradCache only one chunk's are. Batch 4096 without GradCache
is run only when the extrapolation from batch 1024 (4 x the step's increment) stays under
``--limit-gb`` (default 16) and under 80% of the memory available now; otherwise it is skipped
and the extrapolated figure printed.

    python benchmarks/bench_train_memory.py                       # 1024 and 4096, GradCache off / chunk 128
    python benchmarks/bench_train_memory.py --batches 256 --chunk 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

GB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--chunk", type=int, default=128, help="GradCache chunk size")
    p.add_argument("--max-seq-length", type=int, default=32)
    p.add_argument("--data", default="homedepot")
    p.add_argument("--limit-gb", type=float, default=16.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", nargs=2, type=int, metavar=("BATCH", "CHUNK"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer

    batch, chunk = args.child
    cfg = from_dict(TrainConfig, {
        "data": {"source": args.data},
        "model": {"text_model": "minilm", "max_seq_length": args.max_seq_length},
        "batch": {"batch_size": batch, "grad_cache_chunk": chunk or None},
        "optim": {"steps": 1, "warmup_steps": 0}, "eval": {"every": -1}, "progress": False,
        "out_dir": tempfile.mkdtemp(prefix="bench-mem-"),
    })
    trainer = Trainer(cfg)
    before = rss_bytes()
    t = time.perf_counter()
    loss = trainer.train_step()
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"batch": batch, "chunk": chunk, "before": before, "peak": peak, "seconds": seconds,
                      "loss": loss, "pairs": len(trainer.pairs), "data": trainer.splits.name}))
    return 0


def run_setting(args: argparse.Namespace, batch: int, chunk: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(batch), str(chunk), "--max-seq-length", str(args.max_seq_length),
           "--data", args.data, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"setting batch={batch} chunk={chunk} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    import torch

    print(f"platform: {platform.platform()}; python {platform.python_version()}; cpu count {os.cpu_count()}; "
          f"torch {torch.__version__} ({args.threads} thread(s) per run); memory available "
          f"{available_bytes() / GB:.1f} GiB; load average {os.getloadavg()[0]:.2f}")
    print(f"one train_step, MiniLM, max_seq_length {args.max_seq_length}, data {args.data}; "
          f"GradCache chunk {args.chunk}; one fresh process per setting\n")
    print(f"{'batch':>6} {'GradCache':>10} {'peak RSS GiB':>13} {'step adds GiB':>14} {'step s':>8}")
    results: dict[tuple[int, int], dict] = {}
    for batch in sorted(args.batches):
        for chunk in (0, args.chunk):
            label = f"{batch:>6} {('chunk ' + str(chunk)) if chunk else 'off':>10}"
            if chunk == 0 and batch > min(args.batches) and (min(args.batches), 0) in results:
                ref = results[(min(args.batches), 0)]
                predicted = ref["before"] + (ref["peak"] - ref["before"]) * batch / ref["batch"]
                if predicted > args.limit_gb * GB or predicted > 0.8 * available_bytes():
                    print(f"{label} {'skipped':>13}   extrapolated peak ~{predicted / GB:.1f} GiB from batch "
                          f"{ref['batch']} (> {args.limit_gb:g} GiB limit or 80% of available memory)", flush=True)
                    continue
            r = run_setting(args, batch, chunk)
            results[(batch, chunk)] = r
            print(f"{label} {r['peak'] / GB:>13.2f} {(r['peak'] - r['before']) / GB:>14.2f} {r['seconds']:>8.1f}",
                  flush=True)
    any_r = next(iter(results.values()))
    print(f"\ndata: {any_r['data']} ({any_r['pairs']} training pairs). Peak RSS is the whole process "
          "(Python, torch, model, optimiser state, tokenised texts); 'step adds' is the peak minus the RSS "
          "just before the step.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
