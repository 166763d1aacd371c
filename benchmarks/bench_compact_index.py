"""Compressed index kinds at scale: memory, recall@10 against exact, QPS; gcl vs faiss used directly.

Data: ``--n`` clustered unit vectors of dimension ``--dim`` (default 1,000,000 x 384, MiniLM's
width), generated, since no cached model embeddings of a large corpus exist here::

    x = normalise(c_j + s * g / sqrt(d)),   c_j one of --clusters random unit centres,
    s ~ U(0.6, 1.2) per vector, g ~ N(0, I)

(cosine to the centre 0.64-0.86, like a title to its product family). Queries are drawn the same
way. Ground truth: exact top-k by faiss ``IndexFlatIP``.

For each kind (and ``exact`` as the baseline) the index is built with ``VectorIndex`` and saved;
then, each in a fresh process, (a) gcl loads the directory (``VectorIndex.load``: codes in RAM,
``vectors.npy`` memory-mapped) and searches all queries in one call, and (b) faiss is used
directly on the same ``vectors.faiss`` with the same parameters: ``search(q, rescore * k)`` and
the candidates re-scored with numpy from the same memory-mapped ``vectors.npy``. Reported:
RSS growth at load (anonymous memory, i.e. what the index holds in RAM; file-backed pages of the
memory map are reported apart: the OS may drop them), the faiss file size, recall@k, QPS.
Extrapolation to 10M: per-vector bytes x 10M.

    python benchmarks/bench_compact_index.py                           # 1M x 384, sq8 and ivfpq
    python benchmarks/bench_compact_index.py --n 200000 --kinds sq8 hnsw_sq8 ivfpq
    python benchmarks/bench_compact_index.py --kinds binary --rescore 4 16 64   # sign bits (faiss IndexBinary*)

For the binary kinds "faiss direct" reads ``vectors.faiss`` with ``faiss.read_index_binary`` and
searches the queries' sign bits (``np.packbits(q > 0)``) by Hamming distance.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KINDS = ("sq8", "hnsw_sq8", "ivfpq", "binary", "binary_hnsw")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from gcl.index.base import IndexParams, QuantParams

    q, h = QuantParams(), IndexParams()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="documents (default 1,000,000)")
    p.add_argument("--dim", type=int, default=384, help="vector dimension (default 384)")
    p.add_argument("--queries", type=int, default=1000, help="queries (default 1000)")
    p.add_argument("--clusters", type=int, default=2000, help="cluster centres (default 2000)")
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--kinds", nargs="+", default=["sq8", "ivfpq"], choices=KINDS, help="kinds to measure")
    p.add_argument("--rescore", type=int, nargs="+", default=[q.rescore], help="re-scoring depths (x k)")
    p.add_argument("--nlist", type=int, default=q.nlist, help="ivfpq cells")
    p.add_argument("--nprobe", type=int, default=q.nprobe, help="ivfpq cells scanned")
    p.add_argument("--pq-m", type=int, default=q.pq_m, help="ivfpq sub-vectors")
    p.add_argument("--train-size", type=int, default=q.train_size, help="vectors the quantiser trains on")
    p.add_argument("--hnsw-m", type=int, default=16, help="hnsw_sq8 graph degree (default 16)")
    p.add_argument("--ef-construction", type=int, default=100, help="hnsw_sq8 build breadth (default 100)")
    p.add_argument("--ef-search", type=int, default=h.ef_search, help="hnsw_sq8 search breadth")
    p.add_argument("--threads", type=int, default=1, help="faiss threads for build and search (default 1)")
    p.add_argument("--work", default="runs/bench_compact", help="where vectors and indexes are written")
    p.add_argument("--keep", action="store_true", help="keep the built indexes")
    p.add_argument("--measure", nargs=4, metavar=("WHO", "DIR", "QUERIES", "TRUTH"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss() -> dict[str, int]:
    """Resident memory of this process by kind (bytes), from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssFile")):
            name, value = line.split(":")
            out[name] = int(value.split()[0]) * 1024
    return out


def clustered(n: int, dim: int, clusters: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors around random unit centres (module docstring)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        s = rng.uniform(0.6, 1.2, size=(m, 1)).astype(np.float32)
        x = centres[rng.integers(clusters, size=m)] + s * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def measure(who: str, directory: str, queries_path: str, truth_path: str) -> dict:
    """In a fresh process: load the index (gcl) or its faiss file (faiss), search, report."""
    import faiss

    faiss.omp_set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    queries, truth = np.load(queries_path), np.load(truth_path)
    k, rescore = truth.shape[1], int(os.environ.get("BENCH_RESCORE", "4"))
    d = Path(directory)
    before = rss()
    if who == "gcl":
        from gcl.index import VectorIndex

        index = VectorIndex.load(d)
        if hasattr(index, "quant"):
            from dataclasses import replace

            index.quant = replace(index.quant, rescore=rescore)
        loaded = rss()
        t0 = time.perf_counter()
        results = index.search(queries, k)
        seconds = time.perf_counter() - t0
        found = np.array([[int(h.doc_id[1:]) for h in hits] + [-1] * (k - len(hits)) for hits in results])
    else:
        manifest = json.loads((d / "manifest.json").read_text())
        binary = manifest["kind"] in ("binary", "binary_hnsw")
        index = (faiss.read_index_binary if binary else faiss.read_index)(str(d / "vectors.faiss"))
        vectors = np.load(d / "vectors.npy", mmap_mode="r")
        params = None
        if manifest["kind"] == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=manifest["params"]["nprobe"])
        elif manifest["kind"] in ("hnsw_sq8", "binary_hnsw"):
            params = faiss.SearchParametersHNSW(efSearch=max(manifest["params"]["ef_search"], rescore * k))
        loaded = rss()
        t0 = time.perf_counter()
        q_in = np.packbits(queries > 0, axis=1) if binary else queries  # sign bits for a binary index
        _, cand = index.search(q_in, rescore * k, params=params)  # labels = rows (written in order)
        found = np.empty((len(queries), k), dtype=np.int64)
        for i, (q, c) in enumerate(zip(queries, cand)):
            c = c[c >= 0]
            order = np.argsort(-(vectors[np.sort(c)] @ q), kind="stable")[:k]
            found[i] = np.sort(c)[order]
        seconds = time.perf_counter() - t0
        found_approx = cand[:, :k]
    after = rss()
    out = {"who": who, "ram_anon": loaded["RssAnon"] - before["RssAnon"],
           "ram_file_after_search": after["RssFile"] - before["RssFile"],
           "recall": recall(found, truth), "qps": len(queries) / seconds}
    if who == "faiss":
        out["recall_no_rescore"] = recall(found_approx, truth)
    return out


def build(kind: str, docs: np.ndarray, args, out: Path) -> float:
    from gcl.index import VectorIndex

    opts = {} if kind == "exact" else dict(rescore=args.rescore[0], nlist=args.nlist, nprobe=args.nprobe,
                                           pq_m=args.pq_m, train_size=args.train_size)
    index = VectorIndex(dim=docs.shape[1], kind=kind, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                        ef_search=args.ef_search, **opts)
    t0 = time.perf_counter()
    for start in range(0, len(docs), 100_000):
        rows = range(start, min(start + 100_000, len(docs)))
        index.add([f"d{i}" for i in rows], docs[rows.start : rows.stop])
    index.save(out)
    return time.perf_counter() - t0


def run_measure(who: str, directory: Path, work: Path, args, rescore: int) -> dict:
    env = {**os.environ, "BENCH_THREADS": str(args.threads), "BENCH_RESCORE": str(rescore), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--measure", who, str(directory), str(work / "queries.npy"), str(work / "truth.npy")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    import faiss

    faiss.omp_set_num_threads(args.threads)
    work = Path(args.work) / f"n{args.n}-d{args.dim}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    docs = clustered(args.n, args.dim, args.clusters, seed=0)
    queries = clustered(args.queries, args.dim, args.clusters, seed=1)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(docs)
    truth = flat.search(queries, args.k)[1]
    del flat
    np.save(work / "queries.npy", queries)
    np.save(work / "truth.npy", truth)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {args.n:,} x {args.dim} clustered vectors ({args.clusters} centres), {args.queries} queries, k={args.k}; "
          f"faiss {faiss.__version__}, {args.threads} thread(s); load average {load} on {os.cpu_count()} CPUs; "
          f"data + ground truth {time.perf_counter() - t0:.0f} s", flush=True)
    print("| kind | build s | faiss file MB | RAM at load MB (anon) | vectors.npy MB | rescore | "
          "recall@10 gcl | QPS gcl | recall@10 faiss direct (+rescore) | QPS faiss direct | faiss recall no rescore |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for kind in ["exact", *args.kinds]:
        out = work / kind
        shutil.rmtree(out, ignore_errors=True)
        seconds = build(kind, docs, args, out)
        faiss_mb = (out / "vectors.faiss").stat().st_size / 2**20
        vec_mb = (out / "vectors.npy").stat().st_size / 2**20 if (out / "vectors.npy").is_file() else 0.0
        for rescore in (args.rescore if kind != "exact" else [1]):
            ours = run_measure("gcl", out, work, args, rescore)
            theirs = run_measure("faiss", out, work, args, rescore) if kind != "exact" else None
            cells = [kind, f"{seconds:.0f}", f"{faiss_mb:,.0f}", f"{ours['ram_anon'] / 2**20:,.0f}", f"{vec_mb:,.0f}",
                     "-" if kind == "exact" else str(rescore), f"{ours['recall']:.4f}", f"{ours['qps']:,.0f}",
                     f"{theirs['recall']:.4f}" if theirs else "-", f"{theirs['qps']:,.0f}" if theirs else "-",
                     f"{theirs['recall_no_rescore']:.4f}" if theirs else "-"]
            print("| " + " | ".join(cells) + " |", flush=True)
        per_vector = (faiss_mb * 2**20) / args.n
        print(f"#   {kind}: {per_vector:,.0f} B/vector in the faiss file -> {per_vector * 1e7 / 2**30:,.1f} GiB of "
              f"codes at 10M (+ {vec_mb * 2**20 / args.n * 1e7 / 2**30:,.1f} GiB vectors.npy on disk); gcl's RAM "
              f"at load {ours['ram_anon'] / args.n:,.0f} B/vector -> {ours['ram_anon'] / args.n * 1e7 / 2**30:,.1f} GiB "
              f"at 10M", flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"# load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
