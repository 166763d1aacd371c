"""``gcl evaluate``: score a model, precomputed embeddings or BM25 on the benchmark splits."""

from __future__ import annotations

import argparse
import sys

from gcl.cli import evaluate_extras, hybrid_options
from gcl.cli.options import check_device, check_model, check_out_dir, positive_int
from gcl.data.errors import ConfigError

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="homedepot",
                   help="homedepot (default) | synthetic | a Marqo-GS directory | a CSV/JSONL/Parquet file")
    g.add_argument("--data-dir", default=None, help="where homedepot/ lives (default: $GCL_DATA_DIR or ../shared/data)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the query/document split (default 0)")
    g.add_argument("--query-col", default="query", help="data file column holding the query text (default query)")
    g.add_argument("--doc-id-col", default="doc_id", help="data file column holding the document id (default doc_id)")
    g.add_argument("--score-col", default="score", help="data file column holding the graded score (default score)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSONL data files (default utf-8)")
    g.add_argument("--allow-negative", action="store_true", help="accept negative scores in data files")
    g.add_argument("--doc-fields", default="title", help="comma-separated document text columns")


def data_config(args):
    from gcl.training.config import DataConfig

    return DataConfig(
        source=args.data,
        data_dir=args.data_dir,
        split_seed=args.split_seed,
        query_col=args.query_col,
        doc_id_col=args.doc_id_col,
        score_col=args.score_col,
        encoding=args.encoding,
        allow_negative=args.allow_negative,
        doc_fields=[f.strip() for f in args.doc_fields.split(",") if f.strip()],
    )


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate retrieval + ranking on the benchmark splits",
                       description="Evaluate a model (default: zero-shot MiniLM), precomputed embeddings or BM25.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, help="gcl model dir, sentence-transformers dir or name (default: minilm)")
    src.add_argument("--embeddings", default=None, help="directory with queries.npy/query_ids.txt/documents.npy/doc_ids.txt")
    src.add_argument("--bm25", action="store_true", help="evaluate the BM25 baseline")
    add_data_args(p)
    p.add_argument("--splits", default="all", help=f"comma-separated subset of {','.join(SPLITS)} (default all)")
    p.add_argument("--protocol", choices=("reference", "all"), default="reference",
                   help="reference: 2,000 weighted-sampled test queries (Marqo-GS); all: every query")
    p.add_argument("--n-queries", type=positive_int, default=2000,
                   help="test queries sampled per split by the reference protocol (default 2000)")
    p.add_argument("--depth", type=positive_int, default=1000, help="documents retrieved per query (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="texts encoded per forward pass (default 256)")
    p.add_argument("--device", default="cpu", help="where the model encodes: cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--out", default="runs/eval", help="output directory (results.json, results.csv, per-query CSVs)")
    p.add_argument("--trec", action="store_true", help="also write TREC run/qrels files and ground-truth JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while encoding")
    from gcl.embedding_cache import default_cache_dir

    p.add_argument("--cache-dir", default=None,
                   help="where document embeddings are cached, keyed by the model's fingerprint and each "
                        f"document's text, so a second run of the same model on the same corpus encodes nothing "
                        f"(default: $GCL_CACHE_DIR, else $XDG_CACHE_HOME/gcl, else ~/.cache/gcl; here "
                        f"{default_cache_dir()}); clear it by deleting that directory")
    p.add_argument("--no-cache", action="store_true", help="encode every document; read and write no cache")
    from gcl.cli.export import add_backend_arg

    add_backend_arg(p, option="--query-backend", what="the queries only (documents: the torch model, so the fp32 "
                                                      "document cache is reused)")
    evaluate_extras.add_args(p)
    hybrid_options.add_evaluate_args(p)
    p.set_defaults(func=run)


def _query_backend(model, label: str, backend: str):
    """``model`` for documents, the ``backend`` graph of the same export directory for queries."""
    if backend == "torch":
        return model
    from gcl.encoders.onnx import QuerySideModel, load_backend

    return QuerySideModel(model, load_backend(label, backend))


def run(args) -> int:
    from gcl.data.sources import load_benchmark
    from gcl.evaluation.evaluator import Protocol, results_table, write_results
    from gcl.evaluation.run import evaluate_splits
    from gcl.evaluation.retrievers import BM25Retriever, DenseRetriever, PrecomputedRetriever

    if args.compare:
        return evaluate_extras.run_compare(args)
    evaluate_extras.check_args(args)
    names = SPLITS if args.splits == "all" else tuple(s.strip() for s in args.splits.split(","))
    unknown = [n for n in names if n not in SPLITS]
    if unknown:
        raise ConfigError(f"unknown split(s) {unknown}; choose from {list(SPLITS)}")
    check_out_dir(args.out, "--out")
    check_model(args.model)
    if not (args.bm25 or args.embeddings):  # a model encodes
        check_device(args.device)
    protocol = Protocol(name=args.protocol, n_queries=args.n_queries, depth=args.depth)
    # train/dev only for --seen-unseen: a Marqo-layout --data then skips train.csv (memory at scale)
    bench = load_benchmark(data_config(args), announce=lambda m: print(m, file=sys.stderr),
                           train=bool(args.seen_unseen))
    if args.bm25:
        retriever, label = BM25Retriever(), "bm25"
    elif args.embeddings:
        retriever, label = PrecomputedRetriever(args.embeddings), f"embeddings:{args.embeddings}"
    else:
        from gcl.embedding_cache import default_cache_dir
        from gcl.encoders.base import load_model

        from gcl.training.frozen_reuse import use_cache_dir

        label = args.model or "minilm"
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        loaded = load_model(label, device=args.device)
        use_cache_dir(loaded, cache_dir)  # lower layers frozen in training: their stored outputs live there too
        model = _query_backend(loaded, label, args.query_backend)
        retriever = DenseRetriever(model, batch_size=args.batch_size, show_progress=not args.no_progress,
                                   cache_dir=cache_dir)
    retriever, label = hybrid_options.evaluate_retriever(args, retriever, label)
    results, tasks = evaluate_splits(bench, retriever, protocol, names, skip_empty=args.splits == "all",
                                     score=lambda task, r, p: evaluate_extras.evaluate_split(args, task, r, p))
    if getattr(retriever, "cache_dir", None) is not None:
        print(f"[cache] {retriever.encoded_documents} documents encoded, the others read from {retriever.cache_dir}",
              file=sys.stderr)
    evaluate_extras.add_seen_unseen(args, bench, results)
    mode = "judged_rerank" if args.judged_rerank else "retrieval"
    meta = {"model": label, "mode": mode, "data": bench.describe(), "protocol": protocol.__dict__ | {"metrics": list(protocol.metrics)}}
    out = write_results(args.out, results, tasks, meta=meta, trec=args.trec)
    print(f"\n{label} on {bench.name} ({args.protocol} protocol{', judged re-rank' if args.judged_rerank else ''})")
    print(results_table(results))
    evaluate_extras.print_extras(results)
    print(f"\nresults written to {out}/results.json and results.csv")
    return 0
