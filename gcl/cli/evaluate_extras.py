"""``gcl evaluate`` add-ons: ordering ceilings, judged re-rank, thresholded gains, seen/unseen
queries of a trained run, and the paired comparison of two evaluated runs (docs/evaluation.md)."""

from __future__ import annotations

import argparse
import sys

from gcl.errors import ConfigError
from gcl.evaluation.settings import CeilingSettings, CompareSettings

TABLE_COLUMNS = ("ndcg@10", "err", "rbp@0.9", "map@1000", "mrr@1000")


def add_args(p: argparse.ArgumentParser) -> None:
    c, s = CeilingSettings(), CompareSettings()
    g = p.add_argument_group("ordering, gains and comparison")
    g.add_argument("--ceilings", action="store_true",
                   help="also score each query's judged documents in ideal order and in random order "
                        "(mean of --ceiling-shuffles seeded shuffles) and the headroom between them")
    g.add_argument("--ceiling-shuffles", type=int, default=c.n_shuffles, help=f"default {c.n_shuffles}")
    g.add_argument("--ceiling-seed", type=int, default=c.seed, help=f"default {c.seed}")
    g.add_argument("--judged-rerank", action="store_true",
                   help="rank only each test query's judged documents (ordering without retrieval)")
    g.add_argument("--relevance-threshold", type=float, default=None, metavar="T",
                   help="also report metrics with gain 0 (not relevant) for grades < T (grades 1..100; "
                        "2 = the lowest grade is irrelevant), beside the reference numbers")
    g.add_argument("--seen-unseen", default=None, metavar="RUN_DIR",
                   help="split the in_domain queries into seen / unseen / dev for the gcl train run in RUN_DIR "
                        "(its config.json), by replaying its batch sampler")
    g.add_argument("--trained-steps", type=int, default=None,
                   help="steps of that run to replay (default: the last step in its metrics.jsonl)")
    g.add_argument("--seen-min-docs", type=int, default=1,
                   help="a query is seen when this many of its pairs met in one batch (default 1)")
    g.add_argument("--compare", nargs=2, default=None, metavar=("RUN_A", "RUN_B"),
                   help="compare two gcl evaluate --out directories query by query (B - A): paired "
                        "randomisation test and bootstrap CI per split and metric; evaluates nothing")
    g.add_argument("--permutations", type=int, default=s.n_permutations, help=f"default {s.n_permutations}")
    g.add_argument("--bootstrap", type=int, default=s.n_bootstrap, help=f"default {s.n_bootstrap}")
    g.add_argument("--compare-seed", type=int, default=s.seed, help=f"default {s.seed}")


def check_args(args) -> None:
    """Option values that argparse cannot check, as ConfigErrors naming the option."""
    if args.ceiling_shuffles < 1:
        raise ConfigError(f"--ceiling-shuffles must be >= 1, got {args.ceiling_shuffles}")
    if args.relevance_threshold is not None:
        from gcl.evaluation.gains import check_threshold

        try:
            check_threshold(args.relevance_threshold)
        except ValueError as exc:
            raise ConfigError(f"--relevance-threshold: {exc}") from None
    if args.trained_steps is not None and args.trained_steps < 0:
        raise ConfigError(f"--trained-steps must be >= 0, got {args.trained_steps}")
    if args.seen_min_docs < 1:
        raise ConfigError(f"--seen-min-docs must be >= 1, got {args.seen_min_docs}")
    if args.permutations < 1 or args.bootstrap < 1:
        raise ConfigError("--permutations and --bootstrap must be >= 1")


def run_compare(args) -> int:
    from pathlib import Path

    from gcl.evaluation.compare import compare_runs, compare_table, write_compare

    check_args(args)
    settings = CompareSettings(n_permutations=args.permutations, n_bootstrap=args.bootstrap, seed=args.compare_seed)
    run_a, run_b = args.compare
    results = compare_runs(run_a, run_b, settings)
    print(f"B = {run_b}  vs  A = {run_a}: paired over queries; p = randomisation test "
          f"({settings.n_permutations} sign flips), 95% CI = bootstrap ({settings.n_bootstrap} resamples), "
          f"seed {settings.seed}")
    print(compare_table(results))
    path = write_compare(Path(args.out) / "compare.json", results, run_a=run_a, run_b=run_b, settings=settings)
    print(f"\ncomparison written to {path}")
    return 0


def evaluate_split(args, task, retriever, protocol):
    """Score one split (full retrieval or judged re-rank) and attach the requested add-ons."""
    from gcl.evaluation.evaluator import evaluate_task

    if args.judged_rerank:
        from gcl.evaluation.judged_rerank import evaluate_judged_rerank

        res = evaluate_judged_rerank(task, retriever, protocol)
    else:
        res = evaluate_task(task, retriever, protocol)
    threshold = args.relevance_threshold
    if args.ceilings:
        from gcl.evaluation.ceilings import ordering_ceilings

        settings = CeilingSettings(n_shuffles=args.ceiling_shuffles, seed=args.ceiling_seed)
        res.extras["ceilings"] = ordering_ceilings(task, protocol.metrics, settings).to_dict()
    if threshold is not None:
        import numpy as np

        from gcl.evaluation.gains import score_ranking, thresholded_task

        t_task = thresholded_task(task, threshold)
        per_query = score_ranking(t_task, res.run_indices, protocol.metrics)
        entry = {"threshold": threshold, "summary": {m: float(np.mean(v)) for m, v in per_query.items()}}
        if args.ceilings:
            from gcl.evaluation.ceilings import ordering_ceilings

            entry["ceilings"] = ordering_ceilings(t_task, protocol.metrics, settings).to_dict()
        res.extras["relevance_threshold"] = entry
    return res


def add_seen_unseen(args, bench, results) -> None:
    """Seen / unseen / dev summaries of the in_domain split (when asked for and evaluated)."""
    if not args.seen_unseen:
        return
    from gcl.evaluation.seen import group_summaries, query_groups

    in_domain = [r for r in results if r.name == "in_domain"]
    if not in_domain:
        raise ConfigError("--seen-unseen needs the in_domain split (--splits in_domain or all)")
    groups, info = query_groups(bench, args.seen_unseen, steps=args.trained_steps, min_docs=args.seen_min_docs)
    in_domain[0].extras["seen_unseen"] = {**info, "groups": group_summaries(in_domain[0].per_query, groups)}


def print_extras(results, out=None) -> None:
    """The add-on tables after the main one: ceilings, thresholded gains, seen/unseen groups."""
    out = out or sys.stdout
    from gcl.evaluation.ceilings import Ceilings, ceilings_table
    from gcl.evaluation.seen import groups_table

    def ceil(d):
        return Ceilings(ideal=d["ideal"], random=d["random"],
                        settings=CeilingSettings(d["random_shuffles"], d["random_seed"]))

    rows = [(r.name, ceil(r.extras["ceilings"])) for r in results if "ceilings" in r.extras]
    if rows:
        s = rows[0][1].settings
        print(f"\nordering ceilings: judged documents only, ideal order vs random order "
              f"(mean of {s.n_shuffles} shuffles, seed {s.seed})", file=out)
        print(ceilings_table(rows, TABLE_COLUMNS), file=out)
    thr = [r for r in results if "relevance_threshold" in r.extras]
    if thr:
        t = thr[0].extras["relevance_threshold"]["threshold"]
        print(f"\ngains with relevance threshold {t:g}: grades < {t:g} have gain 0 and are not relevant", file=out)
        head = f"{'split':<14}" + "".join(f"{c:>10}" for c in TABLE_COLUMNS)
        print(head + "\n" + "-" * len(head), file=out)
        for r in thr:
            v = r.extras["relevance_threshold"]["summary"]
            print(f"{r.name:<14}" + "".join(f"{v.get(c, float('nan')):>10.4f}" for c in TABLE_COLUMNS), file=out)
        rows = [(r.name, ceil(r.extras["relevance_threshold"]["ceilings"])) for r in thr
                if "ceilings" in r.extras["relevance_threshold"]]
        if rows:
            print(ceilings_table(rows, TABLE_COLUMNS), file=out)
    for r in results:
        if "seen_unseen" in r.extras:
            su = r.extras["seen_unseen"]
            print(f"\n{r.name} queries by the training of {su['run']} ({su['steps']} steps replayed; seen = "
                  f">= {su['min_docs']} of its pairs in one batch)", file=out)
            print(groups_table(r.name, su["groups"], TABLE_COLUMNS), file=out)
