"""``gcl index build`` / ``gcl index info`` / ``gcl search``: build a vector index, then query it.

    gcl index build --model runs/gcl --data homedepot --corpus corpus_1 --out indexes/hd --kind hnsw
    gcl search --index indexes/hd "cordless drill" -k 10
    gcl index build --backend milvus --uri http://milvus:19530 --collection hd --model runs/gcl
    gcl search --index http://milvus:19530 --collection hd "cordless drill"

``--index``/``--out`` is a location: a directory (the embedded faiss index) or a Milvus URI
(``milvus://host:port``, ``http(s)://host:port``, a milvus-lite ``.db`` file); see
:func:`gcl.index.open_index`.

The index manifest remembers the model path, so ``gcl search`` needs ``--model`` only to override
it. An interrupted ``gcl index build`` resumes where it stopped when run again with the same
arguments (see :mod:`gcl.index.build`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gcl.cli.calibrate import add_search_args, cut_results, search_calibration
from gcl.cli.evaluate import add_data_args, data_config
from gcl.cli.export import add_backend_arg
from gcl.cli.options import check_device, check_model, check_out_dir, check_queries, positive_int
from gcl.data.errors import ConfigError, DataError

CORPORA = ("corpus_1", "corpus_2", "all")


def add_parser(sub) -> None:
    from gcl.index.base import KINDS, IndexParams

    p = sub.add_parser("index", help="build or inspect a persistent vector index",
                       description="Build a persistent vector index of a corpus, or show an index's manifest.")
    isub = p.add_subparsers(dest="index_command", required=True)

    b = isub.add_parser("build", help="encode a corpus and save an index (resumable)",
                        description="Encode a corpus with a model and save a vector index. Re-running an interrupted "
                                    "build with the same arguments resumes it.")
    b.add_argument("--model", default="minilm", help="gcl model dir, sentence-transformers dir or name (default: minilm)")
    add_data_args(b)
    b.add_argument("--corpus", choices=CORPORA, default="corpus_1",
                   help="corpus_1: the training corpus (D0); corpus_2: the novel corpus (D1); all: both")
    b.add_argument("--out", "--uri", dest="out", required=True,
                   help="where to write the index: a directory (replaced atomically) or a Milvus URI / .db file")
    from gcl.index.factory import BACKENDS

    b.add_argument("--backend", choices=("auto", *sorted(BACKENDS)), default="auto",
                   help="auto (default): milvus for a Milvus URI or .db file, faiss for a directory")
    add_milvus_args(b)
    d = IndexParams()  # the index defaults live there
    b.add_argument("--kind", choices=KINDS, default=d.kind,
                   help="exact: brute-force inner product; hnsw: approximate HNSW graph; compressed, with the "
                        "float32 vectors on disk and exact re-scoring (docs/index.md): sq8 (int8 scan), hnsw_sq8 "
                        "(HNSW over int8 codes), ivfpq (IVF-PQ, for 1M-10M documents), binary (sign bits, Hamming scan), "
                        "binary_hnsw (HNSW over sign bits) (default %(default)s)")
    b.add_argument("--hnsw-m", type=positive_int, default=d.hnsw_m, help="HNSW graph degree M (default %(default)s)")
    b.add_argument("--ef-construction", type=positive_int, default=d.ef_construction,
                   help="HNSW build breadth: candidates kept while inserting (default %(default)s)")
    b.add_argument("--ef-search", type=positive_int, default=d.ef_search,
                   help="default HNSW search breadth stored in the index (default %(default)s)")
    add_quant_args(b)
    b.add_argument("--batch-size", type=positive_int, default=256, help="documents encoded per forward pass (default 256)")
    b.add_argument("--device", default="cpu", help="where the model encodes (torch backend): cpu, cuda, cuda:N or mps "
                                                   "(default cpu)")
    b.add_argument("--checkpoint-every", type=positive_int, default=10, help="batches between shard-log checkpoints")
    b.add_argument("--restart", action="store_true", help="discard a partial build of another configuration")
    b.add_argument("--no-progress", action="store_true", help="no progress bar while encoding")
    add_backend_arg(b, what="the documents")
    b.set_defaults(func=run_build)

    i = isub.add_parser("info", help="print an index's manifest as JSON")
    i.add_argument("--index", required=True, help="index directory or Milvus URI")
    add_milvus_args(i)
    i.set_defaults(func=run_info)

    s = sub.add_parser("search", help="query a vector index built by 'gcl index build'",
                       description="Encode query text with the index's model and print the top-k documents.")
    s.add_argument("--index", required=True, help="index directory or Milvus URI (milvus://host:port, a .db file)")
    add_milvus_args(s)
    s.add_argument("--model", default=None, help="query encoder (default: the model recorded in the index)")
    s.add_argument("queries", nargs="+", metavar="QUERY", help="query text (several: one result block each)")
    s.add_argument("-k", type=positive_int, default=10, help="results per query (default 10)")
    s.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                   help="keep documents whose field equals VALUE exactly (repeatable)")
    s.add_argument("--ef-search", type=positive_int, default=None, help="HNSW search breadth for this query")
    s.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    s.add_argument("--exact", action="store_true",
                   help="require exact results: an error unless the index kind is exact (a compressed or HNSW "
                        "index is approximate)")
    add_mode_args(s)
    add_search_args(s)  # --calibration, --min-relevance
    add_backend_arg(s, what="the queries")
    s.set_defaults(func=run_search)


def add_mode_args(p) -> None:
    from gcl.cli.hybrid_options import add_fusion_args
    from gcl.index.hybrid import MODES

    g = p.add_argument_group("lexical and hybrid search (directory index only; docs/index.md)")
    g.add_argument("--mode", choices=MODES, default=MODES[0],
                   help="dense (default): cosine of the query vector; lexical: BM25 over the stored text "
                        "fields; hybrid: both, fused by --fusion")
    fusions, d = add_fusion_args(g)
    g.add_argument("--fusion", choices=fusions, default=d.fusion, help="hybrid fusion rule (default %(default)s)")


def add_quant_args(p) -> None:
    from gcl.index.base import QuantParams

    q = QuantParams()  # the compressed kinds' defaults live there
    g = p.add_argument_group("compressed kinds (sq8, hnsw_sq8, ivfpq, binary, binary_hnsw; ignored by exact and hnsw)")
    g.add_argument("--rescore", type=positive_int, default=q.rescore,
                   help="re-score the top RESCORE*k candidates exactly from the float32 vectors (default %(default)s)")
    g.add_argument("--train-size", type=positive_int, default=q.train_size,
                   help="train the quantiser on the first N vectors; later ones are encoded with it (binary kinds: no "
                        "training) (default %(default)s)")
    g.add_argument("--nlist", type=positive_int, default=q.nlist, help="ivfpq: coarse IVF cells (default %(default)s)")
    g.add_argument("--nprobe", type=positive_int, default=q.nprobe,
                   help="ivfpq: cells scanned per query, stored in the index (default %(default)s)")
    g.add_argument("--pq-m", type=positive_int, default=q.pq_m,
                   help="ivfpq: sub-vectors per code; must divide the dimension (default %(default)s)")
    g.add_argument("--pq-nbits", type=positive_int, default=q.pq_nbits,
                   help="ivfpq: bits per sub-vector code, 1-16 (default %(default)s)")


def _quant_options(args) -> dict:
    return {name: getattr(args, name) for name in ("rescore", "train_size", "nlist", "nprobe", "pq_m", "pq_nbits")}


def add_milvus_args(p) -> None:
    g = p.add_argument_group("Milvus (when the index location is a Milvus URI or .db file)")
    g.add_argument("--collection", default=None, help="collection name (default gcl_documents, or the URI's path)")
    g.add_argument("--token", default=None, help="user:password or API key (default: $GCL_MILVUS_TOKEN)")
    g.add_argument("--db-name", default=None, help="Milvus database (default: the server's default)")


def _milvus_options(args) -> dict:
    return {k: v for k, v in (("collection", args.collection), ("token", args.token), ("db_name", args.db_name)) if v}


def _model_ref(name: str) -> str:
    """An existing local path made absolute (the manifest outlives the working directory); else as given."""
    p = Path(name)
    return str(p.resolve()) if p.exists() else name


def select_corpus(bench, corpus: str):
    """The documents table of ``corpus_1`` (D0), ``corpus_2`` (D1) or ``all`` (D0 then D1) of a benchmark."""
    import pandas as pd

    c1 = bench.corpus_1
    c2 = bench.splits["novel_corpus"].documents if "novel_corpus" in bench.splits else None
    if corpus == "corpus_1":
        if c1 is None:
            raise DataError(f"{bench.name} has no corpus_1 (training corpus)")
        return c1
    if corpus == "corpus_2":
        if c2 is None:
            raise DataError(f"{bench.name} has no corpus_2 (no novel_corpus split)")
        return c2
    parts = [c for c in (c1, c2) if c is not None]
    if not parts:
        raise DataError(f"{bench.name} has no corpus")
    both = pd.concat(parts)
    return both[~both.index.duplicated()]


def run_build(args) -> int:
    from gcl.data.sources import load_benchmark
    from gcl.encoders.onnx import load_backend
    from gcl.index.build import build_index

    from gcl.index.factory import BACKENDS, backend_for

    backend = backend_for(args.out)
    if args.backend != "auto" and args.backend != backend.name:
        raise ConfigError(f"--backend {args.backend} {BACKENDS[args.backend].location_hint}, but {args.out!r} is "
                          f"{'a directory' if backend.local_directory else 'a ' + backend.name.capitalize() + ' location'}")
    if backend.local_directory:
        check_out_dir(args.out, "--out")
    check_model(args.model)
    check_device(args.device)
    if args.device.split(":")[0] != "cpu" and args.encoder_backend != "torch":
        raise ConfigError(f"--device {args.device}: the {args.encoder_backend} backend runs on the CPU; "
                          "use --encoder-backend torch to encode on another device")
    bench = load_benchmark(data_config(args), announce=lambda m: print(m, file=sys.stderr))
    documents = select_corpus(bench, args.corpus)
    model = load_backend(args.model, args.encoder_backend, device=args.device)
    result = build_index(
        model, documents, args.out, kind=args.kind, batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every, model_path=_model_ref(args.model), hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction, ef_search=args.ef_search, restart=args.restart,
        quantization=_quant_options(args),
        show_progress=not args.no_progress, **_milvus_options(args),
    )
    resumed = f", resumed after {result.resumed_rows} already encoded" if result.resumed_rows else ""
    print(f"indexed {result.n_documents} documents of {bench.name}/{args.corpus} ({args.kind}, dim "
          f"{result.index.dim}) in {result.seconds:.1f}s{resumed} -> {result.location}")
    return 0


def run_info(args) -> int:
    from gcl.index.factory import backend_for, open_index

    index = open_index(args.index, **_milvus_options(args))  # validates the whole index, not just the manifest
    print(backend_for(args.index).describe(index, args.index))
    return 0


def _parse_filters(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--filter expects FIELD=VALUE, got {item!r}")
        out[name] = value
    return out


def run_search(args) -> int:
    from gcl.cli.hybrid_options import check_fusion_used
    from gcl.encoders.query import encode_query_texts, load_index_encoder
    from gcl.index.factory import open_index

    if args.k < 1:
        raise ConfigError(f"-k must be a positive integer, got {args.k}")
    check_queries(args.queries)
    check_model(args.model)
    filters = _parse_filters(args.filter) or None
    check_fusion_used(args, args.mode == "hybrid", "--mode hybrid")
    index = open_index(args.index, **_milvus_options(args))
    if args.exact:
        from gcl.index.store import check_exact

        try:
            check_exact(index.kind)
        except ConfigError as exc:
            raise ConfigError(f"--exact: {exc}") from None
    lexical = None
    calib = search_calibration(args, None, None) if args.mode != "dense" else None  # refuses the options
    if args.mode != "dense":
        from gcl.index.lexical import LexicalIndex

        lexical = LexicalIndex.open(index, args.index)  # a ConfigError for a Milvus index
        if args.mode == "lexical":
            results = lexical.search(args.queries, args.k, filters=filters)
    if args.mode != "lexical":
        model = load_index_encoder(index.dim, index.model, args.model, where=f"the index at {args.index}",
                                   backend=args.encoder_backend)
        if args.ef_search is not None:
            index.ef_search = args.ef_search
        calib = search_calibration(args, model, args.model or index.model)
        results = _dense_or_hybrid(index, lexical, encode_query_texts(model, args.queries), args, filters,
                                   depth=calib.depth if calib else 0)
    results, relevance = cut_results(calib, results, args.min_relevance, args.k)
    for i, (text, hits) in enumerate(zip(args.queries, results)):
        rel = relevance[i] if relevance else [None] * len(hits)
        if args.json:
            for rank, (h, r) in enumerate(zip(hits, rel), 1):
                extra = {} if r is None else {"relevance": r}
                print(json.dumps({"query": text, "rank": rank, "score": round(h.score, 6), **extra, "doc_id": h.doc_id,
                                  "fields": h.fields}, ensure_ascii=False))
            continue
        if len(args.queries) > 1:
            print(f"query: {text}")
        print(f"{'rank':>4}  {'score':>7}  {'relevance  ' if relevance else ''}{'doc_id':<16} title")
        for rank, (h, r) in enumerate(zip(hits, rel), 1):
            title = h.fields.get("title")
            if title is None:
                title = next((v for v in h.fields.values() if isinstance(v, str)), "")
            print(f"{rank:>4}  {h.score:7.4f}  {'' if r is None else f'{r:9.3f}  '}{h.doc_id:<16} {title}")
        if not hits:
            print("   (no results)")
    return 0


def _dense_or_hybrid(index, lexical, vectors, args, filters, depth: int = 0):
    if lexical is None:  # depth: hits a query-dependent calibration reads (cut to k after)
        return index.search(vectors, max(args.k, depth), filters=filters)
    from gcl.cli.hybrid_options import params
    from gcl.index.hybrid import fuse_hits

    p = params(args, args.fusion)
    depth = max(p.depth, args.k)
    dense = index.search(vectors, depth, filters=filters)
    lex = lexical.search(args.queries, depth, filters=filters)
    return [fuse_hits(d, lx, p, args.k) for d, lx in zip(dense, lex)]
