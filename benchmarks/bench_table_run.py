"""One run of the results table (configs/homedepot_gcl_fast.yaml + gcl evaluate): what the frozen
layers' stored outputs save, before vs after, phase by phase.

A table run is ``gcl train configs/homedepot_gcl_fast.yaml`` (MiniLM, lower 4 of 6 layers frozen)
then ``gcl evaluate`` of its model. Three phases run the frozen layers; each is timed both ways
on the same model, interleaved where it is repeated, in one process (same load for both):

* hidden-cache build: ``B(x)`` of the 29,997 training texts -- *before*: computed (every run did);
  *after*: read from ``$GCL_CACHE_DIR`` (every run after the first with this frozen part);
* dev evaluation (10,000 documents + the dev queries, every half epoch): *before*: the whole
  tower (``tower.encode``); *after*: only the top layers on stored ``B(x)``;
* evaluation of the model on the four test splits (two 27k-title corpora, 4 x 2,000 queries;
  no document-embedding cache, a new model has none): *before* / *after* likewise, *after* both
  with an empty store for the test corpora (the first model of the table) and a filled one
  (every later model).

The steps themselves do not change (benchmarks/bench_train_epoch.py). Printed: seconds per phase
both ways, and one run's total projected from them with ``--evals`` dev evaluations.

    OMP_NUM_THREADS=2 python benchmarks/bench_table_run.py              # 2 threads, 2 repeats
    python benchmarks/bench_table_run.py --repeat 1 --skip-test-eval    # quicker: no test splits
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/homedepot_gcl_fast.yaml")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="interleaved repeats of the dev evaluation")
    p.add_argument("--evals", type=int, default=16, help="dev evaluations of one run, for the projection (8 epochs)")
    p.add_argument("--skip-test-eval", action="store_true", help="do not time the evaluation on the test splits")
    p.add_argument("--pairs", type=int, default=0,
                   help="keep a random N training pairs (0: all): a smaller cache build, projected per text")
    p.add_argument("--dev-corpus-size", type=int, default=None, help="eval.dev_corpus_size (default: the config's)")
    p.add_argument("--encode-only", type=int, default=0,
                   help="only time encoding N corpus_2 titles with MiniLM, lower 4 layers through the store vs the "
                        "whole tower (interleaved --repeat times; what dev evaluation and gcl evaluate spend)")
    p.add_argument("--test-docs", type=int, default=0,
                   help="instead of the four test splits, time encoding N random corpus_2 documents (0: the splits)")
    return p.parse_args(argv)


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.1f} {b:.1f} {c:.1f}"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def make_trainer(cfg_path: str, splits, out: str, overrides=()):
    from gcl.config import load_config
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer

    cfg = load_config(TrainConfig, cfg_path, ["progress=false", f"out_dir={out}", *overrides])
    return Trainer(cfg, splits=splits)


def n_texts(tr) -> int:
    return len(tr.encoding.q_tokens.lengths) + len(tr.encoding.d_tokens.lengths)


def build_seconds(tr) -> float:
    return tr.encoding.q_tokens.build_seconds + tr.encoding.d_tokens.build_seconds


def test_eval(model, bench) -> tuple[float, dict, dict]:
    """Seconds, nDCG@10 per split and seconds per part (document encoding, query encoding,
    search, metrics) of the four test splits, without the document-embedding cache."""
    import gcl.evaluation.evaluator as E
    import gcl.evaluation.retrievers as R
    from gcl.evaluation.evaluator import Protocol
    from gcl.evaluation.run import evaluate_splits

    parts = {"encode documents": 0.0, "search": 0.0, "metrics": 0.0, "retrieve (all)": 0.0}
    originals = (R.DenseRetriever.corpus_embeddings, R.DenseRetriever.search, R.exact_search, E.compute_metrics)

    def wrap(fn, name):
        def inner(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] += time.perf_counter() - t0
        return inner

    R.DenseRetriever.corpus_embeddings = wrap(originals[0], "encode documents")
    R.DenseRetriever.search = wrap(originals[1], "retrieve (all)")
    R.exact_search, E.compute_metrics = wrap(originals[2], "search"), wrap(originals[3], "metrics")
    try:
        retriever = R.DenseRetriever(model, show_progress=False, cache_dir=None)
        secs, (results, _) = timed(lambda: evaluate_splits(bench, retriever, Protocol(), announce=lambda m: None))
    finally:
        R.DenseRetriever.corpus_embeddings, R.DenseRetriever.search, R.exact_search, E.compute_metrics = originals
    parts["encode queries"] = parts.pop("retrieve (all)") - parts["encode documents"] - parts["search"]
    parts["other (tasks, judging)"] = secs - sum(parts.values())
    return secs, {r.name: r.summary["ndcg@10"] for r in results}, parts


def encode_only(args, bench, cfg, tmp) -> None:
    """Encoding N titles: whole tower vs top layers on stored B(x) (empty store once, then filled)."""
    from gcl.encoders.config import BiEncoderConfig
    from gcl.encoders.model import BiEncoder
    from gcl.training.frozen_reuse import CachedBottomEncoder

    corpus_2 = bench.eval_split("zero_shot").documents
    docs = corpus_2.sample(n=min(args.encode_only, len(corpus_2)), random_state=0)
    model = BiEncoder(BiEncoderConfig(text_model=cfg.model.text_model, max_seq_length=cfg.model.max_seq_length)).eval()
    enc = CachedBottomEncoder(model, cfg.model.freeze_layers, cache_dir=Path(tmp) / "cache")
    times = {"whole tower": [], "stored B, empty store": [], "stored B, filled store": []}
    model.encode_documents(docs.head(64))  # warm-up (first-call costs)
    ref = None
    for r in range(args.repeat):
        for way in ("whole tower", "stored B, empty store", "stored B, filled store"):
            if way == "stored B, empty store" and r:
                continue
            model.cached_bottom = None if way == "whole tower" else enc
            t, emb = timed(lambda: model.encode_documents(docs))
            times[way].append(t)
            ref = emb if ref is None else ref
            print(f"  {way:<24} {t:8.1f}s  max |diff| {np.abs(emb - ref).max():.1e}   {load()}", flush=True)
    base = statistics.median(times["whole tower"])
    print(f"\n{len(docs)} corpus_2 titles, MiniLM, freeze_layers={cfg.model.freeze_layers}, {args.threads} threads, {load()}")
    for way, v in times.items():
        print(f"{way:<24}{statistics.median(v):>8.1f}s  {base / statistics.median(v):5.2f}x   ({len(v)} runs)")


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from gcl.data.sources import load_benchmark
    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    import gcl.training.trainer  # noqa: F401  (imports paid here, not inside the first timed phase)
    import sentence_transformers  # noqa: F401

    tmp = tempfile.mkdtemp(prefix="bench-table-run-")
    os.environ["GCL_CACHE_DIR"] = str(Path(tmp) / "cache")  # an empty store: the first run of a table
    cfg = load_config(TrainConfig, args.config, [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu count {os.cpu_count()}; {load()}")
    secs_data, bench = timed(lambda: load_benchmark(cfg.data))
    print(f"data load + split: {secs_data:.1f}s; {load()}", flush=True)
    from bench_train_epoch import subset
    from gcl.data.schema import DOC_ID, QUERY_ID

    j = bench.train.judgments
    texts_full = j[QUERY_ID].nunique() + j[DOC_ID].nunique()
    splits = subset(bench, args.pairs)
    overrides = [] if args.dev_corpus_size is None else [f"eval.dev_corpus_size={args.dev_corpus_size}"]
    rows: dict[str, dict[str, list[float]]] = {}

    def add(phase, way, secs):
        rows.setdefault(phase, {"before": [], "after": []})[way].append(secs)
        print(f"  {phase:<34} {way:<7} {secs:8.1f}s   {load()}", flush=True)

    if args.encode_only:
        return encode_only(args, bench, cfg, tmp)
    # 1. the hidden cache: computed (empty store, as every run did) vs read (every later run)
    t, fresh = timed(lambda: make_trainer(args.config, splits, f"{tmp}/run", overrides))
    add("trainer setup (model, tokens, cache)", "before", t)
    add("hidden-cache build", "before", build_seconds(fresh))
    t, tr = timed(lambda: make_trainer(args.config, splits, f"{tmp}/run", overrides))
    add("trainer setup (model, tokens, cache)", "after", t)
    add("hidden-cache build", "after", build_seconds(tr))
    same = all(torch.equal(getattr(fresh.encoding, s).flat, getattr(tr.encoding, s).flat) for s in ("q_tokens", "d_tokens"))
    print(f"  stored states bit-identical to computed ones: {same}; {n_texts(tr)} texts "
          f"(the full training split: {texts_full}; x{texts_full / n_texts(tr):.2f} to project)")
    del fresh
    # 2. dev evaluation: whole tower vs top layers on stored states (first call fills the store)
    tr.train_step()
    tr.model.eval()
    from gcl.training.dev_eval import DevEvaluator

    t, ev = timed(lambda: DevEvaluator(tr.splits, tr.cfg.eval, seed=tr.cfg.seed))
    print(f"dev evaluator setup (once per run): {t:.1f}s")
    enc = tr.model.cached_bottom
    tr.model.cached_bottom = None
    t, _ = timed(lambda: ev(tr.model))
    print(f"  warm-up dev evaluation (whole tower; first-call costs), not counted: {t:.1f}s")
    tr.model.cached_bottom = enc
    t, m_after = timed(lambda: ev(tr.model))
    add("dev eval, first of the run", "after", t)
    for r in range(args.repeat):
        tr.model.cached_bottom = None
        t, m_before = timed(lambda: ev(tr.model))
        add("dev eval", "before", t)
        tr.model.cached_bottom = enc
        t, m_after = timed(lambda: ev(tr.model))
        add("dev eval", "after", t)
    diff = max(abs(m_before[k] - m_after[k]) for k in m_before)
    print(f"  dev metrics, largest |before - after|: {diff:.2e} ({m_after})")
    # 3. the test splits
    if args.test_docs and not args.skip_test_eval:
        corpus_2 = bench.eval_split("zero_shot").documents
        docs = corpus_2.sample(n=min(args.test_docs, len(corpus_2)), random_state=0)
        tr.model.cached_bottom = None
        t, e_before = timed(lambda: tr.model.encode_documents(docs))
        add(f"encode {len(docs)} corpus_2 titles", "before", t)
        tr.model.cached_bottom = enc
        t, _ = timed(lambda: tr.model.encode_documents(docs))
        add(f"encode {len(docs)} corpus_2 titles, empty store", "after", t)
        rows[f"encode {len(docs)} corpus_2 titles, empty store"]["before"] = [rows[f"encode {len(docs)} corpus_2 titles"]["before"][0]]
        t, e_after = timed(lambda: tr.model.encode_documents(docs))
        add(f"encode {len(docs)} corpus_2 titles", "after", t)
        print(f"  largest |before - after| of an embedding coordinate: {np.abs(e_before - e_after).max():.2e}")
    elif not args.skip_test_eval:
        runs = {}
        for label, bottom in (("before", None), ("after, empty store", enc), ("after, filled store", enc)):
            tr.model.cached_bottom = bottom
            runs[label] = test_eval(tr.model, bench)
            print(f"  test splits {label}: {runs[label][0]:.1f}s  "
                  + ", ".join(f"{k} {v:.1f}s" for k, v in runs[label][2].items()) + f"   {load()}", flush=True)
        rows["test splits (4), first model"] = {"before": [runs["before"][0]], "after": [runs["after, empty store"][0]]}
        rows["test splits (4), later models"] = {"before": [runs["before"][0]], "after": [runs["after, filled store"][0]]}
        a, b = runs["before"][1], runs["after, filled store"][1]
        print(f"  test nDCG@10, largest |before - after|: {max(abs(a[k] - b[k]) for k in a):.2e} ({b})")
    print(f"\n{'phase':<36}{'before s':>10}{'after s':>10}{'saved s':>10}   ({load()}, {args.threads} threads)")
    med = {p: {w: statistics.median(v) if v else float('nan') for w, v in ways.items()} for p, ways in rows.items()}
    for p, m in med.items():
        print(f"{p:<36}{m['before']:>10.1f}{m['after']:>10.1f}{m['before'] - m['after']:>10.1f}")
    saved = (med["hidden-cache build"]["before"] - med["hidden-cache build"]["after"]) * texts_full / n_texts(tr)
    saved += args.evals * (med["dev eval"]["before"] - med["dev eval"]["after"])
    if "test splits (4), later models" in med:
        saved += med["test splits (4), later models"]["before"] - med["test splits (4), later models"]["after"]
    if args.pairs or args.dev_corpus_size or args.test_docs:
        print("(a reduced run: the hidden-cache build is projected to the full split per text; the dev "
              "evaluation and test encodings are at the sizes above)")
    print(f"\nper run after the first (hidden cache read, {args.evals} dev evaluations"
          f"{', test splits' if not args.skip_test_eval else ''}): {saved / 60:.1f} min saved")
    print("steps are not changed (benchmarks/bench_train_epoch.py)")


if __name__ == "__main__":
    sys.exit(main())
