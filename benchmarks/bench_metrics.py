"""Speed of gcl.metrics against the reference way of computing the Marqo-GS summary metrics.

Ours: ``judge_indices`` (or ``judge_run`` from dicts) + ``compute_metrics(DEFAULT_METRICS)``, all
nine metrics, vectorised over queries.

Reference: pytrec_eval for ``ndcg_cut.10``, ``map_cut.1000`` and ``recip_rank`` (timed with and
without building its dicts and evaluator), plus per-query Python loops for ERR and RBP(0.7, 0.8,
0.9), the reference protocol's formulas. The values of the seven reference metrics are compared
(max abs difference) and the times printed with the machine they ran on.

Two comparisons are printed, because the inputs differ:

* **arrays**: ours from prebuilt integer arrays (``judge_indices``, what the evaluator uses)
  against the reference from dicts with its evaluator already built -- unlike inputs;
* **same dicts** (like for like): ours from the run and qrels dicts (``judge_run``) against the
  reference from the same dicts, building its ``RelevanceEvaluator`` from the qrels dict and
  evaluating the run dict, plus the loops. Also shown: pytrec_eval alone (its three measures)
  against ``judge_run`` + the same three metrics.

    python benchmarks/bench_metrics.py --queries 2000 --depth 1000 --repeats 3

Synthetic but shaped like the protocol: each query has about 50 judged documents, grades 1..100,
some of them retrieved (more near the top), out of a 100,000-document corpus; fixed seed.
Scores strictly decrease along each ranking, so every implementation sees the same order.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from gcl.metrics import (
    DEFAULT_METRICS,
    REFERENCE_COLUMNS,
    compute_metrics,
    judge_indices,
    judge_run,
)

PYTREC_MEASURES = {"ndcg@10": "ndcg_cut_10", "map@1000": "map_cut_1000", "mrr@1000": "recip_rank"}


def make_data(n_queries: int, depth: int, n_docs: int, judged_per_query: int, seed: int):
    """Ranked doc indices, descending scores, and qrels as parallel arrays (query, doc, grade)."""
    rng = np.random.default_rng(seed)
    ranked = np.empty((n_queries, depth), dtype=np.int64)
    qq, dd = [], []
    for q in range(n_queries):
        ranked[q] = rng.choice(n_docs, size=depth, replace=False)
        n_judged = max(1, int(rng.poisson(judged_per_query)))
        # About 40% of the judged documents are retrieved, biased towards the top ranks.
        near_top = rng.geometric(1 / (0.2 * depth), size=int(0.4 * n_judged)) - 1
        ranks = np.unique(np.minimum(near_top, depth - 1))
        others = rng.choice(n_docs, n_judged - len(ranks))
        docs = np.unique(np.concatenate([ranked[q, ranks], others]))
        qq.append(np.full(len(docs), q))
        dd.append(docs)
    qrel_query = np.concatenate(qq)
    qrel_doc = np.concatenate(dd)
    qrel_grade = rng.integers(1, 101, size=len(qrel_doc)).astype(np.float64)
    scores = np.tile(np.arange(depth, 0, -1, dtype=np.float64), (n_queries, 1))  # distinct, falling
    return ranked, scores, qrel_query, qrel_doc, qrel_grade


def to_dicts(ranked, scores, qrel_query, qrel_doc, qrel_grade, doc_names, query_names):
    run = {}
    names = doc_names
    for q, qid in enumerate(query_names):
        run[qid] = dict(zip(names[ranked[q]].tolist(), scores[q].tolist()))
    qrels = {qid: {} for qid in query_names}
    grades = qrel_grade.astype(int).tolist()
    for q, d, g in zip(qrel_query.tolist(), names[qrel_doc].tolist(), grades):
        qrels[query_names[q]][d] = g
    return run, qrels


# --- the reference loops (one query at a time, the protocol's formulas) -------------------------


def reference_err(run, qrels):
    out = {}
    for qid, gt in qrels.items():
        max_rel = max(gt.values())
        ranking = sorted(run[qid], key=run[qid].get, reverse=True)
        err, p_stop = 0.0, 1.0
        for rank, doc in enumerate(ranking, start=1):
            rel = gt.get(doc, 0)
            r = (2**rel - 1) / 2**max_rel
            err += p_stop * r / rank
            p_stop *= 1 - r
        out[qid] = err
    return out


def reference_rbp(run, qrels, p):
    out = {}
    for qid, gt in qrels.items():
        max_rel = max(gt.values())
        ranking = sorted(run[qid], key=run[qid].get, reverse=True)
        total = 0.0
        for rank, doc in enumerate(ranking, start=1):
            total += gt.get(doc, 0) / max_rel * p ** (rank - 1)
        out[qid] = (1 - p) * total
    return out


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def machine() -> str:
    try:
        pytrec_version = version("pytrec-eval-terrier")
    except PackageNotFoundError:  # pragma: no cover
        pytrec_version = "?"
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return (
        f"machine: {platform.platform()} | {platform.machine()} {platform.processor()}".rstrip()
        + f"\ncpus: {cpus} (usable by this process: {usable})"
        + f"\npython {platform.python_version()} | numpy {np.__version__} | "
        f"pytrec-eval-terrier {pytrec_version}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--docs", type=int, default=100_000, help="corpus size")
    ap.add_argument("--judged", type=int, default=50, help="mean judged documents per query")
    ap.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import pytrec_eval

    print(machine())
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    data = make_data(args.queries, args.depth, args.docs, args.judged, args.seed)
    ranked, scores, qq, dd, gg = data
    print(f"data: {args.queries} queries x {args.depth} retrieved, corpus {args.docs}, "
          f"{len(qq)} judgments (mean {len(qq) / args.queries:.1f}/query, "
          f"{int(judge_indices(ranked, qq, dd, gg).is_judged.sum())} retrieved), grades 1..100, "
          f"seed {args.seed}, best of {args.repeats}")
    doc_names = np.asarray([f"doc{i}" for i in range(args.docs)], dtype=object)
    query_names = [f"q{i}" for i in range(args.queries)]

    # --- ours ---------------------------------------------------------------------------------
    t_ours, ours = best_of(args.repeats, lambda: compute_metrics(
        judge_indices(ranked, qq, dd, gg, query_ids=query_names), DEFAULT_METRICS))
    run, qrels = to_dicts(ranked, scores, qq, dd, gg, doc_names, query_names)
    t_ours_dicts, (judged_ids, ours_d) = best_of(args.repeats, lambda: (
        (judged := judge_run(run, qrels)).query_ids, compute_metrics(judged, DEFAULT_METRICS)))
    where = {q: i for i, q in enumerate(judged_ids)}  # judge_run sorts query ids: back to ours' order
    back = np.array([where[q] for q in query_names])
    ours_d = {name: v[back] for name, v in ours_d.items()}
    three = list(PYTREC_MEASURES)
    t_ours_dicts3, _ = best_of(args.repeats, lambda: compute_metrics(judge_run(run, qrels), three))

    # --- reference ----------------------------------------------------------------------------
    measures = {"ndcg_cut.10", "map_cut.1000", "recip_rank"}

    def build():
        r, q = to_dicts(ranked, scores, qq, dd, gg, doc_names, query_names)
        return r, pytrec_eval.RelevanceEvaluator(q, measures)

    t_build, (_, evaluator) = best_of(args.repeats, build)
    t_evaluator, _ = best_of(args.repeats, lambda: pytrec_eval.RelevanceEvaluator(qrels, measures))
    t_eval, theirs = best_of(args.repeats, lambda: evaluator.evaluate(run))
    t_loops, loops = best_of(args.repeats, lambda: {
        "err": reference_err(run, qrels),
        **{f"rbp@{p}": reference_rbp(run, qrels, p) for p in (0.7, 0.8, 0.9)},
    })

    # --- agreement ------------------------------------------------------------------------------
    print("\nmax |ours - reference| over queries (reference column, metric, reference source):")
    worst = 0.0
    for column, name in REFERENCE_COLUMNS.items():
        if name in PYTREC_MEASURES:
            ref = np.array([theirs[q][PYTREC_MEASURES[name]] for q in query_names])
            source = "pytrec_eval"
        else:
            ref = np.array([loops[name][q] for q in query_names])
            source = "python loop"
        diff = float(np.max(np.abs(ours[name] - ref)))
        same = float(np.max(np.abs(ours[name] - ours_d[name])))
        worst = max(worst, diff, same)
        print(
            f"  {column:<9} {name:<9} {diff:.3e}  ({source}; judge_run vs judge_indices "
            f"{same:.1e})  mean {ours[name].mean():.6f}"
        )

    # --- times ------------------------------------------------------------------------------
    ref_eval = t_eval + t_loops
    ref_all = t_build + t_eval + t_loops
    ref_dicts = t_evaluator + t_eval + t_loops
    print("\nseconds (best of repeats):")
    rows = [
        (f"ours: judge_indices + {len(DEFAULT_METRICS)} metrics", t_ours),
        (f"ours: judge_run (from dicts) + {len(DEFAULT_METRICS)} metrics", t_ours_dicts),
        ("ours: judge_run (from dicts) + 3 metrics", t_ours_dicts3),
        ("pytrec_eval: build dicts + evaluator", t_build),
        ("pytrec_eval: evaluator from the qrels dict", t_evaluator),
        ("pytrec_eval: evaluate() (3 measures)", t_eval),
        ("python loops: ERR + RBP x3", t_loops),
        ("reference: evaluate() + loops", ref_eval),
        ("reference: evaluator + evaluate() + loops", ref_dicts),
        ("reference: build + evaluate() + loops", ref_all),
    ]
    for label, seconds in rows:
        print(f"  {label:<48}{seconds:9.4f}")
    like = ref_dicts / t_ours_dicts
    print("\nspeed-up, arrays (ours from integer arrays; the reference from dicts, evaluator prebuilt):")
    print(f"  evaluate() + loops  vs  judge_indices + metrics              {ref_eval / t_ours:7.1f}x")
    print(f"  build + evaluate() + loops  vs  judge_indices + metrics      {ref_all / t_ours:7.1f}x")
    print("speed-up, same dicts (like for like: both start from the run and qrels dicts):")
    print(f"  evaluator + evaluate() + loops  vs  judge_run + metrics      {like:7.1f}x")
    print(f"  evaluate() + loops (evaluator prebuilt)  vs  judge_run + ... {ref_eval / t_ours_dicts:7.1f}x")
    print(f"  pytrec_eval alone: evaluator + evaluate()  vs  judge_run + the same 3 metrics "
          f"{(t_evaluator + t_eval) / t_ours_dicts3:.1f}x")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ok = worst <= 1e-9
    print(f"\nvalues {'agree' if ok else 'DIFFER'} (worst {worst:.2e}); "
          f"targets: arrays >= 30x {'met' if ref_eval / t_ours >= 30 else 'NOT met'}, "
          f"same dicts >= 20x {'met' if like >= 20 else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
