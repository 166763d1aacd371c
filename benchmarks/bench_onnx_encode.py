"""Document encoding throughput and fidelity of the ONNX backends against the PyTorch path.

Encodes N Home Depot titles (corpus_1, first N in corpus order) with each backend of a
``gcl export`` directory (torch = the saved PyTorch model, onnx = fp32 graph, onnx-int8 = dynamic
int8 graph), one intra-op thread each, in ROUNDS interleaved rounds (torch, onnx, onnx-int8,
torch, ...) so that a change of machine load hits every backend alike; reports the median
titles/s per backend, its ratio to torch, and the cosine between each backend's rows and torch's
(min / mean over the N titles):

    cos_i = <e_i^torch, e_i^backend>     (rows are L2-normalised)

    gcl export --model minilm --out /tmp/minilm_onnx
    OMP_NUM_THREADS=1 python benchmarks/bench_onnx_encode.py --model /tmp/minilm_onnx --n 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a directory written by gcl export")
    p.add_argument("--n", type=int, default=2000, help="titles encoded per round (default 2000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    args = p.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch

    from gcl.data.sources import load_benchmark
    from gcl.encoders.onnx import load_backend
    from gcl.training.config import DataConfig

    torch.set_num_threads(1)
    corpus = load_benchmark(DataConfig(source="homedepot"), announce=lambda m: None).corpus_1
    docs = pd.DataFrame({"title": corpus["title"].iloc[: args.n].tolist()})
    names = [b.strip() for b in args.backends.split(",")]
    models = {b: load_backend(args.model, b) for b in names}
    for m in models.values():  # warm-up
        m.encode_documents(docs.iloc[:64], batch_size=args.batch_size)
    rates = {b: [] for b in names}
    emb = {}
    for r in range(args.rounds):
        for b in names:
            t0 = time.perf_counter()
            emb[b] = models[b].encode_documents(docs, batch_size=args.batch_size)
            rates[b].append(len(docs) / (time.perf_counter() - t0))
        print(f"round {r + 1}: " + ", ".join(f"{b} {rates[b][-1]:.0f}/s" for b in names), file=sys.stderr)
    base = statistics.median(rates[names[0]])
    print(f"{len(docs)} Home Depot titles, {args.rounds} interleaved rounds, 1 thread, batch {args.batch_size}")
    print(f"{'backend':<10} {'titles/s (median)':>18} {'x ' + names[0]:>9} {'cos min':>9} {'cos mean':>9}")
    for b in names:
        cos = (emb[names[0]] * emb[b]).sum(axis=1)
        med = statistics.median(rates[b])
        print(f"{b:<10} {med:>18.0f} {med / base:>9.2f} {float(np.min(cos)):>9.5f} {float(np.mean(cos)):>9.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
