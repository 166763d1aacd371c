"""Two arms compared at their final step instead of the step dev early stopping picked.

    python experiments/equal_step.py --work runs/table_quick \
        --pair gcl-batch4x:binary-thresholded-random-batch4x --seeds 0,1,2 --eval eval_final

Dev early stopping picks each run's model on *new* queries, but the in_domain and novel_corpus
splits hold the training queries, which keep improving after dev has peaked
(``experiments/stop_step.py``). Two arms whose runs stopped at different steps are then compared
at different amounts of training. This script compares the models each run ended with: for
``<work>/<arm>-s<seed>`` it reads ``gcl evaluate``'s per-query files in ``<run>/<eval>`` (the
evaluation of ``<run>/final``), or, when that directory is missing and the run's best dev step is
its last step (``best`` and ``final`` are the same weights), those of ``<run>/eval``. A weight soup (``gcl soup`` into ``<run>/final``, no training run) has only
``<run>/eval``, the evaluation of that one model.

Per split and metric: the seed means of A and B (mean over queries), A − B, the seeds where A is
ahead, and the paired sign-flip p over queries of the seed-averaged per-query metric (the test of
``gcl evaluate --compare``). It prints each run's final step first. Trains and encodes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_table.py, results_report.py sit beside this script
from results_report import PAIRED, SPLITS, per_query_mean, significance  # noqa: E402
from results_table import dev_metric  # noqa: E402

from gcl.evaluation.seen import run_steps  # noqa: E402
from gcl.evaluation.settings import CompareSettings  # noqa: E402


def steps(arm: str, run: Path) -> tuple[int, int | None]:
    """``(last step, best dev step)`` of a ``gcl train`` run (``metrics.jsonl``)."""
    if not (run / "metrics.jsonl").is_file():
        raise SystemExit(f"error: {run / 'metrics.jsonl'}: no such file (not a gcl train run directory)")
    return run_steps(run, None), (dev_metric(arm, run) or {}).get("step")


def is_soup(run: Path) -> bool:
    """A weight soup of trained runs (``gcl soup`` into ``<run>/final``): no training of its own."""
    return (run / "final" / "gcl_soup.json").is_file() and not (run / "metrics.jsonl").is_file()


def final_step(arm: str, run: Path) -> str:
    return "soup" if is_soup(run) else str(steps(arm, run)[0])


def eval_dir(arm: str, run: Path, name: str) -> Path:
    d = run / name
    if d.is_dir():
        return d
    if is_soup(run) and (run / "eval").is_dir():  # a soup's only model is final
        return run / "eval"
    last, best = steps(arm, run)
    if best == last:
        return run / "eval"
    raise SystemExit(f"error: {d}: no such directory, and {run.name}'s best dev step {best} is not its last "
                     f"step {last}; evaluate {run / 'final'} into it (gcl evaluate --model ... --out {d})")


def compare(work: Path, a: str, b: str, seeds: list[int], name: str, settings: CompareSettings) -> list[dict]:
    """Per split and metric: seed means of ``a`` and ``b``, ``a - b`` with its paired p, seeds ``a`` is ahead."""
    runs = {arm: [{"seed": s, "eval_dir": str(eval_dir(arm, work / f"{arm}-s{s}", name))} for s in seeds]
            for arm in (a, b)}
    out = []
    for split in SPLITS:
        for metric in PAIRED:
            res = significance(runs[a], runs[b], split, metric, settings)
            if res is None:
                raise SystemExit(f"error: {split}: a run has no per-query {metric}, or the runs were scored on "
                                 "different queries")
            per_seed = [per_query_mean([x], split, metric).mean() - per_query_mean([y], split, metric).mean()
                        for x, y in zip(runs[a], runs[b])]
            out.append({"split": split, "metric": metric, "a": res.mean_b, "b": res.mean_a,
                        "diff": res.difference, "ahead": sum(d > 0 for d in per_seed), "p": res.p_value})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/table_quick"))
    p.add_argument("--pair", required=True, help="A:B, two arms of the work directory; A - B is reported")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--eval", default="eval_final", help="per-run directory with the evaluation of <run>/final")
    p.add_argument("--rounds", type=int, default=10000, help="sign flips of the randomisation test")
    args = p.parse_args(argv)
    if args.pair.count(":") != 1:
        print(f"error: --pair {args.pair!r}: give A:B", file=sys.stderr)
        return 2
    a, b = args.pair.split(":")
    seeds = [int(s) for s in args.seeds.split(",")]
    for arm in (a, b):
        print(f"{arm}: final steps " + ", ".join(f"s{s} {final_step(arm, args.work / f'{arm}-s{s}')}" for s in seeds))
    rows = compare(args.work, a, b, seeds, args.eval, CompareSettings(n_permutations=args.rounds))
    print(f"\n| split | metric | {a} | {b} | A − B | seeds ahead | p |\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['split']} | {r['metric']} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} | "
              f"{r['ahead']}/{len(seeds)} | {r['p']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
