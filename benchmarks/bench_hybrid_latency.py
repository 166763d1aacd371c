"""Rough latency of POST /search per mode (dense, lexical, hybrid) on a small synthetic index with
the tiny test encoder, in-process (fastapi TestClient), and the cost of the lexical rebuild after a write.

    OMP_NUM_THREADS=1 python benchmarks/bench_hybrid_latency.py 10000

Each mode runs twice over the same 200 title queries (k = 10); the second pass is the one to read.
"""
import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fastapi.testclient import TestClient
from gcl.encoders.model import BiEncoder
from tiny_models import make_tiny_sentence_transformer
from service_helpers import build_tiny_index, make_documents
from gcl.service import ServiceSettings, create_app
from gcl.index.lexical import LexicalIndex
from gcl.index.store import VectorIndex
root = Path(tempfile.mkdtemp())
md = make_tiny_sentence_transformer(root / "model"); model = BiEncoder.load(md)
n = int(sys.argv[1])
docs = make_documents(n)
base = build_tiny_index(model, md, root / "ix", docs)
t0 = time.perf_counter(); LexicalIndex(VectorIndex.load(base)).search(["x"], 1); print(f"lexical build {n} docs: {time.perf_counter()-t0:.2f}s")
c = TestClient(create_app(ServiceSettings(index_dir=base), model=model))
qs = [t for t in docs["title"].sample(200, random_state=0)]
for mode in ("dense", "lexical", "hybrid", "dense", "lexical", "hybrid"):
    ts = []
    for q in qs:
        t = time.perf_counter(); r = c.post("/search", json={"query": q, "k": 10, "mode": mode}); ts.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200
    ts.sort(); print(f"{mode:8s} p50 {ts[len(ts)//2]:.2f} ms  p99 {ts[int(len(ts)*.99)]:.2f} ms (in-process TestClient, 200 queries, k=10)")
# rebuild after a write
c.put("/documents/zz", json={"fields": {"title": "zanzibar teapot"}})
t = time.perf_counter(); c.post("/search", json={"query": "teapot", "k": 10, "mode": "lexical"}); print(f"first lexical search after a write: {(time.perf_counter()-t)*1000:.1f} ms")
