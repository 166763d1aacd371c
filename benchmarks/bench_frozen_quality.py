"""Quality cost of frozen lower layers: dev-split metrics after equal steps, full vs frozen-L.

A short, equal-budget comparison for a loaded machine, not the converged one: every arm trains
``configs/homedepot_gcl.yaml`` (GCL, query-grouped batches of 64) for the same number of steps
on the same random subset of training *queries* (all their judged pairs), same seed, and is
scored on the dev split (carved from training queries; never a test split) with a dev corpus of
``--dev-corpus`` documents. The zero-shot model is scored first. One seed.

    python benchmarks/bench_frozen_quality.py                                  # 600 queries, 2 epochs, L=5,4 and full
    python benchmarks/bench_frozen_quality.py --queries 0 --epochs 3 --dev-corpus 10000   # whole split (slow)

The converged comparison (early stopping on dev) is two ``gcl train`` runs; see docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, nargs="+", default=[5, 4, 0], help="freeze_layers per arm (0: full)")
    p.add_argument("--queries", type=int, default=600, help="training queries kept (0: all)")
    p.add_argument("--epochs", type=float, default=2.0, help="epochs of the kept pairs, equal for every arm")
    p.add_argument("--evals", type=int, default=2, help="dev evaluations per run (evenly spaced)")
    p.add_argument("--dev-corpus", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", default="configs/homedepot_gcl.yaml")
    p.add_argument("--override", nargs="*", default=[], help="config overrides for every arm, e.g. optim.lr=2e-4")
    return p.parse_args(argv)


def keep_queries(splits, n: int, seed: int = 0):
    from gcl.data.schema import QUERY_ID

    train = splits.train
    if not n:
        return splits
    qids = train.judgments[QUERY_ID].unique()
    keep = set(np.random.default_rng(seed).choice(qids, min(n, len(qids)), replace=False).tolist())
    j = train.judgments[train.judgments[QUERY_ID].isin(keep)].reset_index(drop=True)
    return replace(splits, train=replace(train, judgments=j, queries=train.queries.loc[train.queries.index.isin(keep)]))


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from gcl.config import load_config
    from gcl.data.sources import load_benchmark
    from gcl.training.config import TrainConfig
    from gcl.training.dev_eval import DevEvaluator
    from gcl.training.trainer import Trainer

    base = load_config(TrainConfig, args.config, [])
    splits = keep_queries(load_benchmark(base.data), args.queries)
    n_pairs = len(splits.train.judgments)
    steps = max(1, round(args.epochs * n_pairs / base.batch.batch_size))
    every = max(1, steps // args.evals)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.config} {' '.join(args.override)}; {splits.train.judgments['query_id'].nunique()} "
          f"training queries, {n_pairs} pairs; {steps} steps of {base.batch.batch_size} "
          f"({args.epochs} epochs), dev every {every} steps, dev corpus {args.dev_corpus}", flush=True)
    dev = DevEvaluator(splits, replace(base.eval, dev_corpus_size=args.dev_corpus), seed=base.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for L in args.layers:
            cfg = load_config(TrainConfig, args.config, [
                f"optim.steps={steps}", f"optim.warmup_steps={max(1, steps // 10)}", f"eval.every={every}",
                f"model.freeze_layers={L}", f"out_dir={tmp}/L{L}", "progress=false", "eval.keep_best=false", *args.override])
            t0 = time.perf_counter()
            tr = Trainer(cfg, splits=splits, dev_eval=dev)
            setup = time.perf_counter() - t0
            if L == args.layers[0]:
                tr.model.eval()
                zero = dev(tr.model)
                print(f"zero-shot: ndcg@10 {zero['ndcg@10']:.4f}  err {zero['err']:.4f}", flush=True)
            t0 = time.perf_counter()
            res = tr.fit()
            secs = time.perf_counter() - t0
            name = "full fine-tuning" if L == 0 else f"frozen L={L}, cached"
            curve = "; ".join(f"step {h['step']}: ndcg@10 {h['dev/ndcg@10']:.4f} err {h['dev/err']:.4f}"
                              for h in res.history)
            print(f"{name}: setup {setup:.0f}s (cache build included), train+dev {secs:.0f}s; {curve}", flush=True)


if __name__ == "__main__":
    main()
