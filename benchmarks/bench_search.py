"""Exact top-k search: ``gcl.evaluation.search.exact_search`` versus faiss ``IndexFlatIP``.

Both search the same L2-normalised float32 vectors (inner product = cosine) in the same process.
For each k the script prints the wall time and throughput of each, their ratio, how often the
two return the same top-k set, and the peak memory the blockwise search adds (resident set size
sampled during the call) next to the size of the full query x corpus score matrix it avoids.

    python benchmarks/bench_search.py                      # 2,000 x 200,000 x 384, k = 10 and 1000
    python benchmarks/bench_search.py --docs 20000 --k 10  # a quick run

Needs ``faiss-cpu`` (``pip install -e .[index]``). Timings depend on the machine and on its load;
the header lists what they were taken on.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import threading
import time

import numpy as np
import torch

from gcl.evaluation.search import exact_search


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--docs", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, nargs="+", default=[10, 1000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--query-block", type=int, default=1024, help="exact_search query_block (its default)")
    p.add_argument("--doc-block", type=int, default=65536, help="exact_search doc_block (its default)")
    p.add_argument("--threads", type=int, default=None, help="threads for torch and faiss (default: torch's)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per method and k; the best is kept")
    return p.parse_args(argv)


def normalised(rng: np.random.Generator, n: int, d: int, chunk: int = 50_000) -> np.ndarray:
    """(n, d) float32 unit rows, generated in chunks (no float64 copy of the whole matrix)."""
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), d), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident set size above the level at entry, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.extra = 0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.extra = max(self.extra, rss_bytes() - self.base)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.base = rss_bytes()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.extra = max(self.extra, rss_bytes() - self.base)


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def same_sets(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose top-k index sets are equal (order aside)."""
    return float(np.mean([set(x) == set(y) for x, y in zip(a.tolist(), b.tolist())]))


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import faiss
    except ImportError:
        print("faiss is not installed: pip install faiss-cpu (or pip install -e .[index])", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(torch.get_num_threads())  # the same number of threads for both

    print("machine")
    print(f"  platform      {platform.platform()} ({platform.machine()}), python {platform.python_version()}")
    print(f"  cpu count     {os.cpu_count()} (load average {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"  versions      torch {torch.__version__}, faiss {faiss.__version__}, numpy {np.__version__}")
    print(f"  threads       torch.get_num_threads() = {torch.get_num_threads()}, faiss omp = {faiss.omp_get_max_threads()}")

    rng = np.random.default_rng(args.seed)
    corpus = normalised(rng, args.docs, args.dim)
    queries = normalised(rng, args.queries, args.dim)
    full_matrix = args.queries * args.docs * 4
    print("data")
    print(f"  {args.queries:,} queries x {args.docs:,} documents x {args.dim} dims, float32, L2-normalised, seed {args.seed}")
    print(f"  corpus {mib(corpus.nbytes)}; the full score matrix would be {mib(full_matrix)}")
    print(f"  exact_search blocks: query_block={args.query_block}, doc_block={args.doc_block} "
          f"(one score block = {mib(min(args.query_block, args.queries) * min(args.doc_block, args.docs) * 4)})")

    index = faiss.IndexFlatIP(args.dim)
    index.add(corpus)
    warm = queries[:64]  # thread pools and first-call costs out of the timings
    exact_search(warm, corpus, 10, query_block=args.query_block, doc_block=args.doc_block)
    index.search(warm, 10)

    print(f"\n{'k':>6} {'method':<14} {'seconds':>9} {'queries/s':>11} {'peak extra RSS':>15}")
    rows = []
    for k in args.k:
        with PeakRSS() as mem:
            t_gcl, (s_gcl, i_gcl) = timed(
                lambda: exact_search(queries, corpus, k, query_block=args.query_block, doc_block=args.doc_block),
                args.repeat,
            )
        with PeakRSS() as mem_faiss:
            t_faiss, (s_faiss, i_faiss) = timed(lambda: index.search(queries, k), args.repeat)
        agree = same_sets(i_gcl, i_faiss)
        max_diff = float(np.abs(s_gcl - s_faiss).max())
        print(f"{k:>6} {'exact_search':<14} {t_gcl:>9.2f} {args.queries / t_gcl:>11,.0f} {mib(mem.extra):>15}")
        print(f"{k:>6} {'faiss FlatIP':<14} {t_faiss:>9.2f} {args.queries / t_faiss:>11,.0f} {mib(mem_faiss.extra):>15}")
        print(f"{'':>6} exact_search / faiss time = {t_gcl / t_faiss:.2f}; identical top-{k} sets: {agree:.2%}; "
              f"max |score difference| {max_diff:.1e}")
        rows.append((k, t_gcl, t_faiss, agree, mem.extra))

    peak = max(r[4] for r in rows)
    print(f"\npeak extra memory of exact_search: {mib(peak)} = {peak / full_matrix:.1%} of the full score matrix ({mib(full_matrix)})")
    print(f"process peak RSS: {mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
