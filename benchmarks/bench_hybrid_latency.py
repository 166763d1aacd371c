"""Rough latency of POST /search per mode (dense, lexical, hybrid) on a small synthetic index with
the tiny test encoder, in-process (fastapi TestClient), and the cost of the lexical rebuild after a write.

    OMP_NUM_THREADS=1 python benchmarks/bench_hybrid_latency.py 10000

Each mode runs twice over the same 200 title queries (k = 10); the second pass is the one to read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def percentiles(ms: list[float]) -> str:
    ms = sorted(ms)
    return f"p50 {ms[len(ms) // 2]:.2f} ms  p99 {ms[int(len(ms) * .99)]:.2f} ms"


def main(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fastapi.testclient import TestClient
    from service_helpers import build_tiny_index, make_documents
    from tiny_models import make_tiny_sentence_transformer

    from gcl.encoders.model import BiEncoder
    from gcl.index.lexical import LexicalIndex
    from gcl.index.store import VectorIndex
    from gcl.service import ServiceSettings, create_app

    root = Path(tempfile.mkdtemp())
    md = make_tiny_sentence_transformer(root / "model")
    model = BiEncoder.load(md)
    docs = make_documents(n)
    base = build_tiny_index(model, md, root / "ix", docs)
    t0 = time.perf_counter()
    LexicalIndex(VectorIndex.load(base)).search(["x"], 1)
    print(f"lexical build {n} docs: {time.perf_counter() - t0:.2f}s")
    client = TestClient(create_app(ServiceSettings(index_dir=base), model=model))
    queries = list(docs["title"].sample(200, random_state=0))
    for mode in ("dense", "lexical", "hybrid", "dense", "lexical", "hybrid"):
        ms = []
        for q in queries:
            t = time.perf_counter()
            r = client.post("/search", json={"query": q, "k": 10, "mode": mode})
            ms.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
        print(f"{mode:8s} {percentiles(ms)} (in-process TestClient, 200 queries, k=10)")
    client.put("/documents/zz", json={"fields": {"title": "zanzibar teapot"}})  # the rebuild after a write
    t = time.perf_counter()
    client.post("/search", json={"query": "teapot", "k": 10, "mode": "lexical"})
    print(f"first lexical search after a write: {(time.perf_counter() - t) * 1000:.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, help="documents in the index")
    main(ap.parse_args().n)
