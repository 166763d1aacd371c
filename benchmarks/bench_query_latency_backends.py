"""One short query at a time through each backend of a ``gcl export`` directory, in-process.

``encode_query_texts(model, [q])`` for 200 short product queries after 20 warm-up ones; prints
p50 / p99 milliseconds per backend at the given torch / ONNX Runtime thread count:

    python benchmarks/bench_query_latency_backends.py --model /tmp/minilm_onnx --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a directory written by gcl export")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (default 1)")
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from gcl.encoders.onnx import load_backend
    from gcl.encoders.query import encode_query_texts

    torch.set_num_threads(args.threads)
    qs = ["cordless drill", "6 ft ladder", "kitchen faucet brushed nickel", "deck screws 3 in", "led bulbs 60w"] * 40
    for b in args.backends.split(","):
        m = load_backend(args.model, b.strip())
        for q in qs[:20]:
            encode_query_texts(m, [q])
        lat = []
        for q in qs:
            t = time.perf_counter()
            encode_query_texts(m, [q])
            lat.append(time.perf_counter() - t)
        print(f"{b:<10} {args.threads} thread(s): p50 {np.percentile(lat, 50) * 1e3:.2f} ms, "
              f"p99 {np.percentile(lat, 99) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
