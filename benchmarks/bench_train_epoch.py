"""Minutes per epoch of Home Depot training pairs: full fine-tuning vs frozen lower layers + cache.

Each method is a real :class:`gcl.training.trainer.Trainer` (offline MiniLM, 6 layers) on the same
training pairs, batch, seed (so the same batches) and optimiser; only ``model.freeze_layers`` (and
``model.cache_frozen``) differ. Steps are interleaved (one step of each method per round) so the
machine's load hits every method alike; the ratios are the figures to trust on a shared machine.

Printed per method: median s/step, pairs/s, projected minutes per epoch of the *full* training
split (``n_train_pairs / pairs_per_s``), trainable parameters, and, for cached methods, the
cache build (paid once per run): measured on the texts of the pairs used, and projected to the
full split's distinct texts by the per-text rate, plus the cache's memory.

    python benchmarks/bench_train_epoch.py                             # full, L=3,4,5; 2 threads
    python benchmarks/bench_train_epoch.py --layers 4 5 --steps 5 --pairs 4000
    python benchmarks/bench_train_epoch.py --no-cache-arm              # also L=5 without the cache

``--pairs N`` keeps a random subset of N training pairs (the cache build then runs over its texts
only, and is projected to the whole split); step time does not depend on N.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[3, 4, 5], help="freeze_layers values (cached)")
    p.add_argument("--no-cache-arm", action="store_true", help="also time the largest L without the cache")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=8, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pairs", type=int, default=6000, help="training pairs kept (0: all)")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def machine_info() -> str:
    load = os.getloadavg()
    return (f"platform: {platform.platform()}; python {platform.python_version()}; cpu count {os.cpu_count()}; "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def subset(splits, n: int, seed: int = 0):
    """``splits`` with a random ``n`` of the training judgments (all when n is 0 or larger)."""
    from dataclasses import replace

    j = splits.train.judgments
    if not n or n >= len(j):
        return splits
    keep = np.sort(np.random.default_rng(seed).choice(len(j), n, replace=False))
    return replace(splits, train=replace(splits.train, judgments=j.iloc[keep].reset_index(drop=True)))


def make_trainer(splits, out: str, batch: int, layers: int, cache: bool):
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer

    cfg = from_dict(TrainConfig, {
        "batch": {"batch_size": batch}, "optim": {"steps": 10**6},
        "model": {"freeze_layers": layers, "cache_frozen": cache},
        "eval": {"every": -1}, "progress": False, "out_dir": out})
    t0 = time.perf_counter()
    tr = Trainer(cfg, splits=splits)
    return tr, time.perf_counter() - t0


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from gcl.data.schema import DOC_ID, QUERY_ID
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig
    from gcl.training.frozen_cache import HiddenCache

    full = load_benchmark(DataConfig(source="homedepot"))
    n_full = len(full.train.judgments)
    texts_full = full.train.judgments[QUERY_ID].nunique() + full.train.judgments[DOC_ID].nunique()
    splits = subset(full, args.pairs)
    print(machine_info())
    print(f"Home Depot train split: {n_full} pairs, {texts_full} distinct texts; timing on "
          f"{len(splits.train.judgments)} pairs; batch {args.batch_size}; "
          f"{args.warmup} warm-up + {args.steps} timed steps each, interleaved")
    arms = [("full fine-tuning", 0, False)] + [(f"frozen L={L}, cached", L, True) for L in args.layers]
    if args.no_cache_arm:
        arms.append((f"frozen L={max(args.layers)}, uncached", max(args.layers), False))
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, L, cache in arms:
            tr, secs = make_trainer(splits, f"{tmp}/{L}{cache}", args.batch_size, L, cache)
            trainers[name] = tr
            if isinstance(tr.encoding.q_tokens, HiddenCache):
                q, d = tr.encoding.q_tokens, tr.encoding.d_tokens
                n_texts = len(q.lengths) + len(d.lengths)
                build = q.build_seconds + d.build_seconds
                tr.bench_cache = (build, n_texts, build / n_texts * texts_full, (q.nbytes + d.nbytes) / n_texts * texts_full)
            print(f"  built {name}: {secs:.1f}s (model load + tokenising + cache)", flush=True)
        times = {name: [] for name in trainers}
        for r in range(args.warmup + args.steps):
            for name, tr in trainers.items():
                t0 = time.perf_counter()
                tr.train_step()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    print(machine_info())
    ref = statistics.median(times[arms[0][0]])
    print(f"\n{'method':<24}{'s/step':>8}{'pairs/s':>9}{'min/epoch':>10}{'speed-up':>9}{'trained M':>10}"
          f"{'cache build s (measured/texts -> full split)':>46}{'cache GiB (full)':>18}")
    for name, tr in trainers.items():
        med = statistics.median(times[name])
        rate = args.batch_size / med
        trained = sum(p.numel() for p in tr.params) / 1e6
        cache = getattr(tr, "bench_cache", None)
        c_txt = f"{cache[0]:.1f}s/{cache[1]} -> {cache[2]:.0f}s" if cache else "-"
        c_mem = f"{cache[3] / 2**30:.2f}" if cache else "-"
        print(f"{name:<24}{med:>8.3f}{rate:>9.1f}{n_full / rate / 60:>10.2f}{ref / med:>8.2f}x{trained:>10.2f}"
              f"{c_txt:>46}{c_mem:>18}")
    print("\nmin/epoch = training steps only (n_train_pairs / pairs/s); a cached run pays its cache build once "
          "on top. Speed-ups are medians of interleaved steps (same load for every method).")


if __name__ == "__main__":
    main()
