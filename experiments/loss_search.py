"""Loss search on the dev split only (issue 12 §5): which loss carries graded training over to
new queries?

Every arm trains ``configs/homedepot_gcl_fast.yaml`` (MiniLM, lower 4 layers frozen and cached,
query-grouped batches of 64, AdamW lr 5e-5, linear decay) with a few loss keys changed, on the
same training queries for the same number of steps and the same seed, and is scored on the
**dev split** (training-pool queries withheld from training, ``splits.dev``; never a test
split) against a dev corpus of every document judged for a dev query plus random other
training-corpus documents. Dev queries are never trained on, so the dev metrics measure what
generalises to new queries. The arm with the best dev metric becomes a named configuration; the
test splits are scored only afterwards, by ``experiments/results_table.py``.

Each finished (arm, seed) is a line of ``<out>/search.jsonl`` (dev metrics after every
evaluation, seconds, load); a re-run skips finished lines, so an interrupted search continues.
``--report`` prints the table (best dev value per arm; paired difference to the first arm).

    python experiments/loss_search.py --out docs/results/loss_search                 # all arms, seed 0
    python experiments/loss_search.py --out docs/results/loss_search --arms gcl soft --seeds 1
    python experiments/loss_search.py --out docs/results/loss_search --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

BASE = "configs/homedepot_gcl_fast.yaml"
BM25_RERANK = "bm25_dev_rerank.json"  # --bm25-rerank's record
# name -> loss/batch overrides on top of BASE (BASE itself is the paper's GCL: linear, lower, T 0.05).
# binary on every judged pair, a quarter of the batch as 4 queries x 4 documents (same-query columns masked)
_BINARY_GF025 = ["loss.weight_fn=constant", "loss.same_query=mask", "batch.group_fraction=0.25"]

ARMS: dict[str, list[str]] = {
    "binary-thresholded": ["loss.weight_fn=constant", "loss.positive_threshold=2.0", "loss.same_query=mask"],
    "binary": ["loss.weight_fn=constant", "loss.same_query=mask"],
    "gcl": [],
    "gcl-t0.1": ["loss.temperature=0.1"],
    "gcl-t0.02": ["loss.temperature=0.02"],
    "gcl-learnable-t": ["loss.learnable_temperature=true"],
    "gcl-one-way": ["loss.symmetric=false"],
    "gcl-group8": ["batch.docs_per_query=8"],
    "gcl-exponential": ["loss.weight_fn=exponential"],
    "gcl-mask": ["loss.same_query=mask"],
    "soft": ["loss.targets=soft", "loss.same_query=mask"],
    "soft-tt0.5": ["loss.targets=soft", "loss.same_query=mask", "loss.target_temperature=0.5"],
    "soft-t0.02": ["loss.targets=soft", "loss.same_query=mask", "loss.temperature=0.02"],
    "soft-exponential": ["loss.targets=soft", "loss.same_query=mask", "loss.weight_fn=exponential"],
    "lambda": ["loss.lambda_weight=1.0"],
    "soft-lambda": ["loss.targets=soft", "loss.same_query=mask", "loss.lambda_weight=1.0"],
    # mined negatives (loss.mined_negatives, docs/training.md): 2 per batch query, the pool mined
    # every 50 steps from each query's top 3 + 30 unjudged documents; with the binary baseline too,
    # so that a gain of mining alone is not read as a gain of the grades
    "gcl-mined2": ["loss.mined_negatives=2", "loss.mine_every=50"],
    "binary-thresholded-mined2": ["loss.weight_fn=constant", "loss.positive_threshold=2.0", "loss.same_query=mask",
                                  "loss.mined_negatives=2", "loss.mine_every=50"],
    # batch composition (30 Nov, fifth session): the 3-epoch table's dev curves put the random-batch
    # binary arm ahead of the query-grouped one, so the graded losses with more distinct queries
    # per batch: random pairs, half the batch as groups of 4, groups of 2 (32 queries)
    "binary-thresholded-random": ["loss.weight_fn=constant", "loss.positive_threshold=2.0", "loss.same_query=mask",
                                  "batch.sampler=random"],
    "gcl-random": ["batch.sampler=random"],
    "gcl-gf0.5": ["batch.group_fraction=0.5"],
    "gcl-group2": ["batch.docs_per_query=2"],
    "soft-gf0.5": ["loss.targets=soft", "loss.same_query=mask", "batch.group_fraction=0.5"],
    # equal query diversity (1 Dec, seventh session): at batch 128, 64 queries x 2 documents
    # against 128 random pairs, binary and GCL each, so that the within-query term (GCL `lower`)
    # is compared with the binary loss at the same batch composition
    "binary-thresholded-random-b128": ["loss.weight_fn=constant", "loss.positive_threshold=2.0",
                                       "loss.same_query=mask", "batch.sampler=random", "batch.batch_size=128"],
    "gcl-random-b128": ["batch.sampler=random", "batch.batch_size=128"],
    "binary-thresholded-group2-b128": ["loss.weight_fn=constant", "loss.positive_threshold=2.0", "loss.same_query=mask",
                                       "batch.docs_per_query=2", "batch.batch_size=128"],
    "gcl-group2-b128": ["batch.docs_per_query=2", "batch.batch_size=128"],
    # weak pairs as retrieval signal (1 Dec, eighth session): MNRL on every judged pair is the main
    # table's best novel-query model, and no trainer arm had every pair with random batches; a
    # linear weight floor of 0.5 keeps the graded order while grade-1 pairs weigh 0.5, not 0.1
    "binary-random": ["loss.weight_fn=constant", "loss.same_query=mask", "batch.sampler=random"],
    "gcl-random-floor0.5": ["batch.sampler=random", "loss.weight_params={floor: 0.5}"],
    # retrieval from random pairs, order from a few query groups (1 Dec, eighth session): the InfoNCE
    # term on every judged pair (binary, the best dev retrieval signal) with a quarter of the batch
    # drawn as 4 queries x 4 documents, with and without the LambdaRank pairwise term on those groups
    "binary-gf0.25": _BINARY_GF025,
    "binary-gf0.25-lambda": [*_BINARY_GF025, "loss.lambda_weight=1.0"],
    "binary-gf0.25-lambda0.1": [*_BINARY_GF025, "loss.lambda_weight=0.1"],
    # a cross-query graded term with random batches (1 Dec, thirteenth session): CoSENT on the
    # batch's positive pairs (loss.cosent_weight, docs/losses.md), which orders pairs of different
    # queries by grade and so needs no query groups, the cost of every within-query term so far
    "gcl-random-cosent": ["batch.sampler=random", "loss.cosent_weight=1.0"],
    "gcl-random-cosent0.1": ["batch.sampler=random", "loss.cosent_weight=0.1"],
    # the weight function on the dev split (2 Dec, fifteenth session): the paper's alternatives to the
    # linear weight, with random batches (the base of gcl-best) and with query groups
    "gcl-random-exponential": ["batch.sampler=random", "loss.weight_fn=exponential"],
    "gcl-random-power": ["batch.sampler=random", "loss.weight_fn=power"],
    "gcl-random-reciprocal": ["batch.sampler=random", "loss.weight_fn=reciprocal_rank"],
    "gcl-power": ["loss.weight_fn=power"],
    "gcl-reciprocal": ["loss.weight_fn=reciprocal_rank"],
    "zero-shot": ["optim.lr=0"],
}

# Two-stage arms (a curriculum): name -> (stage-1 arm, stage-2 arm, share of the steps in stage 2).
# Stage 2 starts from stage 1's saved model (``model.text_model`` = its ``final/``, a
# sentence-transformers directory; the frozen lower layers are unchanged, so their stored outputs
# are reused) with a fresh optimiser and its own warm-up and linear decay; the two stages together
# take the same steps as every other arm. The control restarts the same loss, so that what the
# restart itself does is not read as a gain of the second loss.
CURRICULA: dict[str, tuple[str, str, float]] = {
    # retrieval from random batches first, then grouped GCL to learn the within-query order (1 Dec, twelfth session)
    "gcl-random-then-gcl": ("gcl-random", "gcl", 0.25),
    "binary-random-then-gcl": ("binary-random", "gcl", 0.25),
    "gcl-random-then-gcl-random": ("gcl-random", "gcl-random", 0.25),
    # half the steps grouped: the quarter moved the trained-query order by ~5 points (rule: 10)
    "gcl-random-then-gcl-0.5": ("gcl-random", "gcl", 0.5),
    "gcl-random-then-gcl-random-0.5": ("gcl-random", "gcl-random", 0.5),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results/loss_search", help="directory of search.jsonl and search.md")
    p.add_argument("--arms", nargs="+", default=None,
                   help=f"arms to run (default all, none with --bm25-rerank alone): {', '.join(ARMS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--queries", type=int, default=3000, help="training queries kept, all their pairs (0: all)")
    p.add_argument("--epochs", type=float, default=2.0, help="passes over the kept pairs (same for every arm)")
    p.add_argument("--evals", type=int, default=4, help="dev evaluations per run, evenly spaced")
    p.add_argument("--dev-corpus", type=int, default=5000, help="dev corpus size (judged + random others)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-rerank", type=int, default=0,
                   help="also rank only the judged documents of this many trained queries after training "
                        "(in-domain order, recorded with its ideal / random ceilings; 0: off)")
    p.add_argument("--dev-rerank", action="store_true",
                   help="also rank only the judged documents of every dev query after training "
                        "(the order that carries over to new queries, with its ceilings)")
    p.add_argument("--bm25-rerank", action="store_true",
                   help="also rank every dev query's judged documents with BM25 (no training; once, into "
                        "<out>/bm25_dev_rerank.json): whether lexical match carries the order new queries need")
    p.add_argument("--report", action="store_true", help="only print/write the table from search.jsonl")
    p.add_argument("--extra", nargs="*", default=[], help="overrides for every arm (key=value)")
    args = p.parse_args(argv)
    unknown = [a for a in (args.arms or []) if a not in ARMS and a not in CURRICULA]
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join([*ARMS, *CURRICULA])}")
    return args


def keep_queries(splits, n: int, seed: int = 0):
    """The same ``n`` random training queries (all their judged pairs) for every arm."""
    from gcl.data.schema import QUERY_ID

    if not n:
        return splits
    train = splits.train
    qids = np.sort(train.judgments[QUERY_ID].unique())
    keep = set(np.random.default_rng(seed).choice(qids, min(n, len(qids)), replace=False).tolist())
    j = train.judgments[train.judgments[QUERY_ID].isin(keep)].reset_index(drop=True)
    return replace(splits, train=replace(train, judgments=j, queries=train.queries.loc[train.queries.index.isin(keep)]))


def arm_steps(epochs: float, evals: int, n_pairs: int, batch_size: int) -> tuple[int, int]:
    """``(steps, eval_every)`` for ``epochs`` epochs of ``n_pairs`` at ``batch_size``, ``evals`` dev evaluations."""
    steps = max(1, round(epochs * n_pairs / batch_size))
    return steps, max(1, steps // evals)


def stage_steps(steps: int, share: float) -> tuple[int, int]:
    """``(stage-1 steps, stage-2 steps)``: ``share`` of ``steps`` (rounded, at least 1) in stage 2."""
    second = min(steps - 1, max(1, round(share * steps)))
    return steps - second, second


class JudgedRerank:
    """Judged re-rank of ``n`` queries of ``split`` (all when ``n`` is 0; sampled once, seed 0):
    each query's judged documents ranked by the model, nothing else, against the ideal and random
    order of the same documents (:mod:`gcl.evaluation.ceilings`). On trained queries
    (``--train-rerank``) it measures the in-domain order a loss learns, with retrieval taken out;
    on the dev queries (``--dev-rerank``), never trained on, the order that carries over to new
    queries."""

    def __init__(self, split, n: int = 0, name: str = "rerank", metrics=("ndcg@10", "err")) -> None:
        from gcl.data.schema import DOC_ID, QUERY_ID
        from gcl.evaluation.ceilings import ordering_ceilings
        from gcl.evaluation.evaluator import Protocol, prepare_task

        qids = np.sort(split.judgments[QUERY_ID].unique())
        keep = np.random.default_rng(0).choice(qids, min(n, len(qids)), replace=False) if n else qids
        sub = split.subset(query_ids=keep, name=name)
        sub.documents = sub.documents.loc[sub.documents.index.isin(sub.judgments[DOC_ID].unique())]
        self.protocol = Protocol(name="all", depth=100, metrics=tuple(metrics))
        self.task = prepare_task(sub, self.protocol, name=name)
        self.ceilings = ordering_ceilings(self.task, self.protocol.metrics)

    def __call__(self, model=None, retriever=None) -> dict:
        """The order of ``model`` (a dense retriever over it), or of ``retriever`` (e.g. BM25)."""
        from gcl.evaluation.judged_rerank import evaluate_judged_rerank
        from gcl.evaluation.retrievers import DenseRetriever

        from results_report import capture  # share of the headroom: (model - random) / (ideal - random)

        retriever = retriever if retriever is not None else DenseRetriever(model, show_progress=False)
        got = evaluate_judged_rerank(self.task, retriever, self.protocol).summary
        ceil = self.ceilings.to_dict()
        return {"queries": len(self.task.queries), "metrics": got, "ideal": ceil["ideal"], "random": ceil["random"],
                "share": {m: capture(got[m], ceil, m) for m in got}}


def done(path: Path) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    return {(r["arm"], r["seed"]) for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip())}


def run(args) -> None:
    import torch

    from gcl.config import load_config
    from gcl.data.sources import load_benchmark
    from gcl.training.config import TrainConfig
    from gcl.training.dev_eval import DevEvaluator
    from gcl.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "search.jsonl"
    finished = done(log)
    base = load_config(TrainConfig, BASE, list(args.extra))
    splits = keep_queries(load_benchmark(base.data), args.queries)
    n_pairs = len(splits.train.judgments)
    steps, every = arm_steps(args.epochs, args.evals, n_pairs, base.batch.batch_size)
    dev = DevEvaluator(splits, replace(base.eval, dev_corpus_size=args.dev_corpus), seed=0)
    print(f"{splits.train.judgments['query_id'].nunique()} training queries, {n_pairs} pairs; {steps} steps of "
          f"{base.batch.batch_size} ({args.epochs} epochs), dev every {every} steps; "
          f"{splits.dev.judgments['query_id'].nunique()} dev queries, dev corpus {args.dev_corpus}",
          flush=True)
    rerank = JudgedRerank(splits.train, args.train_rerank, "train_rerank") if args.train_rerank else None
    dev_rerank = JudgedRerank(splits.dev, 0, "dev_rerank") if args.dev_rerank or args.bm25_rerank else None
    bm25_file = out / BM25_RERANK
    if args.bm25_rerank and not bm25_file.exists():
        from gcl.evaluation.retrievers import BM25Retriever

        got = dev_rerank(retriever=BM25Retriever())
        bm25_file.write_text(json.dumps(got, indent=1) + "\n")
        print(f"BM25 dev re-rank ERR {got['metrics']['err']:.4f} ({got['share']['err']:.1%} of the headroom)", flush=True)
    if not args.dev_rerank:
        dev_rerank = None
    arms = args.arms if args.arms is not None else ([] if args.bm25_rerank else list(ARMS))  # --bm25-rerank alone trains nothing
    for seed in args.seeds:
        for arm in arms:
            if (arm, seed) in finished:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    plan = arm_plan(arm, seed, n_pairs, tmp, args)
                except Exception as e:  # an arm needing a loss option this checkout lacks
                    print(f"skip {arm}: {e}", flush=True)
                    continue
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                history, offset = [], 0
                for stage, cfg in enumerate(plan):
                    if stage:  # stage 2 starts from stage 1's saved model
                        cfg = replace(cfg, model=replace(cfg.model, text_model=str(Path(plan[stage - 1].out_dir) / "final")))
                    trainer = Trainer(cfg, splits=splits, dev_eval=dev)
                    res = trainer.fit()
                    history += [{**h, "step": h["step"] + offset, "stage": stage} for h in res.history]
                    offset += cfg.optim.steps
                secs = time.perf_counter() - t0
                train_rerank = rerank(trainer.model) if rerank is not None else None
                dev_order = dev_rerank(trainer.model) if dev_rerank is not None else None
            steps = offset
            rec = {"arm": arm, "seed": seed, "overrides": ARMS.get(arm, list(CURRICULA.get(arm, ()))),
                   "extra": args.extra, "steps": steps,
                   "queries": args.queries, "epochs": args.epochs, "dev_corpus": args.dev_corpus,
                   "history": history, "seconds": round(secs, 1), "load_start": load0,
                   "load_end": os.getloadavg()[0], "threads": args.threads, "machine": platform.processor() or platform.machine()}
            if train_rerank is not None:
                rec["train_rerank"] = train_rerank
            if dev_order is not None:
                rec["dev_rerank"] = dev_order
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            last = history[-1]
            print(f"{arm} seed {seed}: {secs:.0f}s; " + "; ".join(
                f"step {h['step']}: ndcg@10 {h['dev/ndcg@10']:.4f} err {h['dev/err']:.4f}" for h in history)
                + f" (final {last['dev/ndcg@10']:.4f}/{last['dev/err']:.4f})"
                + (f"; trained-query re-rank ERR {train_rerank['metrics']['err']:.4f} "
                   f"({train_rerank['share']['err']:.0%} of the headroom)" if train_rerank else "")
                + (f"; dev re-rank ERR {dev_order['metrics']['err']:.4f} "
                   f"({dev_order['share']['err']:.1%} of the headroom)" if dev_order else ""), flush=True)


def arm_plan(arm: str, seed: int, n_pairs: int, tmp: str, args) -> list:
    """The training config of each stage of ``arm`` (one, or two for a :data:`CURRICULA` arm):
    the same epochs for every arm (an arm with another batch size gets its own steps), split
    between the stages of a curriculum."""
    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    stages = [(ARMS[arm], None)] if arm in ARMS else [(ARMS[CURRICULA[arm][0]], 0), (ARMS[CURRICULA[arm][1]], 1)]
    batch_size = load_config(TrainConfig, BASE, [*args.extra, *stages[0][0]]).batch.batch_size
    steps, every = arm_steps(args.epochs, args.evals, n_pairs, batch_size)
    split = stage_steps(steps, CURRICULA[arm][2]) if arm in CURRICULA else (steps,)
    cfgs = []
    for (overrides, stage), n in zip(stages, split):
        cfg = load_config(TrainConfig, BASE, [
            f"optim.steps={n}", f"optim.warmup_steps={max(1, n // 10)}",
            f"eval.every={every}", "eval.patience=0", "eval.keep_best=false",
            f"seed={seed}", f"out_dir={tmp}/run{'' if stage is None else stage + 1}", "progress=false",
            "checkpoint_every=1000000", *args.extra, *overrides])
        if cfg.batch.batch_size != batch_size:
            raise ValueError(f"{arm}: the stages of a curriculum must have the same batch size")
        cfgs.append(cfg)
    return cfgs


def order_share(rs: list[dict], key: str, fmt: str) -> str:
    """Mean share of the ERR headroom of the runs' judged re-rank ``key``; "—" unless every run has it."""
    shares = [r[key]["share"]["err"] for r in rs if key in r]
    return format(np.mean(shares), fmt) if shares and len(shares) == len(rs) else "—"


def report(args) -> str:
    log = Path(args.out) / "search.jsonl"
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    metrics = ("ndcg@10", "err", "rbp@0.9", "map@100")
    by_arm: dict[str, list[dict]] = {}
    for r in recs:
        by_arm.setdefault(r["arm"], []).append(r)
    ref = "binary-thresholded" if "binary-thresholded" in by_arm else next(iter(by_arm))
    ref_final = {r["seed"]: r["history"][-1] for r in by_arm[ref]}
    lines = [f"Dev split only (never a test split). Final evaluation after the fixed budget; "
             f"Δ = paired difference to `{ref}` at the same seed (mean over seeds).", "",
             ("Trained-query order = judged re-rank of trained queries (`--train-rerank`), share of the ERR headroom "
              "between random and ideal order of their judged documents; new-query order = the same for every dev "
              "query (`--dev-rerank`) (— where not measured)."), "",
             "| arm | seeds | " + " | ".join(f"dev {m}" for m in metrics)
             + " | Δ nDCG@10 | Δ ERR | best-step nDCG@10 | trained-query order | new-query order | s/run |",
             "|---|---|" + "---:|" * (len(metrics) + 6)]
    for arm, rs in by_arm.items():
        fin = [r["history"][-1] for r in rs]
        vals = [f"{np.mean([h[f'dev/{m}'] for h in fin]):.4f}" for m in metrics]
        paired = [(r["history"][-1], ref_final[r["seed"]]) for r in rs if r["seed"] in ref_final]
        d_n = np.mean([a["dev/ndcg@10"] - b["dev/ndcg@10"] for a, b in paired]) if paired else float("nan")
        d_e = np.mean([a["dev/err"] - b["dev/err"] for a, b in paired]) if paired else float("nan")
        best = np.mean([max(h["dev/ndcg@10"] for h in r["history"]) for r in rs])
        order, new_order = order_share(rs, "train_rerank", ".0%"), order_share(rs, "dev_rerank", ".1%")
        lines.append(f"| {arm} | {','.join(str(r['seed']) for r in rs)} | " + " | ".join(vals)
                     + f" | {d_n:+.4f} | {d_e:+.4f} | {best:.4f} | {order} | {new_order} | {np.mean([r['seconds'] for r in rs]):.0f} |")
    bm25 = Path(args.out) / BM25_RERANK
    if bm25.exists():
        b = json.loads(bm25.read_text())
        lines += ["", f"BM25 (no training, `--bm25-rerank`), new-query order: {b['share']['err']:.1%} of the ERR headroom "
                      f"(dev re-rank ERR {b['metrics']['err']:.4f}, nDCG@10 {b['metrics']['ndcg@10']:.4f}; {b['queries']} queries)."]
    r0 = recs[0]
    lines += ["", f"Budget: {r0['queries'] or 'all'} training queries, {r0['epochs']} epochs = {r0['steps']} steps of 64 (an arm at batch 128: half as many), "
              f"dev corpus {r0['dev_corpus']}, base {BASE}; threads {r0['threads']}; load {min(r['load_start'] for r in recs):.1f}–"
              f"{max(r['load_end'] for r in recs):.1f}.",
              f"Regenerate: `python experiments/loss_search.py --out {args.out} --arms ... --seeds ...`, "
              f"table: `python experiments/loss_search.py --out {args.out} --report`."]
    text = "\n".join(lines) + "\n"
    (Path(args.out) / "search.md").write_text(text)
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.report:
        run(args)
    if (Path(args.out) / "search.jsonl").exists():
        print(report(args))
    elif not (args.bm25_rerank and not args.report):
        sys.exit(f"error: no {Path(args.out) / 'search.jsonl'} yet")


if __name__ == "__main__":
    main()
