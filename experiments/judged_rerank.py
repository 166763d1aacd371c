"""Diagnostic: how well does each model order a query's *judged* documents by grade?

Retrieval metrics mix two abilities: finding relevant documents in a large corpus and ordering
them by grade. This script isolates the second. For a fixed sample of queries (training queries
by default: the "in-domain" case where graded training should help most) it ranks only the
query's judged documents by cosine similarity and scores that order against the reference grades
(nDCG@10 and ERR over judged documents only). Queries whose judged documents all have the same
grade carry no ordering information and are left out (counted).

    python experiments/judged_rerank.py --models runs/experiment --out docs/results/homedepot/judged_rerank.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="runs/experiment", help="directory of <variant>-s<seed>/final models")
    p.add_argument("--split", default="train", choices=("train", "novel_query"))
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results/homedepot/judged_rerank.md")
    args = p.parse_args(argv)

    from gcl.data.sources import load_benchmark
    from gcl.encoders.model import BiEncoder, BiEncoderConfig
    from gcl.evaluation.protocol import reference_grades
    from gcl.metrics import compute_metrics, judge_run
    from gcl.training.config import DataConfig

    bench = load_benchmark(DataConfig(source="homedepot"))
    ds = bench.train if args.split == "train" else bench.eval_split(args.split)
    j = ds.judgments.copy()
    j["grade"] = reference_grades(j["score"].to_numpy())
    informative = j.groupby("query_id")["grade"].nunique()
    informative = informative[informative > 1].index.sort_values()
    rng = np.random.default_rng(args.seed)
    picked = informative[np.sort(rng.choice(len(informative), size=min(args.queries, len(informative)), replace=False))]
    j = j[j["query_id"].isin(set(picked))]
    qrels: dict[str, dict[str, float]] = {}
    for q, d, g in j[["query_id", "doc_id", "grade"]].itertuples(index=False):
        qrels.setdefault(q, {})[d] = float(g)
    docs = ds.documents.loc[j["doc_id"].unique()]
    queries = ds.queries.loc[list(picked)]

    models = {"zero-shot": None}
    for d in sorted(Path(args.models).glob("*-s*/final")):
        models[d.parent.name] = d
    rows = {}
    for name, path in models.items():
        model = BiEncoder(BiEncoderConfig(max_seq_length=32)) if path is None else BiEncoder.load(path)
        model.eval()
        de = dict(zip(docs.index, model.encode_documents(docs)))
        qe = dict(zip(queries.index, model.encode_queries(queries)))
        run = {q: {d: float(qe[q] @ de[d]) for d in ds_docs} for q, ds_docs in qrels.items()}
        m = compute_metrics(judge_run(run, qrels), ("ndcg@10", "err"))
        rows[name] = {k: float(np.mean(v)) for k, v in m.items()}
        print(name, rows[name], flush=True)

    variants: dict[str, list[dict]] = {}
    for name, r in rows.items():
        variants.setdefault(name.rsplit("-s", 1)[0] if name != "zero-shot" else name, []).append(r)
    lines = [
        f"# Ordering judged documents by grade ({args.split} queries)",
        "",
        f"`python experiments/judged_rerank.py --split {args.split} --queries {args.queries}`: "
        f"{len(qrels)} queries with at least two distinct grades (of {j['query_id'].nunique()} sampled; "
        f"seed {args.seed}), {len(j)} judged pairs; each query's judged documents ranked by cosine, "
        "scored against the reference grades (1..100). Mean ± std over training seeds.",
        "",
        "| model | n | nDCG@10 (judged only) | ERR (judged only) |",
        "|---|---|---|---|",
    ]
    for v, rs in variants.items():
        cells = []
        for k in ("ndcg@10", "err"):
            vals = np.array([r[k] for r in rs])
            cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}" if len(vals) > 1 else f"{vals.mean():.4f}")
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
