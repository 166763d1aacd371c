"""Serving a model from the vector index on Home Depot: exact = offline, what HNSW costs, two-stage.

For each benchmark split (the reference protocol: 2,000 weighted-sampled test queries, the split's
whole corpus) and the served model ``--model``:

1. **Exact index = offline evaluation.** The corpus is put in an exact :class:`VectorIndex`; the
   test queries are searched at depth 1,000 through it and scored by the evaluator; the offline
   evaluation (:class:`gcl.evaluation.retrievers.DenseRetriever`, blockwise ``exact_search``) is
   run on the same embeddings. Every metric must agree; the script records the largest difference
   and the share of identical top-1,000 lists.
2. **HNSW.** For each M, an HNSW index (efConstruction 200) of the same vectors; for each
   efSearch: recall@10 against the exact index's top 10, and nDCG@10 / ERR of the served top-10
   against the exact top-10 (ERR over the 10 served results, for both), plus queries/s
   (one thread, one batch). One row at depth 1,000 shows the full-protocol metrics from HNSW.
3. **Two-stage** (with ``--rerank-model``): ``--first-stage`` (zero-shot MiniLM) retrieves 100
   candidates from its exact index, re-ranked by cosine under ``--rerank-model``, against the
   single stage ``--rerank-model`` served from its own exact index: quality (nDCG@10, ERR, both at
   depth 100) and per-query latency (query encoding included; one query at a time), with the
   re-ranker's document vectors precomputed, or encoded on the fly (what a re-ranker that cannot
   precompute, such as a cross-encoder, pays at least).

Corpus and query embeddings are cached in ``--cache`` (keyed by model and the texts' hash), so a
re-run costs seconds. Each run writes ``<cache>/result-<model>.json``; the Markdown report
``--out`` is rebuilt from every result file in the cache.

    python experiments/homedepot_index.py --model runs/experiment/gcl-linear-s0/final \\
        --rerank-model runs/experiment/gcl-linear-s0/final --first-stage minilm
    python experiments/homedepot_index.py --model minilm
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(name)).strip("-")[-60:] or "model"


def text_hash(table, cols) -> str:
    import pandas as pd

    h = hashlib.sha256("\x1f".join(map(str, table.index)).encode())
    for c in cols:
        h.update(pd.util.hash_pandas_object(table[c].fillna("").astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


class Embedder:
    """A model's query/document embeddings, cached on disk under the model name and the texts' hash."""

    def __init__(self, name: str, cache: Path) -> None:
        from gcl.encoders.model import BiEncoder

        self.name = name
        self.model = BiEncoder.load(name)
        self.cache = cache

    def __call__(self, table, side: str) -> np.ndarray:
        cols = self.model.config.doc_fields if side == "documents" else self.model.config.query_fields
        path = self.cache / f"{slug(self.name)}-{side}-{text_hash(table, cols)}.npy"
        if path.is_file():
            return np.load(path)
        t0 = time.perf_counter()
        enc = self.model.encode_documents if side == "documents" else self.model.encode_queries
        emb = enc(table, batch_size=256, show_progress=side == "documents")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
        print(f"  encoded {len(table)} {side} with {self.name} in {time.perf_counter() - t0:.0f}s -> {path}",
              file=sys.stderr)
        return emb


class FixedRetriever:
    """Hands the evaluator a ranking computed elsewhere (rows aligned with the task's queries)."""

    name = "fixed"

    def __init__(self, scores: np.ndarray, idx: np.ndarray) -> None:
        self.scores, self.idx = scores, idx

    def search(self, queries, documents, k):
        return self.scores[:, :k], self.idx[:, :k]


def hits_to_arrays(hits, position: dict[str, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((len(hits), k), -np.inf, dtype=np.float32)
    idx = np.full((len(hits), k), -1, dtype=np.int64)
    for r, row in enumerate(hits):
        for c, h in enumerate(row):
            scores[r, c], idx[r, c] = h.score, position[h.doc_id]
    return scores, idx


def score(task, scores, idx, protocol, metrics=None):
    from dataclasses import replace

    from gcl.evaluation.evaluator import evaluate_task

    p = replace(protocol, depth=idx.shape[1], metrics=tuple(metrics or protocol.metrics))
    return evaluate_task(task, FixedRetriever(scores, idx), p).summary


def build_index(vectors: np.ndarray, ids: list[str], kind: str, m: int = 32):
    from gcl.index import VectorIndex

    index = VectorIndex(dim=vectors.shape[1], kind=kind, hnsw_m=m, ef_construction=200)
    t0 = time.perf_counter()
    index.add(ids, vectors)
    return index, time.perf_counter() - t0


def run_split(name, split, served: Embedder, args, protocol, first: Embedder | None, rerank: Embedder | None) -> dict:
    import faiss

    from gcl.evaluation.evaluator import evaluate_task, prepare_task
    from gcl.evaluation.retrievers import DenseRetriever

    task = prepare_task(split, protocol, name=name)
    docs, queries = task.documents, task.queries
    ids = [str(d) for d in docs.index]
    position = {d: i for i, d in enumerate(ids)}
    D, Q = served(docs, "documents"), served(queries, "queries")
    out: dict = {"queries": len(queries), "documents": len(docs)}

    # 1. offline evaluation (the evaluator's own dense retriever, corpus vectors from the cache)
    class Cached(DenseRetriever):
        def corpus_embeddings(self, documents):
            return D

    offline = evaluate_task(task, Cached(served.model, show_progress=False), protocol)
    exact, build_s = build_index(D, ids, "exact")
    t0 = time.perf_counter()
    s_ex, i_ex = hits_to_arrays(exact.search(Q, protocol.depth), position, protocol.depth)
    exact_s = time.perf_counter() - t0
    served_exact = score(task, s_ex, i_ex, protocol)
    out["offline"] = offline.summary
    out["index_exact"] = served_exact
    out["exact_max_abs_diff"] = max(abs(offline.summary[m] - served_exact[m]) for m in offline.summary)
    out["exact_same_lists"] = float((offline.run_indices == i_ex).all(axis=1).mean())
    out["exact_search_qps"] = len(Q) / exact_s
    # where lists differ: the score at each rank, offline vs index (a swap of near-equal scores)
    out["exact_max_rank_score_diff"] = float(np.max(np.abs(offline.run_scores.astype(np.float64) - s_ex)))
    out["exact_same_top10"] = float((offline.run_indices[:, :10] == i_ex[:, :10]).all(axis=1).mean())
    print(f"[{name}] offline nDCG@10 {offline.summary['ndcg@10']:.4f} ERR {offline.summary['err']:.4f}; "
          f"index {served_exact['ndcg@10']:.4f} {served_exact['err']:.4f}; max diff {out['exact_max_abs_diff']:.2e}, "
          f"same lists {out['exact_same_lists']:.4f}", file=sys.stderr)

    # 2. HNSW: recall@10 and the cost in nDCG@10 / ERR of serving the top 10
    m10 = ("ndcg@10", "err")
    exact10 = score(task, s_ex[:, :10], i_ex[:, :10], protocol, m10)
    out["exact_top10"] = exact10
    rows = []
    for m in args.hnsw_m:
        faiss.omp_set_num_threads(args.build_threads)
        hnsw, hb = build_index(D, ids, "hnsw", m)
        faiss.omp_set_num_threads(1)
        for ef in args.ef_search:
            hnsw.ef_search = ef
            t0 = time.perf_counter()
            s_h, i_h = hits_to_arrays(hnsw.search(Q, 10), position, 10)
            dt = time.perf_counter() - t0
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_h, i_ex[:, :10])]))
            q = score(task, s_h, i_h, protocol, m10)
            rows.append({"m": m, "ef_search": ef, "build_s": hb, "recall@10": recall, "qps": len(Q) / dt, **q})
            print(f"[{name}] hnsw M={m} ef={ef}: recall@10 {recall:.4f} nDCG@10 {q['ndcg@10']:.4f} "
                  f"ERR@10 {q['err']:.4f} {len(Q) / dt:.0f} QPS", file=sys.stderr)
        if m == args.hnsw_m[-1]:
            hnsw.ef_search = 128
            s_h, i_h = hits_to_arrays(hnsw.search(Q, protocol.depth), position, protocol.depth)  # ef raised to 1000
            out["hnsw_depth1000"] = {"m": m, **score(task, s_h, i_h, protocol)}
        faiss.omp_set_num_threads(args.build_threads)
    out["hnsw"] = rows

    # 3. two-stage: first-stage top-100 re-ranked by the rerank model, vs the rerank model alone
    if first is not None and rerank is not None:
        out["two_stage"] = two_stage(task, ids, position, first, rerank, args, protocol)
    return out


def two_stage(task, ids, position, first: Embedder, rerank: Embedder, args, protocol) -> dict:
    import torch

    docs, queries = task.documents, task.queries
    D1, Q1 = first(docs, "documents"), first(queries, "queries")
    D2, Q2 = rerank(docs, "documents"), rerank(queries, "queries")
    n_cand = args.candidates
    first_index, _ = build_index(D1, ids, "exact")
    single_index, _ = build_index(D2, ids, "exact")
    s1, i1 = hits_to_arrays(first_index.search(Q1, n_cand), position, n_cand)
    rr = np.einsum("qd,qkd->qk", Q2 / np.linalg.norm(Q2, axis=1, keepdims=True), D2[i1])  # D2 rows are unit
    order = np.argsort(-rr, axis=1, kind="stable")
    two = score(task, np.take_along_axis(rr, order, 1).astype(np.float32), np.take_along_axis(i1, order, 1), protocol)
    s2, i2 = hits_to_arrays(single_index.search(Q2, n_cand), position, n_cand)
    single = score(task, s2, i2, protocol)
    first_only = score(task, s1, i1, protocol)

    # latency: one query at a time, query encoding included, top 10 served
    rng = np.random.default_rng(0)
    sample = rng.choice(len(queries), size=min(args.latency_queries, len(queries)), replace=False)
    title = rerank.model.config.doc_fields
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    lat = {"single_stage": [], "two_stage_precomputed": [], "two_stage_encode_candidates": []}
    for n_done, r in enumerate(sample):
        q = queries.iloc[[r]]
        t0 = time.perf_counter()
        single_index.search(rerank.model.encode_queries(q), 10)
        t1 = time.perf_counter()
        hits = first_index.search(first.model.encode_queries(q), n_cand)[0]
        cand = [position[h.doc_id] for h in hits]
        qv = rerank.model.encode_queries(q)[0]
        top = np.argsort(-(D2[cand] @ qv), kind="stable")[:10]
        t2 = time.perf_counter()
        lat["single_stage"].append(t1 - t0)
        lat["two_stage_precomputed"].append(t2 - t1)
        if n_done >= args.latency_encode_queries:  # encoding 100 titles per query is slow: fewer queries
            continue
        hits = first_index.search(first.model.encode_queries(q), n_cand)[0]
        cand = [position[h.doc_id] for h in hits]
        qv = rerank.model.encode_queries(q)[0]
        dv = rerank.model.encode_documents(docs.iloc[cand][title], batch_size=n_cand)
        top = np.argsort(-(dv @ qv), kind="stable")[:10]
        lat["two_stage_encode_candidates"].append(time.perf_counter() - t2)
    del top
    torch.set_num_threads(args.threads)
    latency = {k: {"p50_ms": 1e3 * float(np.percentile(v, 50)), "p99_ms": 1e3 * float(np.percentile(v, 99)),
                   "mean_ms": 1e3 * float(np.mean(v))} for k, v in lat.items()}
    res = {"candidates": n_cand, "first_stage": first.name, "rerank": rerank.name, "first_stage_only": first_only,
           "two_stage": two, "single_stage": single, "latency": latency, "latency_queries": len(sample),
           "latency_encode_queries": len(lat["two_stage_encode_candidates"])}
    print(f"[{task.name}] two-stage nDCG@10 {two['ndcg@10']:.4f} ERR {two['err']:.4f} vs single "
          f"{single['ndcg@10']:.4f} {single['err']:.4f}; latency p50 {latency['single_stage']['p50_ms']:.1f} / "
          f"{latency['two_stage_precomputed']['p50_ms']:.1f} / {latency['two_stage_encode_candidates']['p50_ms']:.1f} ms",
          file=sys.stderr)
    return res


# ---------------------------------------------------------------------- report
def report(cache: Path, out: Path, command_lines: list[str]) -> None:
    results = [json.loads(p.read_text()) for p in sorted(cache.glob("result-*.json"))]
    L = ["# Home Depot: serving from the vector index", "",
         "Generated by `experiments/homedepot_index.py` (see its docstring for the protocol). Reference "
         "protocol on every split: 2,000 weighted-sampled test queries, the split's whole corpus "
         "(27,334 / 27,333 product titles), grades 1..100.", "", "```bash", *command_lines, "```", ""]
    for res in results:
        meta = res["meta"]
        L += [f"## Served model: `{meta['model']}`", "",
              f"Machine: {meta['machine']}; {meta['when']}; faiss {meta['faiss']}, search on 1 thread.", "",
              "### Exact index vs offline evaluation (depth 1,000, every metric)", "",
              "| split | offline nDCG@10 | index nDCG@10 | offline ERR | index ERR | largest difference (any metric) | identical top-10 lists | identical top-1,000 lists | largest score difference at equal rank |",
              "|---|---|---|---|---|---|---|---|---|"]
        for s, r in res["splits"].items():
            L.append(f"| {s} | {r['offline']['ndcg@10']:.4f} | {r['index_exact']['ndcg@10']:.4f} | {r['offline']['err']:.4f} "
                     f"| {r['index_exact']['err']:.4f} | {r['exact_max_abs_diff']:.1e} | {100 * r.get('exact_same_top10', float('nan')):.2f}% "
                     f"| {100 * r['exact_same_lists']:.2f}% | {r.get('exact_max_rank_score_diff', float('nan')):.1e} |")
        L += ["", "### HNSW vs exact, serving the top 10 (ERR over the 10 served results)", "",
              "| split | M | efSearch | recall@10 | nDCG@10 | Δ nDCG@10 | ERR@10 | Δ ERR@10 | QPS (1 thread) | build s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for s, r in res["splits"].items():
            e = r["exact_top10"]
            L.append(f"| {s} | exact | – | 1 | {e['ndcg@10']:.4f} | – | {e['err']:.4f} | – | {r['exact_search_qps']:.0f}* | – |")
            for h in r["hnsw"]:
                L.append(f"| {s} | {h['m']} | {h['ef_search']} | {h['recall@10']:.4f} | {h['ndcg@10']:.4f} | "
                         f"{h['ndcg@10'] - e['ndcg@10']:+.4f} | {h['err']:.4f} | {h['err'] - e['err']:+.4f} | "
                         f"{h['qps']:.0f} | {h['build_s']:.0f} |")
        L += ["", "\\* exact QPS measured at depth 1,000 (the protocol's), HNSW at depth 10.", "",
              "HNSW at depth 1,000 (efSearch raised to 1,000 by the over-fetch rule), full protocol:", "",
              "| split | M | nDCG@10 (exact) | ERR (exact) | MAP@1000 (exact) |", "|---|---|---|---|---|"]
        for s, r in res["splits"].items():
            h, e = r["hnsw_depth1000"], r["index_exact"]
            L.append(f"| {s} | {h['m']} | {h['ndcg@10']:.4f} ({e['ndcg@10']:.4f}) | {h['err']:.4f} ({e['err']:.4f}) | "
                     f"{h['map@1000']:.4f} ({e['map@1000']:.4f}) |")
        two = {s: r["two_stage"] for s, r in res["splits"].items() if "two_stage" in r}
        if two:
            t0 = next(iter(two.values()))
            L += ["", f"### Two-stage (`{t0['first_stage']}` top {t0['candidates']} re-ranked by `{t0['rerank']}`) "
                  "vs single stage", "",
                  f"Quality at depth {t0['candidates']} (both rankings hold {t0['candidates']} documents):", "",
                  "| split | first stage alone nDCG@10 / ERR | two-stage nDCG@10 / ERR | single-stage nDCG@10 / ERR |",
                  "|---|---|---|---|"]
            for s, t in two.items():
                L.append(f"| {s} | {t['first_stage_only']['ndcg@10']:.4f} / {t['first_stage_only']['err']:.4f} | "
                         f"{t['two_stage']['ndcg@10']:.4f} / {t['two_stage']['err']:.4f} | "
                         f"{t['single_stage']['ndcg@10']:.4f} / {t['single_stage']['err']:.4f} |")
            L += ["", f"Per-query latency (one query at a time, {t0['latency_queries']} queries per split "
                  f"({t0.get('latency_encode_queries', t0['latency_queries'])} for the last column), query "
                  "encoding included, torch and faiss on 1 thread, exact indexes, top 10 returned):", "",
                  "| split | single stage p50 / p99 ms | two-stage, re-ranker vectors precomputed p50 / p99 ms | "
                  "two-stage, 100 candidates encoded per query p50 / p99 ms |", "|---|---|---|---|"]
            for s, t in two.items():
                la = t["latency"]
                L.append("| " + s + " | " + " | ".join(f"{la[k]['p50_ms']:.1f} / {la[k]['p99_ms']:.1f}" for k in
                         ("single_stage", "two_stage_precomputed", "two_stage_encode_candidates")) + " |")
        L.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(L))
    print(f"report written to {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm", help="the served model (default: zero-shot MiniLM)")
    p.add_argument("--rerank-model", default=None, help="two-stage: re-ranker (and the single stage it is compared to)")
    p.add_argument("--first-stage", default="minilm", help="two-stage: first-stage model (default minilm)")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--hnsw-m", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32])
    p.add_argument("--ef-search", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64, 128, 256])
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--latency-encode-queries", type=int, default=50,
                   help="queries timed for the variant that encodes the 100 candidates (slow)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for encoding")
    p.add_argument("--build-threads", type=int, default=2, help="faiss threads for HNSW builds")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache", default="runs/homedepot_index")
    p.add_argument("--out", default="docs/results/homedepot/index.md")
    p.add_argument("--report", action="store_true", help="only rebuild the report from the cached results")
    args = p.parse_args(argv)
    cache, out = Path(args.cache), Path(args.out)
    commands = ["python experiments/homedepot_index.py --model runs/experiment/gcl-linear-s0/final "
                "--rerank-model runs/experiment/gcl-linear-s0/final --first-stage minilm",
                "python experiments/homedepot_index.py --model minilm"]
    if args.report:
        report(cache, out, commands)
        return 0

    import faiss
    import torch

    from gcl.data.sources import load_benchmark
    from gcl.evaluation.evaluator import Protocol
    from gcl.training.config import DataConfig

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.build_threads)
    bench = load_benchmark(DataConfig(source="homedepot", data_dir=args.data_dir),
                           announce=lambda m: print(m, file=sys.stderr))
    if bench.name != "homedepot":
        raise SystemExit("the Home Depot data was not found (see ../shared/data/README.md)")
    protocol = Protocol()
    served = Embedder(args.model, cache)
    rerank = first = None
    if args.rerank_model:
        rerank = served if args.rerank_model == args.model else Embedder(args.rerank_model, cache)
        first = served if args.first_stage == args.model else Embedder(args.first_stage, cache)
    res = {"meta": {"model": args.model, "rerank_model": args.rerank_model, "first_stage": args.first_stage,
                    "machine": f"{platform.system()} {platform.machine()}, {__import__('os').cpu_count()} logical CPUs, "
                               f"load average {', '.join(f'{x:.1f}' for x in __import__('os').getloadavg())}",
                    "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "faiss": faiss.__version__,
                    "argv": sys.argv[1:]}, "splits": {}}
    result_path = cache / f"result-{slug(args.model)}.json"
    if result_path.is_file():  # resume: keep the splits an earlier run of the same model finished
        res["splits"] = json.loads(result_path.read_text())["splits"]
    for name in args.splits.split(","):
        if name in res["splits"]:
            print(f"[{name}] already in {result_path}: skipped", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        res["splits"][name] = run_split(name, bench.eval_split(name), served, args, protocol, first, rerank)
        print(f"[{name}] done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(res, indent=1))  # after every split: partial results survive
    report(cache, out, commands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
