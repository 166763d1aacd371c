"""Diagnostic: how well does each model order a query's *judged* documents by grade?

Retrieval metrics mix two abilities: finding relevant documents in a large corpus and ordering
them by grade. This script isolates the second. It ranks only a query's judged documents by
cosine similarity and scores that order against the reference grades (nDCG@10 and ERR over the
judged documents only). Queries whose judged documents all have the same grade carry no ordering
information and are left out (counted). The ranking and scoring are the library's judged re-rank
(:mod:`gcl.evaluation.judged_rerank`, ``gcl evaluate --judged-rerank``), grades 1..100 over each
group's scores (the training split's range, 1..3, on Home Depot).

The paper's in-domain claim is about queries the model was trained on. With a short run most
training queries are never drawn, so for each training seed the script replays that run's batch
sampler (the sampler is deterministic given the seed: :class:`gcl.training.batching.QueryGroupedSampler`)
and splits the informative training queries into

* ``seen``: drawn as a group (its documents together in one batch) during the run's ``--steps``;
* ``unseen``: training queries the run never drew (in-distribution, but not trained on).

A model trained with seed ``s`` is scored on seed ``s``'s sets; the zero-shot model on every seed's
sets, so each fine-tuned figure has a zero-shot reference on exactly the same queries. Pairs of
runs with the same seed saw the same batches, so the per-seed difference to ``binary`` is paired.

    python experiments/judged_rerank.py --models runs/experiment --steps 100 \
        --out docs/results/homedepot/judged_rerank.md
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

GROUPS = ("seen", "unseen")
METRICS = ("ndcg@10", "err")


def seen_queries(train, seed: int, steps: int, batch_size: int, docs_per_query: int) -> set:
    """Query ids of which the trainer's query-grouped sampler put >= 2 documents in one batch
    (:func:`gcl.evaluation.seen.seen_queries`, the replay ``gcl evaluate --seen-unseen`` uses)."""
    from gcl.evaluation.seen import seen_queries as replay
    from gcl.training.config import BatchConfig, TrainConfig

    cfg = TrainConfig(batch=BatchConfig(batch_size=batch_size, sampler="query_grouped", docs_per_query=docs_per_query),
                      seed=seed)
    return replay(train, cfg, steps, min_docs=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="runs/experiment", help="directory of <variant>-s<seed>/final models")
    p.add_argument("--steps", type=int, default=100, help="training steps of those runs (to replay the sampler)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--docs-per-query", type=int, default=4)
    p.add_argument("--queries", type=int, default=800, help="queries per group and seed")
    p.add_argument("--out", default="docs/results/homedepot/judged_rerank.md")
    args = p.parse_args(argv)

    from gcl.data.sources import load_benchmark
    from gcl.encoders.model import BiEncoder, BiEncoderConfig
    from gcl.evaluation.evaluator import Protocol, prepare_task
    from gcl.evaluation.judged_rerank import evaluate_judged_rerank
    from gcl.evaluation.protocol import reference_grades
    from gcl.evaluation.retrievers import DenseRetriever
    from gcl.training.config import DataConfig

    protocol = Protocol(name="all", metrics=METRICS)

    bench = load_benchmark(DataConfig(source="homedepot"))
    train = bench.train
    j = train.judgments.copy()
    j["grade"] = reference_grades(j["score"].to_numpy())
    n_grades = j.groupby("query_id")["grade"].nunique()
    informative = set(n_grades[n_grades > 1].index)

    models: dict[str, tuple[int | None, Path | None]] = {}
    for d in sorted(Path(args.models).glob("*-s*/final")):
        m = re.fullmatch(r"(.+)-s(\d+)", d.parent.name)
        if m:
            models[d.parent.name] = (int(m.group(2)), d)
    seeds = sorted({s for s, _ in models.values()})
    if not seeds:
        raise SystemExit(f"no <variant>-s<seed>/final models under {args.models}")

    sets: dict[tuple[int, str], list] = {}
    for seed in seeds:
        seen = seen_queries(train, seed, args.steps, args.batch_size, args.docs_per_query) & informative
        unseen = informative - seen
        rng = np.random.default_rng(seed)
        for group, pool in (("seen", seen), ("unseen", unseen)):
            pool = sorted(pool)
            k = min(args.queries, len(pool))
            sets[(seed, group)] = [pool[i] for i in np.sort(rng.choice(len(pool), size=k, replace=False))]
        print(f"seed {seed}: {len(seen)} informative queries seen, {len(unseen)} unseen", flush=True)

    def score(model, seed: int) -> dict[str, dict[str, float]]:
        """Judged re-rank (gcl.evaluation.judged_rerank) of each group's queries, all protocol."""
        out = {}
        retriever = DenseRetriever(model, show_progress=False)
        for group in GROUPS:
            task = prepare_task(train.subset(query_ids=sets[(seed, group)]), protocol, name=group)
            out[group] = evaluate_judged_rerank(task, retriever, protocol).summary
        return out

    rows: dict[str, dict] = {}
    zero = BiEncoder(BiEncoderConfig(max_seq_length=32))
    zero.eval()
    for seed in seeds:
        rows[f"zero-shot-s{seed}"] = {"variant": "zero-shot", "seed": seed, **score(zero, seed)}
        print(f"zero-shot-s{seed}", rows[f"zero-shot-s{seed}"], flush=True)
    for name, (seed, path) in models.items():
        model = BiEncoder.load(path)
        model.eval()
        rows[name] = {"variant": name.rsplit("-s", 1)[0], "seed": seed, **score(model, seed)}
        print(name, rows[name], flush=True)

    Path(args.out).write_text(render(rows, args, seeds, sets))
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(Path(args.out).read_text())
    return 0


def render(rows: dict, args, seeds: list[int], sets: dict) -> str:
    by_variant: dict[str, list[dict]] = {}
    for r in rows.values():
        by_variant.setdefault(r["variant"], []).append(r)
    sizes = ", ".join(f"seed {s}: {len(sets[(s, 'seen')])} seen / {len(sets[(s, 'unseen')])} unseen" for s in seeds)
    lines = [
        "# Ordering a training query's judged documents by grade",
        "",
        f"`python experiments/judged_rerank.py --models {args.models} --steps {args.steps} --queries {args.queries}`. "
        "Informative training queries (at least two distinct reference grades) are split per training seed into "
        "those the run drew as a group during its steps (*seen*) and those it never drew (*unseen*); up to "
        f"{args.queries} of each are sampled ({sizes}). Each query's judged documents alone are ranked by cosine "
        "and scored against the reference grades 1..100. Mean ± std over seeds (zero-shot: over the same "
        "per-seed query sets).",
        "",
        "| model | n | seen nDCG@10 | seen ERR | unseen nDCG@10 | unseen ERR |",
        "|---|---|---|---|---|---|",
    ]
    for v, rs in by_variant.items():
        cells = []
        for g in GROUPS:
            for k in METRICS:
                vals = np.array([r[g][k] for r in rs])
                cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}" if len(vals) > 1 else f"{vals.mean():.4f}")
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + " |")
    base = {r["seed"]: r for r in by_variant.get("binary", [])}
    if base:
        lines += ["", "Paired difference to `binary` (same seed: same batches, same query sets), mean ± std over "
                  "seeds, and the number of seeds where the variant is ahead:", "",
                  "| model | seen nDCG@10 | seen ERR | unseen nDCG@10 | unseen ERR |", "|---|---|---|---|---|"]
        for v, rs in by_variant.items():
            rs = [r for r in rs if r["seed"] in base]
            if v == "binary" or not rs:
                continue
            cells = []
            for g in GROUPS:
                for k in METRICS:
                    d = np.array([r[g][k] - base[r["seed"]][g][k] for r in rs])
                    spread = f" ± {d.std(ddof=1):.4f}" if len(d) > 1 else ""
                    cells.append(f"{d.mean():+.4f}{spread} ({int((d > 0).sum())}/{len(d)})")
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
