"""Peak memory of ``gcl evaluate --embeddings`` retrieval: PrecomputedRetriever on a generated set.

    python benchmarks/bench_precomputed_memory.py make /tmp/emb --docs 1000000 --dim 384
    /usr/bin/time -v python benchmarks/bench_precomputed_memory.py run /tmp/emb

``make`` writes ``documents.npy`` (float32, not normalised, written in chunks), ``queries.npy`` and
the id files. ``run`` does what the evaluator does with them for two corpora shaped like
Marqo-GS's (corpus_1 = the first 60% of the documents, corpus_2 = the rest, each table in a
shuffled order) and two splits per corpus (the same table object twice): per split it searches
``--queries`` queries for the top ``--k``. It prints the time per split and the process's peak
resident set size (``ru_maxrss``), the machine and its load. Run it under another checkout
(``PYTHONPATH=/path/to/old``) to compare implementations: only ``PrecomputedRetriever`` is used.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def make(root: Path, docs: int, dim: int, queries: int, seed: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(root / "documents.npy", mode="w+", dtype=np.float32, shape=(docs, dim))
    for start in range(0, docs, 50_000):
        n = min(50_000, docs - start)
        out[start : start + n] = rng.standard_normal((n, dim), dtype=np.float32) * rng.uniform(0.5, 2, (n, 1)).astype(np.float32)
    out.flush()
    del out
    np.save(root / "queries.npy", rng.standard_normal((queries, dim), dtype=np.float32))
    (root / "doc_ids.txt").write_text("".join(f"d{i}\n" for i in range(docs)), encoding="utf-8")
    (root / "query_ids.txt").write_text("".join(f"q{i}\n" for i in range(queries)), encoding="utf-8")
    print(f"wrote {root}: {docs:,} x {dim} documents ({docs * dim * 4 / 2**30:.2f} GiB), {queries:,} queries")


def run(root: Path, n_queries: int, k: int, seed: int) -> None:
    import pandas as pd

    from gcl.evaluation.retrievers import PrecomputedRetriever

    print(f"machine: {os.cpu_count()} cpus, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    docs = sum(1 for _ in open(root / "doc_ids.txt", encoding="utf-8"))
    all_queries = sum(1 for _ in open(root / "query_ids.txt", encoding="utf-8"))
    rng = np.random.default_rng(seed)
    cut = int(0.6 * docs)
    corpora = {"corpus_1": rng.permutation(cut), "corpus_2": cut + rng.permutation(docs - cut)}
    t0 = time.perf_counter()
    retriever = PrecomputedRetriever(root)
    print(f"open: {time.perf_counter() - t0:.1f}s, peak RSS so far {peak_gib():.2f} GiB")
    for corpus, rows in corpora.items():
        table = pd.DataFrame(index=pd.Index([f"d{i}" for i in rows], name="doc_id"))
        for split in ("a", "b"):
            q = rng.choice(all_queries, size=min(n_queries, all_queries), replace=False)
            queries = pd.DataFrame(index=pd.Index([f"q{i}" for i in q], name="query_id"))
            t0 = time.perf_counter()
            _, idx = retriever.search(queries, table, k)
            print(f"{corpus} split {split}: {len(queries)} queries over {len(table):,} documents in "
                  f"{time.perf_counter() - t0:.1f}s (top-1 of the first query: row {idx[0, 0]}), "
                  f"peak RSS so far {peak_gib():.2f} GiB")
    print(f"peak RSS: {peak_gib():.2f} GiB; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("root", type=Path)
    m.add_argument("--docs", type=int, default=1_000_000)
    m.add_argument("--dim", type=int, default=384)
    m.add_argument("--queries", type=int, default=2000)
    m.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("root", type=Path)
    r.add_argument("--queries", type=int, default=200, help="queries searched per split")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "make":
        make(args.root, args.docs, args.dim, args.queries, args.seed)
    else:
        run(args.root, args.queries, args.k, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
