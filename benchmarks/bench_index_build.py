"""Index build throughput (documents/s): ``gcl index build`` versus sentence-transformers + faiss by hand.

Setup: the first N documents (default 5,000) of the Home Depot training corpus (``corpus_1``,
loaded with gcl's loaders from the configured data directory: ``--data-dir``, ``$GCL_DATA_DIR`` or
``../shared/data``; the synthetic dataset when Home Depot is absent, and the header says so),
encoded by the offline all-MiniLM-L6-v2 (``BiEncoder.load("minilm")``, what ``gcl index build
--model minilm`` loads), one process, the same documents, batch size and thread count for both:

* **ours** -- :func:`gcl.index.build.build_index`, the function ``gcl index build --model minilm
  --data homedepot --corpus corpus_1 --kind hnsw`` runs: the model's fused document embedding
  (``encode_documents``) ``batch_size`` rows at a time, the shard log (fingerprint of the table,
  shards and ``progress.json`` written atomically every ``checkpoint_every`` batches), then a
  ``VectorIndex`` filled from the shards with the documents' fields, saved atomically (faiss file,
  ``documents.jsonl``, manifest) and the shard log removed.
* **peer** -- what a user writes by hand: ``SentenceTransformer.encode(texts, batch_size=same,
  normalize_embeddings=True)`` on the same titles with the *same* model object (``model.tower``,
  so the same weights and ``max_seq_length``), then ``faiss.IndexHNSWFlat(d, M,
  METRIC_INNER_PRODUCT)`` with the same efConstruction (``IndexFlatIP`` for ``--kind exact``),
  ``add``, and ``faiss.write_index`` to a temporary directory.

Printed per method: total seconds, documents/s and the split encode / insert / save (ours: time
inside ``encode_documents``, ``VectorIndex.add`` and ``VectorIndex.save``; "other" is the rest:
fingerprint, shard log, fields, clean-up); the ratio ours / peer of documents/s; the padded tokens
each method feeds the model (sentence-transformers sorts texts by length *within one encode call*:
the peer's call holds all N texts; ours holds one batch, but ``build_index`` encodes the documents
longest first, so its batches are as homogeneous as the peer's); and a like-for-like check: the largest
difference between the two methods' stored vectors and, for ``--queries`` Home Depot test queries,
how often their top-k agree and each one's recall@k against exact search.

    python benchmarks/bench_index_build.py                          # 5,000 docs, HNSW M 32 / efC 200, 1 thread
    python benchmarks/bench_index_build.py --kind exact             # the flat index
    python benchmarks/bench_index_build.py --n 500 --kind hnsw exact  # a quick check of both kinds
    python benchmarks/bench_index_build.py --repeats 3              # medians of 3 alternating runs

Timings depend on the machine and its load: the header says both (load average at the start and
the end).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import faiss
import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # this checkout's gcl, whatever the installed one points at

from bench_index import cpu_name  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from gcl.cli.index import select_corpus  # noqa: E402
from gcl.data.sources import load_benchmark  # noqa: E402
from gcl.encoders.model import BiEncoder  # noqa: E402
from gcl.encoders.query import encode_query_texts  # noqa: E402
from gcl.index.build import build_index, encoding_order  # noqa: E402
from gcl.index.store import VectorIndex  # noqa: E402
from gcl.training.config import DataConfig  # noqa: E402

PARTS = ("encode", "insert", "save", "other")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="documents: the first N of corpus_1 (default 5,000)")
    p.add_argument("--kind", choices=("hnsw", "exact"), nargs="+", default=["hnsw"], help="index kind(s) (default hnsw)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, default=128, help="for the check's searches (gcl's default)")
    p.add_argument("--batch-size", type=int, default=256, help="encode batch size of both (gcl index build's default)")
    p.add_argument("--checkpoint-every", type=int, default=10, help="ours: batches per shard (the CLI default)")
    p.add_argument("--threads", type=int, default=1, help="torch and faiss threads, both methods (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each method, alternating; medians are printed")
    p.add_argument("--queries", type=int, default=100, help="Home Depot test queries for the top-k check")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--data", default="homedepot", help="homedepot (falls back to synthetic) | synthetic")
    p.add_argument("--data-dir", default=None, help="where homedepot/ lives (default: $GCL_DATA_DIR or ../shared/data)")
    p.add_argument("--work", default=None, help="directory for the built indexes (default: a temporary one, removed)")
    return p.parse_args(argv)


def machine_info(threads: int) -> str:
    import sentence_transformers
    import transformers

    cpu = cpu_name()
    return (f"machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
            f"load average {load_average()}\n"
            f"software: Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
            f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
            f"faiss {faiss.__version__}\n"
            f"threads: torch {torch.get_num_threads()}, faiss {threads} (both methods)")


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------------------- the two methods
def run_ours(model: BiEncoder, documents, out: Path, kind: str, args) -> tuple[dict, VectorIndex]:
    """``build_index`` as ``gcl index build`` calls it, with time inside encode / add / save summed."""
    spent = dict.fromkeys(PARTS[:3], 0.0)

    def timing(part, fn):
        def wrapped(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[part] += time.perf_counter() - t

        return wrapped

    with mock.patch.object(model, "encode_documents", timing("encode", model.encode_documents)), \
            mock.patch.object(VectorIndex, "add", timing("insert", VectorIndex.add)), \
            mock.patch.object(VectorIndex, "save", timing("save", VectorIndex.save)):
        t0 = time.perf_counter()
        result = build_index(model, documents, out, kind=kind, batch_size=args.batch_size,
                             checkpoint_every=args.checkpoint_every, model_path="minilm", hnsw_m=args.hnsw_m,
                             ef_construction=args.ef_construction, ef_search=args.ef_search, show_progress=False)
        total = time.perf_counter() - t0
    assert result.n_documents == len(documents) and result.resumed_rows == 0, result
    return {"total": total, **spent, "other": total - sum(spent.values()), "bytes": disk_bytes(out)}, result.index


def run_peer(st, texts: list[str], out: Path, kind: str, args) -> tuple[dict, faiss.Index, np.ndarray]:
    """The plain approach: ``SentenceTransformer.encode``, a faiss index, ``faiss.write_index``."""
    t0 = time.perf_counter()
    emb = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    t1 = time.perf_counter()
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(emb.shape[1], args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
    else:
        index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    t2 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "index.faiss"))
    t3 = time.perf_counter()
    return ({"total": t3 - t0, "encode": t1 - t0, "insert": t2 - t1, "save": t3 - t2, "other": 0.0,
             "bytes": disk_bytes(out)}, index, emb)


# ---------------------------------------------------------------------------- diagnostics
def padded_tokens(st, texts: list[str], chunk: int, batch: int) -> int:
    """Tokens (padding included) the model sees when ``texts`` are encoded ``chunk`` per ``encode`` call.

    sentence-transformers sorts each call's texts by character length, longest first, and pads
    each batch to its longest tokenised text (capped at ``max_seq_length``).
    """
    tok = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
    tok_len = np.array([len(t) for t in tok])
    chars = np.array([len(t) for t in texts])
    total = 0
    for lo in range(0, len(texts), chunk):
        rows = np.arange(lo, min(lo + chunk, len(texts)))
        rows = rows[np.argsort(-chars[rows], kind="stable")]
        for b in range(0, len(rows), batch):
            part = rows[b : b + batch]
            total += len(part) * int(tok_len[part].max())
    return total


def check(ours: VectorIndex, peer: faiss.Index, peer_emb: np.ndarray, ids: list[str], queries: np.ndarray,
          k: int, ef_search: int) -> str:
    ours_vecs = np.stack([ours.get(d).vector for d in ids])
    max_diff = float(np.abs(ours_vecs - peer_emb).max())
    flat = faiss.IndexFlatIP(peer_emb.shape[1])
    flat.add(peer_emb)
    truth = [[ids[r] for r in row] for row in flat.search(queries, k)[1]]
    ours.ef_search = ef_search
    got_ours = [[h.doc_id for h in hits] for hits in ours.search(queries, k)]
    if isinstance(peer, faiss.IndexHNSWFlat):
        peer.hnsw.efSearch = ef_search
    got_peer = [[ids[r] for r in row if r >= 0] for row in peer.search(queries, k)[1]]
    same = np.mean([a == b for a, b in zip(got_ours, got_peer)])
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(got_ours, got_peer)])

    def recall(got):
        return np.mean([len(set(a) & set(t)) / k for a, t in zip(got, truth)])

    return (f"check: max |vector ours - peer| = {max_diff:.1e}; {len(queries)} queries, top-{k}"
            f"{f' at efSearch {ef_search}' if isinstance(peer, faiss.IndexHNSWFlat) else ''}: identical lists "
            f"{same:.2f}, overlap {overlap:.3f}; recall@{k} against exact search: ours {recall(got_ours):.3f}, "
            f"peer {recall(got_peer):.3f}")


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.n < 1:
        raise SystemExit("--threads, --repeats and --n must be >= 1")
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    notes: list[str] = []
    bench = load_benchmark(DataConfig(source=args.data, data_dir=args.data_dir), announce=notes.append)
    corpus = select_corpus(bench, "corpus_1")
    documents = corpus.iloc[: args.n]
    model = BiEncoder.load("minilm")  # gcl index build --model minilm
    st = model.tower  # the peer uses the same SentenceTransformer object
    if len(model.config.doc_fields) != 1:
        raise SystemExit(f"the peer encodes one text column; the model fuses {model.config.doc_fields}")
    field = model.config.doc_fields[0]
    texts = documents[field].fillna("").astype(str).tolist()
    ids = [str(x) for x in documents.index]
    split_name = "in_domain" if "in_domain" in bench.splits else next(iter(bench.splits))
    split = bench.splits[split_name]
    query_texts = split.queries.iloc[: args.queries, 0].astype(str).tolist()

    print(machine_info(args.threads))
    if bench.name != "homedepot":
        print(f"data: {bench.name} -- Home Depot NOT FOUND, these are NOT Home Depot figures ({' '.join(notes)})")
    n_tok = np.array([len(t) for t in st.tokenizer(texts)["input_ids"]])
    print(f"data: {bench.name} corpus_1, the first {len(documents):,} of {len(corpus):,} documents"
          f"{' (fewer than --n)' if len(documents) < args.n else ''}; field '{field}'; "
          f"{int((n_tok > st.max_seq_length).sum())} texts longer than max_seq_length {st.max_seq_length} tokens; "
          f"model minilm ({model.dim}-d); batch {args.batch_size}; {len(query_texts)} check queries from "
          f"the {split_name} split")

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_index_build-"))
    model.encode_texts(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up, untimed
    queries = encode_query_texts(model, query_texts)
    gcl_order = encoding_order(pd.DataFrame({"title": texts}), ["title"])  # the order build_index encodes in
    pad = {"ours": padded_tokens(st, [texts[i] for i in gcl_order], args.batch_size, args.batch_size),
           "peer": padded_tokens(st, texts, len(texts), args.batch_size)}
    try:
        for kind in args.kind:
            runs: dict[str, list[dict]] = {"ours": [], "peer": []}
            for r in range(args.repeats):
                order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")  # alternate: load hits both alike
                for name in order:
                    out = work / f"{name}-{kind}-{r}"
                    gc.collect()
                    if name == "ours":
                        row, ours_index = run_ours(model, documents, out, kind, args)
                    else:
                        row, peer_index, peer_emb = run_peer(st, texts, out, kind, args)
                    runs[name].append(row)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"  {kind} run {r + 1}/{args.repeats} {name}: {row['total']:.1f} s", file=sys.stderr)

            med = {name: {key: statistics.median(x[key] for x in rs) for key in (*PARTS, "total", "bytes")}
                   for name, rs in runs.items()}
            n = len(documents)
            params = f"M {args.hnsw_m}, efConstruction {args.ef_construction}" if kind == "hnsw" else "flat"
            print(f"\nkind {kind} ({params}), {n:,} documents, {args.threads} thread(s)"
                  f"{f', medians of {args.repeats} runs' if args.repeats > 1 else ''}")
            print(f"{'method':<46}{'total s':>9}{'docs/s':>9}{'encode s':>10}{'insert s':>10}{'save s':>8}"
                  f"{'other s':>9}{'on disk':>10}")
            labels = {"ours": "ours: gcl build_index (= gcl index build)",
                      "peer": "peer: ST.encode + faiss add + write_index"}
            for name, m in med.items():
                print(f"{labels[name]:<46}{m['total']:>9.2f}{n / m['total']:>9.1f}{m['encode']:>10.2f}"
                      f"{m['insert']:>10.2f}{m['save']:>8.2f}{m['other']:>9.2f}{m['bytes'] / 2**20:>8.1f}MB")
            o, p = med["ours"], med["peer"]
            print(f"ratio ours / peer (documents/s): {p['total'] / o['total']:.2f}x; encode alone "
                  f"{n / o['encode']:.1f} vs {n / p['encode']:.1f} docs/s ({p['encode'] / o['encode']:.2f}x); "
                  f"everything but encoding {o['total'] - o['encode']:.2f} s vs {p['total'] - p['encode']:.2f} s")
            print(f"padded tokens encoded: ours {pad['ours']:,} (build_index's encoding order, longest first, "
                  f"{args.batch_size} per call), peer {pad['peer']:,} (sorted across all {n:,}); ratio {pad['ours'] / pad['peer']:.2f}")
            print(check(ours_index, peer_index, peer_emb, ids, queries, args.k, args.ef_search))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
