"""The same GCL run through SentenceTransformerTrainer + gcl.sentence_transformers and through gcl train.

Both fine-tune the offline all-MiniLM-L6-v2 on the same training split (``load_benchmark``: Home
Depot, or the synthetic set when the data is absent) with the same steps, batch size, seed,
``max_seq_length``, loss (linear weights over the table's score range, ``same_query="lower"``,
symmetric, T = 0.05), query-grouped batches (``docs_per_query``), AdamW (lr, weight decay 0.01,
no decay on biases/LayerNorm), constant learning rate, gradient clipping 1.0, fp32:

* **gcl** -- ``Trainer.train_step()`` (``batch.sampler: query_grouped``), as ``gcl train`` runs it;
* **st** -- ``SentenceTransformerTrainer(loss=GCLLoss(...), args=...(batch_sampler=GCLBatchSampler))``.

Printed: pairs/s of each over the steps after ``--warmup`` (wall time between step ends), their
ratio, the mean training loss, and dev metrics (``DevEvaluator``: dev queries of the training pool,
a corpus of their judged documents plus random others, graded metrics at depth 100) of the
untrained model and of each trained one, all evaluated the same way (saved, ``load_model``).
Both paths draw their batches with gcl's QueryGroupedSampler from the same seed; the ST sampler
replaces rows that repeat a document text, so batches can differ after the first such repeat,
and dropout draws differ: expect metrics within seed noise, not equal.

    python benchmarks/bench_st_vs_gcl.py --steps 20 --batch-size 32 --dev-corpus-size 2000   # a few minutes
    python benchmarks/bench_st_vs_gcl.py --steps 300 --batch-size 64                          # a full run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--docs-per-query", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2, help="steps not counted in the throughput")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-seq-length", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dev-corpus-size", type=int, default=2000)
    p.add_argument("--data", default="homedepot", help="homedepot (falls back to synthetic) | synthetic")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p.parse_args(argv)


def machine_info() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{platform.platform()}; python {platform.python_version()}; {os.cpu_count()} CPUs; "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average {load}")


def throughput(ends: list[float], start: float, batch: int, warmup: int) -> float:
    """Pairs/s between the end of step ``warmup`` and the last step end."""
    t0 = ends[warmup - 1] if warmup > 0 else start
    return batch * (len(ends) - warmup) / (ends[-1] - t0)


def run_gcl(args, bench, out: Path) -> dict:
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer

    cfg = from_dict(TrainConfig, {
        "data": {"source": args.data}, "seed": args.seed, "progress": False, "out_dir": str(out / "gcl-run"),
        "model": {"text_model": "minilm", "max_seq_length": args.max_seq_length},
        "loss": {"weight_fn": "linear", "same_query": "lower", "temperature": 0.05, "symmetric": True},
        "batch": {"batch_size": args.batch_size, "sampler": "query_grouped", "docs_per_query": args.docs_per_query},
        "optim": {"steps": args.steps, "lr": args.lr, "warmup_steps": 0, "schedule": "constant",
                  "clip_grad_norm": 1.0, "weight_decay": 0.01},
        "eval": {"every": -1},
    })
    trainer = Trainer(cfg, splits=bench)
    losses, ends = [], []
    start = time.perf_counter()
    for _ in range(args.steps):
        losses.append(trainer.train_step())
        ends.append(time.perf_counter())
    trainer.model.save(out / "gcl-model")
    return {"pairs_per_s": throughput(ends, start, args.batch_size, args.warmup), "mean_loss": float(np.mean(losses)),
            "model": str(out / "gcl-model")}


def run_st(args, bench, out: Path) -> dict:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import PrinterCallback, TrainerCallback

    from gcl.encoders.text import load_sentence_transformer
    from gcl.sentence_transformers import GCLBatchSampler, GCLLoss, to_st_dataset

    train = to_st_dataset(bench.train)
    scores = bench.train.judgments["score"]
    model = load_sentence_transformer("minilm")
    model.max_seq_length = args.max_seq_length
    loss = GCLLoss(model, weight_fn="linear", same_query="lower", temperature=0.05, symmetric=True,
                   score_range=(float(scores.min()), float(scores.max())))
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-run"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0,
        seed=args.seed, batch_sampler=functools.partial(GCLBatchSampler, docs_per_query=args.docs_per_query),
        report_to=[], save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    ends: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train, loss=loss, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    model.save(str(out / "st-model"))
    return {"pairs_per_s": throughput(ends, start, args.batch_size, args.warmup), "mean_loss": float(np.mean(losses)),
            "model": str(out / "st-model")}


def dev_metrics(bench, path: str, args) -> dict[str, float]:
    from gcl.encoders.base import load_model
    from gcl.training.config import EvalConfig
    from gcl.training.dev_eval import DevEvaluator

    evaluator = DevEvaluator(bench, EvalConfig(dev_corpus_size=args.dev_corpus_size), seed=args.seed)
    return evaluator(load_model(path))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from gcl.config import from_dict
    from gcl.data.sources import load_benchmark
    from gcl.encoders.text import minilm_path
    from gcl.training.config import TrainConfig

    print(machine_info())
    bench = load_benchmark(from_dict(TrainConfig, {"data": {"source": args.data}}).data, announce=print)
    print(f"data: {bench.name}; {len(bench.train.judgments)} training pairs; steps {args.steps}, batch "
          f"{args.batch_size}, docs/query {args.docs_per_query}, seed {args.seed}, lr {args.lr}")
    out = Path(tempfile.mkdtemp(prefix="bench-st-vs-gcl-"))
    results = {"gcl": run_gcl(args, bench, out), "st": run_st(args, bench, out)}
    rows = {"untrained": dev_metrics(bench, str(minilm_path()), args)}
    rows.update({name: dev_metrics(bench, r["model"], args) for name, r in results.items()})
    print(f"\n{'path':<12}{'pairs/s':>10}{'mean loss':>11}")
    for name, r in results.items():
        print(f"{name:<12}{r['pairs_per_s']:>10.2f}{r['mean_loss']:>11.4f}")
    ratio = results["st"]["pairs_per_s"] / results["gcl"]["pairs_per_s"]
    print(f"throughput ratio st / gcl: {ratio:.2f}x (pairs/s after {args.warmup} warm-up steps)")
    metrics = list(rows["untrained"])
    print(f"\ndev ({args.dev_corpus_size} docs)" + "".join(f"{m:>12}" for m in metrics))
    for name, vals in rows.items():
        print(f"{name:<{len(f'dev ({args.dev_corpus_size} docs)')}}" + "".join(f"{vals[m]:>12.4f}" for m in metrics))
    print(f"\nafter: {machine_info()}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "train": results, "dev": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
