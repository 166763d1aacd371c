"""nDCG@10 and ERR of every index kind on Home Depot, against exact search (the cost of compression).

For each test split (gcl's reference protocol: 2,000 weighted-sampled queries, graded ground truth;
``gcl.evaluation.evaluator.prepare_task``/``evaluate_task``, what ``gcl evaluate`` runs), the
model's document and query embeddings (``gcl evaluate``'s on-disk cache: run ``gcl evaluate
--model M`` once first and nothing is encoded here) are put into a ``VectorIndex`` of each kind
(:class:`gcl.evaluation.index_retriever.IndexRetriever`: built, saved, reloaded, so compressed
kinds re-score from their memory-mapped ``vectors.npy``), and every query asks the index for its
top ``--k`` (10: what a search page shows; a compressed kind then re-scores ``rescore * 10``
candidates). The metrics are computed on that top-``k`` list: nDCG@10, and ERR over the ``k``
results (so the exact row's ERR is ERR@10, not the evaluator's ERR@1000). Also printed: recall@10
against the exact kind's top 10 (the fraction of exact's results the kind returns), build seconds,
the faiss file (what the index holds in RAM: codes, or vectors for exact/hnsw) per document,
and search queries/s (all queries in one call, ``--threads`` faiss threads).

Index settings are gcl's defaults (``IndexParams``, ``QuantParams``: e.g. IVF-PQ with 1,024 cells,
32 probed, 48 x 8-bit sub-vectors; HNSW M 32, efConstruction 200, efSearch 128) except ``rescore``,
which is varied (``--rescore``; a search-time setting: each kind is built once per corpus), and
``--nlist``/``--nprobe`` of ``ivfpq`` when given.

    python benchmarks/bench_compact_quality.py                           # zero-shot MiniLM, all splits
    python benchmarks/bench_compact_quality.py --splits in_domain,novel_query --kinds exact binary
    python benchmarks/bench_compact_quality.py --model runs/train/best --out runs/compact_quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ALL_KINDS = ("exact", "hnsw", "sq8", "hnsw_sq8", "ivfpq", "binary", "binary_hnsw")
SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm", help="model whose embeddings are indexed (default minilm)")
    p.add_argument("--data", default="homedepot", help="data source, as gcl evaluate --data (default homedepot)")
    p.add_argument("--data-dir", default=None, help="where homedepot/ lives (default: $GCL_DATA_DIR or ../shared/data)")
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated test splits (default all four)")
    p.add_argument("--kinds", nargs="+", default=["exact", "hnsw", "sq8", "hnsw_sq8", "ivfpq", "binary"],
                   choices=ALL_KINDS, help="index kinds (exact is always measured first: the reference)")
    p.add_argument("--rescore", type=int, nargs="+", default=[4, 16, 64], help="re-scoring depths of the compressed kinds")
    p.add_argument("--k", type=int, default=10, help="results asked of the index per query (default 10)")
    p.add_argument("--nlist", type=int, default=None, help="ivfpq cells (default: QuantParams's)")
    p.add_argument("--nprobe", type=int, default=None, help="ivfpq cells probed (default: QuantParams's)")
    p.add_argument("--threads", type=int, default=1, help="faiss threads (default 1)")
    p.add_argument("--cache-dir", default=None, help="gcl evaluate's embedding cache (default: its default)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    return p.parse_args(argv)


def recall_vs(idx: np.ndarray, ref: np.ndarray) -> float:
    """Mean over queries of |top-k(kind) ∩ top-k(exact)| / |top-k(exact)|."""
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / max(1, (b >= 0).sum())
                          for a, b in zip(idx, ref)]))


def main(argv=None) -> int:
    args = parse_args(argv)
    import faiss

    from gcl.data.sources import load_benchmark
    from gcl.embedding_cache import default_cache_dir
    from gcl.encoders.base import load_model
    from gcl.evaluation.evaluator import Protocol, evaluate_task, prepare_task
    from gcl.evaluation.index_retriever import IndexRetriever
    from gcl.evaluation.retrievers import DenseRetriever
    from gcl.index.base import QUANTIZED_KINDS
    from gcl.training.config import DataConfig

    faiss.omp_set_num_threads(args.threads)
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    bench = load_benchmark(DataConfig(source=args.data, data_dir=args.data_dir), announce=lambda m: print(m, file=sys.stderr))
    dense = DenseRetriever(load_model(args.model), show_progress=False, cache_dir=args.cache_dir or default_cache_dir())
    protocol = Protocol(depth=args.k)
    kinds = ["exact", *[k for k in args.kinds if k != "exact"]]
    ivf = {k: v for k, v in (("nlist", args.nlist), ("nprobe", args.nprobe)) if v is not None}
    retrievers = {kind: IndexRetriever(dense, kind=kind, **(ivf if kind == "ivfpq" else {})) for kind in kinds}
    print(f"# {args.model} on {bench.name}: {protocol.name} protocol ({protocol.n_queries} queries per split), top "
          f"{args.k} asked of each index; faiss {faiss.__version__}, {args.threads} thread(s); load average {load0} "
          f"on {os.cpu_count()} CPUs" + (f"; ivfpq {ivf}" if ivf else ""))
    print("| split | kind | rescore | ndcg@10 | Δ vs exact | err | Δ vs exact | recall@10 vs exact | build s | "
          "faiss B/doc | vectors.npy MB | QPS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for split in args.splits.split(","):
        task = prepare_task(bench.eval_split(split.strip()), protocol, name=split.strip())
        reference = None
        for kind in kinds:
            retriever = retrievers[kind]
            for rescore in (args.rescore if kind in QUANTIZED_KINDS else [None]):
                retriever.rescore = rescore
                retriever.index_for(task.documents)  # build outside the timed search
                res = evaluate_task(task, retriever, protocol)
                seconds = retriever.last_search_s  # index.search alone (not the cache reads or the metrics)
                _, facts = retriever.index_for(task.documents)
                if reference is None:
                    reference = res
                row = {"split": split, "kind": kind, "rescore": rescore, "ndcg@10": res.summary["ndcg@10"],
                       "err": res.summary["err"], "recall_vs_exact": recall_vs(res.run_indices, reference.run_indices),
                       "build_s": facts["build_s"], "faiss_bytes_per_doc": facts["faiss_bytes"] / res.n_documents,
                       "vectors_mb": facts["vectors_bytes"] / 2**20, "qps": res.n_queries / seconds,
                       "n_queries": res.n_queries, "n_documents": res.n_documents}
                rows.append(row)
                cells = [split, kind, "-" if rescore is None else str(rescore), f"{row['ndcg@10']:.4f}",
                         f"{row['ndcg@10'] - reference.summary['ndcg@10']:+.4f}", f"{row['err']:.4f}",
                         f"{row['err'] - reference.summary['err']:+.4f}", f"{row['recall_vs_exact']:.3f}",
                         f"{facts['build_s']:.1f}", f"{row['faiss_bytes_per_doc']:,.0f}", f"{row['vectors_mb']:.1f}",
                         f"{row['qps']:,.0f}"]
                print("| " + " | ".join(cells) + " |", flush=True)
    for retriever in retrievers.values():
        retriever.close()
    print(f"# load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
