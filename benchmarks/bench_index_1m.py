"""Index build throughput and HNSW recall/QPS at scale on vectors with real structure: ours vs faiss vs usearch.

Data: the Home Depot corpus embedded by zero-shot MiniLM (27,334 titles x 384, the cache written by
``experiments/homedepot_index.py``) grown to N vectors. Each synthetic vector is a real title
embedding moved part of the way towards another random one, plus Gaussian noise, then normalised::

    x = normalise(e_i + lam * (e_j - e_i) + eps),   lam ~ U(0, 0.5),  ||eps|| ~ noise (0.25)

so the set keeps the real embeddings' clusters and density variations instead of isotropic blobs.
Queries are the real MiniLM embeddings of Home Depot test queries (the cache's query file). The
grown set is cached (``--cache``), so a re-run skips generating it.

In one process, on the same vectors and with the same M / efConstruction (one thread count for all):

* build throughput (vectors/s): ``VectorIndex`` (HNSW; string ids, normalisation, bookkeeping),
  faiss ``IndexHNSWFlat`` directly, usearch ``Index`` (``metric="ip"``, ``connectivity=M``,
  ``expansion_add=efConstruction``);
* ground truth: exact top-k by faiss ``IndexFlatIP``;
* per efSearch: recall@k against it and queries/s (all queries in one call) for the three.

    python benchmarks/bench_index_1m.py                              # 1,000,000 vectors
    python benchmarks/bench_index_1m.py --n 300000 --threads 2       # on a busy machine
    python benchmarks/bench_index_1m.py --n 20000 --skip-usearch     # a quick check

usearch is an optional dependency of this script only (``pip install usearch``).
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import machine_info, recall_at_k, timed  # noqa: E402

from gcl.index import VectorIndex  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.25, help="norm of the Gaussian noise added to each vector")
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--threads", type=int, default=2, help="threads for every library's build and search")
    p.add_argument("--base", default="runs/homedepot_index/minilm-documents-*.npy",
                   help="real document embeddings (npy; glob: the first match)")
    p.add_argument("--base-queries", default="runs/homedepot_index/minilm-queries-*.npy")
    p.add_argument("--cache", default="runs/bench_index_1m")
    p.add_argument("--skip-usearch", action="store_true")
    p.add_argument("--skip-ours", action="store_true", help="skip the VectorIndex build (it equals faiss's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def first_match(pattern: str) -> Path:
    found = sorted(glob.glob(pattern))
    if not found:
        raise SystemExit(f"no file matches {pattern}: run experiments/homedepot_index.py --model minilm first "
                         "(it caches the MiniLM embeddings of the Home Depot corpus)")
    return Path(found[0])


def grow(base: np.ndarray, n: int, noise: float, rng: np.random.Generator, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors: real rows moved towards other real rows, plus noise (module docstring)."""
    d = base.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        i, j = rng.integers(len(base), size=m), rng.integers(len(base), size=m)
        lam = rng.uniform(0, 0.5, size=(m, 1)).astype(np.float32)
        x = base[i] + lam * (base[j] - base[i]) + rng.standard_normal((m, d), dtype=np.float32) * (noise / np.sqrt(d))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    base_path, q_path = first_match(args.base), first_match(args.base_queries)
    base = np.load(base_path).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = np.load(q_path).astype(np.float32)[: args.queries]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cache = Path(args.cache) / f"grown-{args.n}-{args.noise}-{args.seed}-{base_path.stem}.npy"
    if cache.is_file():
        docs = np.load(cache)
    else:
        docs = grow(base, args.n, args.noise, rng)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, docs)
    ids = [f"d{i}" for i in range(args.n)]

    print(machine_info(args.threads))
    print(f"data: {args.n:,} x {docs.shape[1]} vectors grown from {len(base):,} Home Depot MiniLM title embeddings "
          f"({base_path.name}; lam ~ U(0, 0.5), noise {args.noise}); {len(queries):,} real MiniLM query embeddings; "
          f"k={args.k}; HNSW M={args.hnsw_m}, efConstruction={args.ef_construction}; {args.threads} threads everywhere\n")
    nn = faiss.IndexFlatIP(docs.shape[1])
    nn.add(base)
    print(f"structure: median cosine of a query to its nearest real title {np.median(nn.search(queries, 1)[0]):.3f}")
    del nn

    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(docs)
    (_, truth), t_truth = timed(lambda: flat.search(queries, args.k))
    flat.reset()
    print(f"ground truth: exact faiss IndexFlatIP, {len(queries) / t_truth:,.0f} QPS\n")

    builds, searchers = {}, {}
    raw = faiss.IndexHNSWFlat(docs.shape[1], args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    raw.hnsw.efConstruction = args.ef_construction
    _, builds["faiss IndexHNSWFlat"] = timed(lambda: raw.add(docs))

    def faiss_search(ef: int) -> np.ndarray:
        raw.hnsw.efSearch = ef
        return raw.search(queries, args.k)[1]

    searchers["faiss IndexHNSWFlat"] = faiss_search
    print(f"built faiss in {builds['faiss IndexHNSWFlat']:.0f} s", file=sys.stderr)

    if not args.skip_ours:
        ours = VectorIndex(dim=docs.shape[1], kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        _, builds["gcl VectorIndex"] = timed(lambda: ours.add(ids, docs))
        row_of = {d: i for i, d in enumerate(ids)}

        def ours_search(ef: int) -> np.ndarray:
            ours.ef_search = ef
            out = np.full((len(queries), args.k), -1, dtype=np.int64)
            for r, hits in enumerate(ours.search(queries, args.k)):
                out[r, : len(hits)] = [row_of[h.doc_id] for h in hits]
            return out

        searchers["gcl VectorIndex"] = ours_search
        print(f"built ours in {builds['gcl VectorIndex']:.0f} s", file=sys.stderr)

    if not args.skip_usearch:
        try:
            from usearch.index import Index
        except ImportError:
            print("usearch not installed (pip install usearch): skipped\n")
        else:
            us = Index(ndim=docs.shape[1], metric="ip", dtype="f32", connectivity=args.hnsw_m,
                       expansion_add=args.ef_construction, expansion_search=64)
            keys = np.arange(args.n, dtype=np.uint64)
            _, builds["usearch Index"] = timed(lambda: us.add(keys, docs, threads=args.threads))

            def usearch_search(ef: int) -> np.ndarray:
                us.expansion_search = ef
                m = us.search(queries, args.k, threads=args.threads)
                return np.asarray(m.keys, dtype=np.int64)

            searchers["usearch Index"] = usearch_search
            import usearch

            print(f"built usearch {usearch.__version__} in {builds['usearch Index']:.0f} s", file=sys.stderr)

    print("build (HNSW)               vectors/s      seconds")
    for name, t in builds.items():
        print(f"{name:<24} {args.n / t:>11,.0f} {t:>12.1f}")
    print()
    names = list(searchers)
    print("efSearch  " + "  ".join(f"{n + ' recall@' + str(args.k):>30} {'QPS':>8}" for n in names))
    for ef in args.ef_search:
        cells = []
        for name in names:
            found, t = timed(lambda: searchers[name](ef))
            cells.append(f"{recall_at_k(found, truth):>30.4f} {len(queries) / t:>8,.0f}")
        print(f"{ef:>8}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
