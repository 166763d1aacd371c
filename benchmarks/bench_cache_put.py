"""The embedding cache's cost in ``gcl evaluate``'s pattern (gcl/evaluation/doc_cache.py).

An index of N keys from an earlier run; then one run opens the namespace, looks up N + M keys and
puts the M new ones in one put (an encode of a corpus makes one put of all its missing rows).
Prints the time of each step and of every index read (the open's, and the put's re-read under
the lock), and the peak RSS.

    OMP_NUM_THREADS=1 python benchmarks/bench_cache_put.py 200000 200000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np

import gcl.row_store as row_store
from gcl.embedding_cache import EmbeddingCache


def main(n_old: int, n_new: int, dim: int = 8) -> None:
    keys = [f"{i:040x}" for i in range(n_old + n_new)]  # sha1-like hex, as document_keys makes
    vecs = np.random.default_rng(0).standard_normal((n_old + n_new, dim)).astype(np.float32)
    reads: list[float] = []
    read_index = row_store.RowStore.read_index

    def timed_read(self):
        t = time.perf_counter()
        try:
            return read_index(self)
        finally:
            reads.append(time.perf_counter() - t)

    row_store.RowStore.read_index = timed_read
    with tempfile.TemporaryDirectory() as d:
        EmbeddingCache(d, namespace="ns").put(keys[:n_old], vecs[:n_old])  # the earlier run
        reads.clear()
        t0 = time.perf_counter()
        cache = EmbeddingCache(d, namespace="ns")
        t1 = time.perf_counter()
        found, _ = cache.lookup(keys)
        t2 = time.perf_counter()
        cache.put([k for k, f in zip(keys, found) if not f], vecs[~found])
        t3 = time.perf_counter()
    print(f"N={n_old} M={n_new}: open {t1 - t0:.2f} s, lookup {t2 - t1:.2f} s, put {t3 - t2:.2f} s "
          f"(index reads, open then put: {', '.join(f'{r:.2f}' for r in reads)} s); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n_old", type=int, help="keys already in the cache (N)")
    ap.add_argument("n_new", type=int, help="keys the run adds (M)")
    ap.add_argument("--dim", type=int, default=8, help="vector width")
    args = ap.parse_args()
    main(args.n_old, args.n_new, args.dim)
