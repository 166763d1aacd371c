"""``gcl.index.VectorIndex`` versus faiss used directly: build throughput and HNSW recall/QPS.

On N synthetic *structured* vectors (Gaussian blobs around random unit centres, L2-normalised, so
nearest neighbours are meaningful as they are for real embeddings) the script measures, in one
process and on the same data:

* build throughput (vectors/s) of the exact index and of the HNSW index, through ``VectorIndex``
  (string ids, normalisation, bookkeeping) and through faiss directly (``IndexFlatIP`` /
  ``IndexHNSWFlat`` with the same M and efConstruction);
* exact search QPS of both, which also gives the ground truth;
* for efSearch in {16, 32, 64, 128, 256}: HNSW recall@k against exact search and QPS, both ways.

    python benchmarks/bench_index.py                          # 100,000 x 384, 1,000 queries
    python benchmarks/bench_index.py --n 1000000              # the 1M figure (about 7 GB of RAM at peak)
    python benchmarks/bench_index.py --n 20000 --threads 1    # a quick run

Needs ``faiss-cpu`` (``pip install -e .[index]``). Queries are searched in one batch; QPS is
queries / wall seconds of that call. Timings depend on the machine and its load: the header says
what they were taken on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import faiss
import numpy as np

from gcl.index import VectorIndex


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="indexed vectors (default 100,000)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--clusters", type=int, default=None, help="Gaussian blobs (default n / 100)")
    p.add_argument("--spread", type=float, default=1.0, help="noise norm around a centre (1.0: cos ~0.7 to it)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def structured(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float, chunk: int = 50_000) -> np.ndarray:
    """(n, d) float32 unit rows: a random centre plus Gaussian noise of norm ~``spread``, normalised."""
    d = centres.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(len(centres), size=m)] + rng.standard_normal((m, d), dtype=np.float32) * (spread / np.sqrt(d))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        return cpu


def machine_info(threads: int) -> str:
    cpu = cpu_name()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
            f"load average {load}\nsoftware: Python {platform.python_version()}, numpy {np.__version__}, "
            f"faiss {faiss.__version__}, faiss threads {threads}")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / k for f, t in zip(found, truth)]))


def hits_to_rows(results, label_of: dict[str, int], k: int) -> np.ndarray:
    out = np.full((len(results), k), -1, dtype=np.int64)
    for row, hits in enumerate(results):
        out[row, : len(hits)] = [label_of[h.doc_id] for h in hits]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    threads = faiss.omp_get_max_threads()
    rng = np.random.default_rng(args.seed)
    n_clusters = args.clusters or max(1, args.n // 100)
    centres = rng.standard_normal((n_clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    docs = structured(rng, args.n, centres, args.spread)
    queries = structured(rng, args.queries, centres, args.spread)
    ids = [f"d{i}" for i in range(args.n)]
    label_of = {d: i for i, d in enumerate(ids)}  # VectorIndex labels = write order = row number here

    print(machine_info(threads))
    print(f"data: {args.n:,} x {args.dim} structured vectors ({n_clusters:,} clusters, spread {args.spread}), "
          f"{args.queries:,} queries, k={args.k}; HNSW M={args.hnsw_m}, efConstruction={args.ef_construction}\n")

    # ------------------------------------------------------------------ exact
    flat = faiss.IndexFlatIP(args.dim)
    _, t_faiss_flat = timed(lambda: flat.add(docs))
    exact = VectorIndex(dim=args.dim, kind="exact")
    _, t_ours_flat = timed(lambda: exact.add(ids, docs))
    (_, truth), t_faiss_q = timed(lambda: flat.search(queries, args.k))
    ours_exact, t_ours_q = timed(lambda: exact.search(queries, args.k))
    agree = float(np.mean(hits_to_rows(ours_exact, label_of, args.k) == truth))
    del flat, exact

    # ------------------------------------------------------------------ hnsw build
    raw = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    raw.hnsw.efConstruction = args.ef_construction
    _, t_faiss_hnsw = timed(lambda: raw.add(docs))
    hnsw = VectorIndex(dim=args.dim, kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    _, t_ours_hnsw = timed(lambda: hnsw.add(ids, docs))

    print("build                  VectorIndex            faiss direct")
    print(f"exact (flat)     {args.n / t_ours_flat:>12,.0f} vec/s   {args.n / t_faiss_flat:>12,.0f} vec/s")
    print(f"hnsw             {args.n / t_ours_hnsw:>12,.0f} vec/s   {args.n / t_faiss_hnsw:>12,.0f} vec/s"
          f"   ({t_ours_hnsw:.1f} s vs {t_faiss_hnsw:.1f} s)")
    print(f"\nexact search: VectorIndex {args.queries / t_ours_q:,.0f} QPS, faiss {args.queries / t_faiss_q:,.0f} QPS; "
          f"same top-{args.k} ids in the same order: {agree:.4f}\n")

    # ------------------------------------------------------------------ hnsw sweep
    print(f"efSearch   recall@{args.k} ours   QPS ours   recall@{args.k} faiss   QPS faiss")
    for ef in args.ef_search:
        hnsw.ef_search = ef
        found, t_ours = timed(lambda: hnsw.search(queries, args.k))
        raw.hnsw.efSearch = ef
        (_, raw_found), t_raw = timed(lambda: raw.search(queries, args.k))
        r_ours = recall_at_k(hits_to_rows(found, label_of, args.k), truth)
        r_raw = recall_at_k(raw_found, truth)
        print(f"{ef:>8}   {r_ours:>11.4f}   {args.queries / t_ours:>8,.0f}   {r_raw:>12.4f}   {args.queries / t_raw:>9,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
