"""Exact top-k search: ``gcl.evaluation.search.exact_search`` versus faiss ``IndexFlatIP``.

All search the same L2-normalised float32 vectors (inner product = cosine) in the same process:
``exact_search`` with each backend (``faiss``, the default when installed, and ``torch``, the
blockwise fallback and the implementation before faiss scored) and a faiss ``IndexFlatIP``. For
each k the script prints the wall time and throughput of each (best of ``--repeat``, the methods
taking turns in alternating order so that a change in machine load hits all of them), the time
ratio to faiss (of the best times, and the median and range of the per-repeat paired ratios), how
often each returns the same top-k set and the same ordered list as faiss, and the peak memory
each adds (resident set size sampled during one more, untimed call) next to the size of the full query x corpus
score matrix the blockwise search avoids.

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
    p.add_argument("--backends", nargs="+", default=["faiss", "torch"], choices=["faiss", "torch"],
                   help="exact_search backends to time (default both)")
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


def timed(fn):
    """(wall seconds, CPU seconds of the whole process, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


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
    for b in args.backends:
        exact_search(warm, corpus, 10, query_block=args.query_block, doc_block=args.doc_block, backend=b)
    index.search(warm, 10)

    print("\nseconds = wall time, cpu = CPU time of the process (all threads; less sensitive to other load),")
    print("both the best of the repeats; 'vs faiss' compares wall times, 'cpu vs faiss' CPU times;")
    print("'paired wall ratio': each repeat's wall time over faiss's in the same repeat (the methods run")
    print("back to back, in alternating order), median and range over the repeats: the steadier comparison")
    print(f"\n{'k':>6} {'method':<20} {'seconds':>9} {'queries/s':>11} {'vs faiss':>9} {'cpu':>7} {'cpu vs faiss':>12}"
          f" {'peak extra RSS':>15} {'same set':>9} {'same list':>9} {'paired wall ratio: median [min, max]':>37}")
    peak = 0
    for k in args.k:
        methods = {f"exact_search[{b}]": (lambda k=k, b=b: exact_search(
            queries, corpus, k, query_block=args.query_block, doc_block=args.doc_block, backend=b))
            for b in args.backends}
        methods["faiss IndexFlatIP"] = lambda k=k: index.search(queries, k)
        best = {name: float("inf") for name in methods}
        cpu = {name: float("inf") for name in methods}
        walls = {name: [] for name in methods}
        results = {}
        names = list(methods)
        for r in range(args.repeat):  # take turns, in alternating order: load and order hit every method
            for name in names if r % 2 == 0 else names[::-1]:
                seconds, cpu_seconds, results[name] = timed(methods[name])
                best[name] = min(best[name], seconds)
                cpu[name] = min(cpu[name], cpu_seconds)
                walls[name].append(seconds)
        extra = {}
        for name, fn in methods.items():  # memory in one more call each, untimed (the sampler thread costs CPU)
            with PeakRSS() as mem:
                fn()
            extra[name] = mem.extra
        ref_walls = np.asarray(walls["faiss IndexFlatIP"])
        paired = {name: np.asarray(walls[name]) / ref_walls for name in methods}
        s_ref, i_ref = results["faiss IndexFlatIP"]
        for name in methods:
            s_m, i_m = results[name]
            print(f"{k:>6} {name:<20} {best[name]:>9.2f} {args.queries / best[name]:>11,.0f} "
                  f"{best[name] / best['faiss IndexFlatIP']:>8.2f}x {cpu[name]:>7.2f} "
                  f"{cpu[name] / cpu['faiss IndexFlatIP']:>11.2f}x {mib(extra[name]):>15} "
                  f"{same_sets(i_m, i_ref):>9.2%} {float(np.mean((i_m == i_ref).all(axis=1))):>9.2%}"
                  f" {np.median(paired[name]):>10.3f}x [{paired[name].min():.2f}, {paired[name].max():.2f}]")
            if name.startswith("exact_search"):
                peak = max(peak, extra[name])
        print(f"{'':>6} max |score difference| to faiss: "
              + ", ".join(f"{n} {float(np.abs(results[n][0] - s_ref).max()):.1e}" for n in methods if n != "faiss IndexFlatIP"))

    print("same set / same list: rows whose top-k index set / ordered list equals faiss's (faiss orders equal")
    print("scores arbitrarily; exact_search puts the lower index first, so lists differ only within ties)")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"\npeak extra memory of exact_search: {mib(peak)} = {peak / full_matrix:.1%} of the full score matrix ({mib(full_matrix)})")
    print(f"process peak RSS: {mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
