"""Dense vs BM25 vs hybrid (RRF, convex) on benchmark splits, the corpus encoded once per split.

    OMP_NUM_THREADS=2 python benchmarks/bench_hybrid.py --model minilm --splits zero_shot \
        --alphas 0.3,0.5,0.7 --out docs/results/homedepot/hybrid.jsonl

Same protocol and metrics as ``gcl evaluate`` (the reference protocol: 2,000 weighted-sampled
test queries, depth 1000); each evaluated setting is appended to ``--out`` as one JSON line as
soon as it is done, so a run stopped early keeps what it finished. ``gcl evaluate --hybrid
rrf|convex`` gives the same numbers one setting at a time (encoding the corpus each time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class _QueryCache:
    """The model with its query embeddings kept per query table: every setting re-uses one encoding."""

    def __init__(self, model) -> None:
        self.model, self._last = model, None

    def encode_documents(self, documents, **kw):
        return self.model.encode_documents(documents, **kw)

    def encode_queries(self, queries, **kw):
        if self._last is None or self._last[0] is not queries:
            self._last = (queries, self.model.encode_queries(queries, **kw))
        return self._last[1]


def main(argv=None) -> int:
    from gcl.data.sources import load_benchmark
    from gcl.encoders.base import load_model
    from gcl.evaluation.evaluator import Protocol, evaluate_task, prepare_task
    from gcl.evaluation.retrievers import BM25Retriever, DenseRetriever, HybridRetriever
    from gcl.index.hybrid import HybridParams
    from gcl.training.config import DataConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--data", default="homedepot")
    p.add_argument("--splits", default="zero_shot")
    p.add_argument("--n-queries", type=int, default=2000)
    p.add_argument("--depth", type=int, default=1000)
    p.add_argument("--alphas", default="0.5", help="convex dense weights to try (comma-separated)")
    p.add_argument("--out", default="runs/bench_hybrid.jsonl")
    args = p.parse_args(argv)

    protocol = Protocol(name="reference", n_queries=args.n_queries, depth=args.depth)
    bench = load_benchmark(DataConfig(source=args.data), announce=lambda m: print(m, file=sys.stderr))
    dense = DenseRetriever(_QueryCache(load_model(args.model)), show_progress=False)
    bm25 = BM25Retriever()
    settings = [("dense", dense), ("bm25", bm25), ("hybrid-rrf", HybridRetriever(dense, bm25, HybridParams()))]
    for a in (float(x) for x in args.alphas.split(",")):
        settings.append((f"hybrid-convex-a{a:g}", HybridRetriever(dense, bm25, HybridParams(fusion="convex", alpha=a))))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for split_name in args.splits.split(","):
        task = prepare_task(bench.eval_split(split_name), protocol, name=split_name)
        for name, retriever in settings:
            t0 = time.perf_counter()
            res = evaluate_task(task, retriever, protocol)
            row = {"split": split_name, "setting": name, "model": args.model, "n_queries": res.n_queries,
                   "n_documents": res.n_documents, "seconds": round(time.perf_counter() - t0, 1),
                   **{m: round(float(res.summary[m]), 4) for m in ("ndcg@10", "err", "rbp@0.9", "map@1000", "mrr@1000")}}
            with open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
