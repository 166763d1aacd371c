"""Training throughput: gcl's training step versus a plain sentence-transformers MNRL loop.

Both train the offline all-MiniLM-L6-v2 (``gcl.encoders.text.load_sentence_transformer("minilm")``,
two copies of the same weights) on the same Home Depot training pairs (``load_benchmark``; the
synthetic set when the data is absent), with the same batch size, ``max_seq_length``, optimiser
(AdamW, lr 5e-5, weight decay 0.01), gradient clipping (1.0) and a symmetric in-batch loss at
temperature 0.05, in the same process, one step of each in turn:

* **gcl** -- ``Trainer.train_step()``: texts tokenised once up front (``TokenCache``), each batch
  padded to its own longest sequence, GCL loss (linear weights, same-query masking).
* **sentence-transformers** -- the loop one writes by hand: ``model.tokenize`` on the batch's
  texts, ``MultipleNegativesRankingLoss`` (``directions=("query_to_doc", "doc_to_query")``,
  ``partition_mode="per_direction"``: CLIP's symmetric loss), ``backward``, clip, ``AdamW.step``.

Printed: pairs/s of each (median over the timed steps), their ratio, the tokeniser's share of a
step, and an *estimate* of achieved FLOP/s: 6 x (non-embedding parameters) x (tokens processed,
padding included) per step for forward + backward, attention's sequence-squared term ignored.

    python benchmarks/bench_train_throughput.py                   # batch 64, 2 warm-up + 10 timed steps each
    python benchmarks/bench_train_throughput.py --steps 3 --data synthetic
    python benchmarks/bench_train_throughput.py --threads 0       # torch's default thread count
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-seq-length", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    p.add_argument("--data", default="homedepot", help="homedepot (falls back to synthetic) | synthetic")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a small shared machine more threads than free cores "
                        "made each step ~10x slower; 0 = torch's default)")
    return p.parse_args(argv)


def machine_info() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"platform: {platform.platform()}; python {platform.python_version()}; cpu count {os.cpu_count()}; "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average {load[0]:.2f}")


class TokenCounter:
    """Counts the tokens (padding included) a collate/tokenise function hands to the model."""

    def __init__(self) -> None:
        self.tokens = 0

    def wrap(self, fn):
        def counted(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.tokens += int(out["input_ids"].numel())
            return out

        return counted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from gcl.config import from_dict
    from gcl.data.sources import load_benchmark
    from gcl.encoders.text import load_sentence_transformer
    from gcl.training.batching import RandomPairSampler
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer

    print(machine_info())
    bench = load_benchmark(from_dict(TrainConfig, {"data": {"source": args.data}}).data, announce=print)
    temperature, lr = 0.05, 5e-5
    cfg = from_dict(TrainConfig, {
        "data": {"source": args.data},
        "model": {"text_model": "minilm", "max_seq_length": args.max_seq_length},
        "loss": {"temperature": temperature},
        "batch": {"batch_size": args.batch_size, "sampler": "random"},
        "optim": {"steps": 10_000, "lr": lr, "warmup_steps": 0, "schedule": "constant", "clip_grad_norm": 1.0},
        "eval": {"every": -1}, "progress": False, "out_dir": tempfile.mkdtemp(prefix="bench-train-"),
    })
    t0 = time.perf_counter()
    trainer = Trainer(cfg, splits=bench)
    print(f"data: {bench.name}, {len(trainer.pairs)} training pairs; gcl pre-tokenised "
          f"{len(trainer.pairs.query_texts) + len(trainer.pairs.doc_texts)} unique texts in "
          f"{time.perf_counter() - t0:.1f}s (model load included, paid once)")
    gcl_tokens = TokenCounter()
    trainer.encoding.q_tokens.collate = gcl_tokens.wrap(trainer.encoding.q_tokens.collate)
    trainer.encoding.d_tokens.collate = gcl_tokens.wrap(trainer.encoding.d_tokens.collate)

    # ---- the hand-written sentence-transformers loop, same weights, same pairs
    st = load_sentence_transformer("minilm")
    st.max_seq_length = args.max_seq_length
    st.train()
    mnrl = MultipleNegativesRankingLoss(st, scale=1.0 / temperature, directions=("query_to_doc", "doc_to_query"),
                                        partition_mode="per_direction")
    decay = [p for p in st.parameters() if p.ndim >= 2]
    no_decay = [p for p in st.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    pairs = trainer.pairs
    sampler = RandomPairSampler(pairs, args.batch_size, seed=1)
    st_tokens = TokenCounter()
    tokenize = st_tokens.wrap(getattr(st, "preprocess", None) or st.tokenize)
    tok_times: list[float] = []

    def st_step() -> float:
        rows = sampler.next_batch()
        queries = [pairs.query_texts[c] for c in pairs.query_code[rows]]
        docs = [pairs.doc_texts[c] for c in pairs.doc_code[rows]]
        t = time.perf_counter()
        features = [tokenize(queries), tokenize(docs)]
        tok_times.append(time.perf_counter() - t)
        loss = mnrl(features, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    methods = {"gcl": trainer.train_step, "sentence-transformers": st_step}
    for _ in range(args.warmup):
        for fn in methods.values():
            fn()
    gcl_tokens.tokens = st_tokens.tokens = 0
    tok_times.clear()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.steps):
        for name, fn in methods.items():  # alternate, so load changes hit both alike
            t = time.perf_counter()
            loss = fn()
            times[name].append(time.perf_counter() - t)
            assert np.isfinite(loss), (name, loss)

    n_params = sum(p.numel() for n, p in st.named_parameters() if "embeddings" not in n)
    counts = {"gcl": gcl_tokens.tokens / args.steps, "sentence-transformers": st_tokens.tokens / args.steps}
    print(f"\nbatch {args.batch_size} pairs, max_seq_length {args.max_seq_length}, {args.warmup} warm-up + "
          f"{args.steps} timed steps each (alternating); non-embedding parameters {n_params / 1e6:.1f}M")
    print(f"{'method':<24}{'median s/step':>14}{'pairs/s':>10}{'tokens/step':>13}{'est. GFLOP/s':>14}")
    rate = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = args.batch_size / med
        gflops = 6 * n_params * counts[name] / med / 1e9
        print(f"{name:<24}{med:>14.3f}{rate[name]:>10.1f}{counts[name]:>13.0f}{gflops:>14.1f}")
    tok = statistics.median(tok_times)
    print(f"\nratio gcl / sentence-transformers: {rate['gcl'] / rate['sentence-transformers']:.2f}x (pairs/s, medians)")
    print(f"tokenising a batch in the sentence-transformers loop: {tok * 1000:.1f} ms median "
          f"({100 * tok / statistics.median(times['sentence-transformers']):.1f}% of its step)")
    print("FLOP/s are an estimate: 6 x non-embedding params x tokens (padding included) per step.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
