"""Does the image field carry signal? GCL with image+title fusion vs title-only vs image-only,
and GCL vs the binary baseline, on generated products (gcl.data.synthetic_products), >= 3 seeds.

The products' pattern and shape appear only in their images, colour in every image but in only
half of the titles, and the category only in titles; queries name the category and one or two
visual attributes; a judged product's grade is the number of named attributes it has (1..3).

Every run trains the same way on the same data (only the model's document fields or the
score-to-weight function change): MiniLM text tower (frozen, with a trained identity-initialised
projection) for queries and titles, EfficientNet-Lite0 (ImageNet weights, frozen, features cached)
with a trained projection for images, ``steps`` steps of batch ``batch`` at the same learning
rate schedule. Evaluation: ``gcl evaluate --protocol all`` on the four splits.

    python experiments/multimodal_bench.py                      # the documented run (~10-15 min, 2 cores)
    python experiments/multimodal_bench.py --quick              # a smoke run (1 seed, few steps)

Writes ``runs.jsonl`` (one line per run and split), ``results.md`` (table) and ``results.png``
to ``--docs`` (default docs/results/multimodal).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
METRICS = ("ndcg@10", "err", "rbp@0.9", "map@1000", "mrr@1000")

TEXT = {"model": "minilm", "freeze": True, "project": True, "max_seq_length": 16}
VARIANTS = {
    # name: (document fields, weight function)
    "gcl_image+title": ([("image_local", "image", 0.5), ("title", "text", 0.5)], "linear"),
    "gcl_title_only": ([("title", "text", 1.0)], "linear"),
    "gcl_image_only": ([("image_local", "image", 1.0)], "linear"),
    "binary_image+title": ([("image_local", "image", 0.5), ("title", "text", 0.5)], "constant"),
    "gcl_image+title_0.9/0.1": ([("image_local", "image", 0.9), ("title", "text", 0.1)], "linear"),
}


def train_config(args, variant: str, seed: int, out: Path):
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig

    fields, weight_fn = VARIANTS[variant]
    towers = {"text": dict(TEXT)}
    if any(kind == "image" for _, kind, _ in fields):
        towers["image"] = {"type": "efficientnet", "freeze": True, "image_size": args.image_size}
    return from_dict(TrainConfig, {
        "data": {"source": str(args.data)},
        "model": {"multifield": {
            "towers": towers,
            "query_fields": [{"name": "query", "tower": "text"}],
            "doc_fields": [{"name": n, "tower": kind, "weight": w} for n, kind, w in fields],
        }},
        "loss": {"weight_fn": weight_fn, "temperature": 0.05, "same_query": "lower"},
        "batch": {"batch_size": args.batch, "sampler": "query_grouped", "docs_per_query": 4},
        "optim": {"steps": args.steps, "lr": args.lr, "warmup_steps": max(1, args.steps // 10), "weight_decay": 0.0},
        "eval": {"every": -1},
        "images": {"cache_dir": str(args.out / "feature_cache"), "batch_size": 64},
        "seed": seed,
        "out_dir": str(out),
        "progress": False,
        "log_every": max(1, args.steps // 5),
    })


def run_one(args, variant: str, seed: int) -> list[dict]:
    from gcl.cli.main import main as cli_main
    from gcl.training.trainer import Trainer

    out = args.out / f"{variant.replace('/', '_')}-seed{seed}"
    eval_dir = out / "eval"
    if not (eval_dir / "results.json").exists():
        t0 = time.perf_counter()
        trainer = Trainer(train_config(args, variant, seed, out))
        trainer.model.image_cache_dir = str(args.out / "feature_cache")
        trainer.fit()
        train_s = time.perf_counter() - t0
        fields = ",".join(f.name for f in trainer.model.doc_fields)
        rc = cli_main(["evaluate", "--model", str(out / "final"), "--data", str(args.data), "--doc-fields", fields,
                       "--protocol", "all", "--no-progress", "--out", str(eval_dir)])
        if rc != 0:
            raise SystemExit(f"evaluation of {out} failed")
        (out / "train_seconds.txt").write_text(f"{train_s:.1f}\n")
    results = json.loads((eval_dir / "results.json").read_text())["splits"]
    train_s = float((out / "train_seconds.txt").read_text())
    return [{"variant": variant, "seed": seed, "split": s, "train_seconds": train_s,
             **{m: results[s]["summary"][m] for m in METRICS}} for s in SPLITS if s in results]


def summarise(rows: list[dict], variants: list[str]) -> dict:
    out = {}
    for v in variants:
        for s in SPLITS:
            sel = [r for r in rows if r["variant"] == v and r["split"] == s]
            if sel:
                out[(v, s)] = {m: (float(np.mean([r[m] for r in sel])), float(np.std([r[m] for r in sel])), len(sel))
                               for m in METRICS}
    return out


PAIRS = (("gcl_image+title", "gcl_title_only"), ("gcl_image+title", "gcl_image_only"),
         ("gcl_image+title", "binary_image+title"))


def paired_lines(rows: list[dict], variants: list[str]) -> list[str]:
    """Per-seed differences a - b (same seed: same data order and initialisation), mean ± std."""
    val = {(r["variant"], r["seed"], r["split"]): r for r in rows}
    lines = ["**Paired differences** (same seed), mean ± std over seeds, and seeds where the first is ahead", "",
             "| a − b | metric | " + " | ".join(SPLITS) + " |", "|---|---|" + "---:|" * len(SPLITS)]
    for a, b in PAIRS:
        if a not in variants or b not in variants:
            continue
        for m in ("ndcg@10", "err"):
            cells = []
            for s in SPLITS:
                seeds = sorted({r["seed"] for r in rows if r["variant"] == a and (b, r["seed"], s) in val})
                d = np.array([val[(a, k, s)][m] - val[(b, k, s)][m] for k in seeds if (a, k, s) in val])
                cells.append(f"{d.mean():+.4f} ± {d.std():.4f} ({int((d > 0).sum())}/{len(d)})" if len(d) else "-")
            lines.append(f"| {a} − {b} | {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_docs(args, rows: list[dict], variants: list[str], seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = args.docs
    docs.mkdir(parents=True, exist_ok=True)
    with open(docs / "runs.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    summ = summarise(rows, variants)
    per_run = {(r["variant"], r["seed"]): r["train_seconds"] for r in rows}
    train_mean = float(np.mean(list(per_run.values()))) if per_run else float("nan")
    lines = [f"Generated: `python experiments/multimodal_bench.py {' '.join(sys.argv[1:])}`".rstrip(), "",
             f"{args.products} products, {args.queries} queries, {args.image_size} px images, seeds "
             f"{args.seeds}, {args.steps} steps of batch {args.batch}; training {train_mean:.0f} s per run on average "
             f"({len(per_run)} runs; this invocation {seconds / 60:.1f} min, runs already done are skipped).", ""]
    for m in ("ndcg@10", "err", "mrr@1000"):
        lines += [f"**{m}** (mean ± std over seeds)", "", "| variant | " + " | ".join(SPLITS) + " |",
                  "|---|" + "---:|" * len(SPLITS)]
        for v in variants:
            cells = [f"{summ[(v, s)][m][0]:.4f} ± {summ[(v, s)][m][1]:.4f}" if (v, s) in summ else "-" for s in SPLITS]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += paired_lines(rows, variants)
    (docs / "results.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        means = [summ.get((v, s), {"ndcg@10": (np.nan, 0, 0)})["ndcg@10"][0] for s in SPLITS]
        stds = [summ.get((v, s), {"ndcg@10": (0, 0, 0)})["ndcg@10"][1] for s in SPLITS]
        ax.bar(np.arange(len(SPLITS)) + i * width, means, width, yerr=stds, label=v, capsize=2)
    ax.set_xticks(np.arange(len(SPLITS)) + width * (len(variants) - 1) / 2, SPLITS)
    ax.set_ylabel("nDCG@10 (mean ± std over seeds)")
    ax.set_title("Generated products: image+title fusion vs single fields, GCL vs binary")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(docs / "results.png", dpi=110)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "multimodal_bench")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "results" / "multimodal")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--products", type=int, default=1000)
    p.add_argument("--queries", type=int, default=400)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="1 seed, 20 steps, small data (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.products, args.queries = [0], 20, 300, 120
        args.out, args.docs = args.out.with_name(args.out.name + "_quick"), args.out.with_name("multimodal_quick_docs")
    import torch

    torch.set_num_threads(args.threads)
    from gcl.data.synthetic_products import write_marqo_dataset

    args.data = args.out / "data"
    if not (args.data / "splits.json").exists():
        write_marqo_dataset(args.data, n_products=args.products, n_queries=args.queries, image_size=args.image_size)
    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for v in args.variants:
            t = time.perf_counter()
            rows += run_one(args, v, seed)
            print(f"[{v} seed {seed}] {time.perf_counter() - t:.0f}s", file=sys.stderr)
    write_docs(args, rows, args.variants, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
