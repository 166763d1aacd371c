"""``gcl serve`` search latency and throughput over HTTP, query encoding included, versus in-process.

Setup: an exact index of N synthetic structured vectors (default 100,000 x 384, Gaussian blobs
around random unit centres, the same generator as ``bench_index.py``) recorded as made by
MiniLM, so the service encodes each query with the real offline MiniLM. Queries are short product
queries from the synthetic dataset.

* **peer** (in-process): for each query, ``encode_query_texts(model, [q])`` then
  ``VectorIndex.search(q, k)`` -- what a program embedding the index does; one query at a time.
* **service**: ``gcl serve`` in a subprocess on 127.0.0.1; a *second process* (this script with
  ``--client``) sends ``POST /search`` with C keep-alive connections (one thread each) for a fixed
  duration and at most a fixed number of requests, after a warm-up. Latency is client-side
  (request sent -> response parsed); throughput is completed requests / wall seconds.

The ratio service / peer is the cost of HTTP, JSON, validation and the service's locks.

    python benchmarks/bench_serve.py                           # 100k docs, C = 1 and 4, 20 s each
    python benchmarks/bench_serve.py --n 20000 --duration 5    # a quick run

Only loopback traffic. Timings depend on the machine and its load (the header says both); the
load generator shares the CPU with the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="indexed documents (default 100,000)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--kind", choices=("exact", "hnsw"), default="exact")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="client connections (default 1 4)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per concurrency (default 20)")
    p.add_argument("--max-requests", type=int, default=5000, help="cap on requests per concurrency")
    p.add_argument("--peer-queries", type=int, default=500, help="queries timed in-process (default 500)")
    p.add_argument("--work", default=None, help="directory for the index (default: a temporary one)")
    p.add_argument("--threads", type=int, default=1, help="torch/faiss threads, in-process and gcl serve --threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="minilm",
                   help="query encoder recorded in the index (a 384-d model; default minilm); with --encoder-backend "
                        "onnx|onnx-int8 a directory written by gcl export")
    p.add_argument("--encoder-backend", default="torch", choices=("torch", "onnx", "onnx-int8"),
                   help="query encoding engine, in-process and gcl serve --encoder-backend (default torch)")
    # client mode (internal): the load generator process
    p.add_argument("--client", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def queries(n: int = 400) -> list[str]:
    from gcl.data.synthetic import make_synthetic

    ds = make_synthetic(n_queries=n, n_docs=600, seed=0)
    return ds.queries[ds.queries.columns[0]].astype(str).tolist()


def pct(x, q) -> float:
    return float(np.percentile(np.asarray(x) * 1000.0, q))


# ---------------------------------------------------------------------------- load generator process
def run_client(spec: dict) -> dict:
    host, port = "127.0.0.1", spec["port"]
    texts, k = spec["queries"], spec["k"]
    deadline_box = {}
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    budget = [spec["max_requests"]]

    def worker(wid: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        i = wid
        while True:
            with lock:
                if budget[0] <= 0 or time.perf_counter() >= deadline_box["t"]:
                    break
                budget[0] -= 1
            body = json.dumps({"query": texts[i % len(texts)], "k": k})
            t0 = time.perf_counter()
            conn.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            dt = time.perf_counter() - t0
            ok = resp.status == 200 and len(json.loads(data)["hits"]) == k
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    errors[0] += 1
            i += spec["concurrency"]
        conn.close()

    # warm-up: a few requests on one connection (not timed)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for q in texts[:20]:
        conn.request("POST", "/search", body=json.dumps({"query": q, "k": k}), headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(spec["concurrency"])]
    t_start = time.perf_counter()
    deadline_box["t"] = t_start + spec["duration"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    return {"latencies": lat, "errors": errors[0], "wall": wall}


# ---------------------------------------------------------------------------- main
def build_index(out: Path, n: int, kind: str, seed: int, model: str = "minilm") -> None:
    from bench_index import structured

    from gcl.index import VectorIndex

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), 384)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = structured(rng, n, centres, 1.0)
    index = VectorIndex(dim=384, kind=kind, model=model)
    index.add([f"doc{i:07d}" for i in range(n)], x, [{"title": f"product {i}"} for i in range(n)])
    index.save(out)


def peer(index_dir: Path, texts: list[str], k: int, n_queries: int, backend: str = "torch") -> dict:
    from gcl.encoders.query import encode_query_texts, load_index_encoder
    from gcl.index import VectorIndex

    index = VectorIndex.load(index_dir)
    model = load_index_encoder(index.dim, index.model, backend=backend)
    for q in texts[:20]:  # warm-up
        index.search(encode_query_texts(model, [q]), k)
    lat = []
    t_all = time.perf_counter()
    for i in range(n_queries):
        t0 = time.perf_counter()
        index.search(encode_query_texts(model, [texts[i % len(texts)]]), k)
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_all
    return {"latencies": lat, "errors": 0, "wall": wall}


def summary(name: str, r: dict) -> dict:
    lat = r["latencies"]
    return {"name": name, "n": len(lat), "errors": r["errors"], "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "qps": len(lat) / r["wall"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.client:
        print(json.dumps(run_client(json.loads(Path(args.client).read_text()))))
        return 0
    import torch

    from bench_index import machine_info
    from gcl.cli.serve import set_threads

    set_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_serve-"))
    index_dir = work / "index"
    texts = queries()
    t0 = time.perf_counter()
    build_index(index_dir, args.n, args.kind, args.seed, args.model)
    print(f"built a {args.kind} index of {args.n} x 384 in {time.perf_counter() - t0:.1f}s")
    print(machine_info(torch.get_num_threads()).replace("faiss threads", "torch/faiss threads"))

    rows = [summary("in-process: encode_query_texts + VectorIndex.search", peer(index_dir, texts, args.k, args.peer_queries,
                                                                                         args.encoder_backend))]

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "gcl.cli.main", "serve", "--index", str(index_dir), "--host",
                               "127.0.0.1", "--port", str(port), "--log-level", "warning", "--threads", str(args.threads),
                               "--encoder-backend", args.encoder_backend],
                              env=env)
    try:
        _wait_healthy(port, server)
        for c in args.concurrency:
            spec = work / f"client-{c}.json"
            spec.write_text(json.dumps({"port": port, "queries": texts, "k": args.k, "concurrency": c,
                                        "duration": args.duration, "max_requests": args.max_requests}))
            out = subprocess.run([sys.executable, __file__, "--client", str(spec)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            rows.append(summary(f"HTTP gcl serve, {c} connection(s), second process", json.loads(out)))
    finally:
        server.terminate()
        server.wait(timeout=60)

    base = rows[0]
    print(f"\n{args.n} documents, k={args.k}, query encoding ({args.model}, {args.encoder_backend}) included")
    print(f"{'':58} {'requests':>8} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'q/s':>8} {'p50 x peer':>10} {'q/s / peer':>10}")
    for r in rows:
        print(f"{r['name']:58} {r['n']:>8} {r['errors']:>4} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['qps']:>8.1f} "
              f"{r['p50_ms'] / base['p50_ms']:>10.2f} {r['qps'] / base['qps']:>10.2f}")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gcl serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("gcl serve did not start")


if __name__ == "__main__":
    sys.exit(main())
