"""Two arms compared at their final step instead of the step dev early stopping picked.

    python experiments/equal_step.py --work runs/table_quick \
        --pair gcl-batch4x:binary-thresholded-random-batch4x --seeds 0,1,2 --eval eval_final

Dev early stopping picks each run's model on *new* queries, but the in_domain and novel_corpus
splits hold the training queries, which keep improving after dev has peaked
(``experiments/stop_step.py``). Two arms whose runs stopped at different steps are then compared
at different amounts of training. This script compares the models each run ended with: for
``<work>/<arm>-s<seed>`` it reads ``gcl evaluate``'s per-query files in ``<run>/<eval>`` (the
evaluation of ``<run>/final``), or, when that directory is missing and the run's best dev step is
its last step (``best`` and ``final`` are the same weights), those of ``<run>/eval``.

Per split and metric: the seed means of A and B (mean over queries), A − B, the seeds where A is
ahead, and the paired sign-flip p over queries of the seed-averaged per-query metric (the test of
``gcl evaluate --compare``). It prints each run's final step first. Trains and encodes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gcl.evaluation.compare import paired_compare, read_per_query
from gcl.evaluation.settings import CompareSettings

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
METRICS = ("ndcg@10", "err")


def steps(run: Path, metric: str = "dev/ndcg@10") -> tuple[int, int | None]:
    """``(last step, best dev step)`` from a ``gcl train`` run's ``metrics.jsonl``."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file (not a gcl train run directory)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last = max(int(r["step"]) for r in rows)
    dev = [(r[metric], int(r["step"])) for r in rows if metric in r]
    best = max(dev, key=lambda t: (t[0], -t[1]))[1] if dev else None  # the first step with the best value
    return last, best


def eval_dir(run: Path, name: str) -> Path:
    d = run / name
    if d.is_dir():
        return d
    last, best = steps(run)
    if best == last:
        return run / "eval"
    raise SystemExit(f"error: {d}: no such directory, and {run.name}'s best dev step {best} is not its last "
                     f"step {last}; evaluate {run / 'final'} into it (gcl evaluate --model ... --out {d})")


def compare(work: Path, a: str, b: str, seeds: list[int], name: str, settings: CompareSettings) -> list[dict]:
    frames = {}
    for arm in (a, b):
        for s in seeds:
            run = work / f"{arm}-s{s}"
            frames[arm, s] = read_per_query(eval_dir(run, name))
    out = []
    for split in SPLITS:
        for metric in METRICS:
            pa = [frames[a, s][split][metric] for s in seeds]
            pb = [frames[b, s][split][metric] for s in seeds]
            index = pa[0].index
            if any(set(f.index) != set(index) for f in pa + pb):
                raise SystemExit(f"error: {split}: the runs were scored on different queries")
            ma = sum(f.loc[index] for f in pa) / len(seeds)
            mb = sum(f.loc[index] for f in pb) / len(seeds)
            res = paired_compare(mb.to_numpy(), ma.to_numpy(), split=split, metric=metric, settings=settings)
            per_seed = [float(x.mean() - y.mean()) for x, y in zip(pa, pb)]
            out.append({"split": split, "metric": metric, "a": float(ma.mean()), "b": float(mb.mean()),
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
        print(f"{arm}: final steps " + ", ".join(f"s{s} {steps(args.work / f'{arm}-s{s}')[0]}" for s in seeds))
    rows = compare(args.work, a, b, seeds, args.eval, CompareSettings(n_permutations=args.rounds))
    print(f"\n| split | metric | {a} | {b} | A − B | seeds ahead | p |\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['split']} | {r['metric']} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} | "
              f"{r['ahead']}/{len(seeds)} | {r['p']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
