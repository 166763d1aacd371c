"""How much a test split's figure follows the step that dev early stopping picked.

    python experiments/stop_step.py docs/results/table_quick/runs.jsonl \
        --arms gcl-batch4x binary-thresholded-random-batch4x st-mnrl-thresholded-batch4x

For the runs of the given arms (every seed), the Pearson correlation ``r`` between the best dev
step recorded in ``runs.jsonl`` (``dev.step``) and each split's metric, and the least-squares
slope of metric on step (per 100 steps). The dev split holds new queries; splits that hold
training queries (in_domain, novel_corpus) keep improving after dev has peaked, so a large
``r`` there means arm differences on that split mix the loss with where each run stopped.

With ``--at STEP``, each arm's figure at a common step, from the least-squares fit with one
intercept per arm and one slope shared by all (analysis of covariance)::

    y_run = a_arm(run) + b * step_run,      figure of arm A at STEP = a_A + b * STEP

and the fit's R². It is a model, not a measurement: it assumes the metric grows linearly with the
stop step at the same rate for every arm, over the range of steps the runs stopped at; an arm
whose runs all stopped at one step gets its figure at STEP by that shared slope alone. The
measurement is ``experiments/equal_step.py`` (the final models of equal-budget runs).
Trains nothing; reads only ``runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # results_report.py sits beside this script
from results_report import PAIRED as METRICS  # noqa: E402
from results_report import SPLITS  # noqa: E402


def _values(runs: list[dict], split: str, metric: str) -> "np.ndarray":
    try:
        return np.array([float(r["splits"][split][metric]) for r in runs])
    except (KeyError, TypeError, ValueError):
        bad = next(r for r in runs if not isinstance(((r.get("splits") or {}).get(split) or {}).get(metric), (int, float)))
        raise SystemExit(f"error: run {bad.get('arm')} seed {bad.get('seed')}: no {metric} for {split} in runs.jsonl") from None


def _stepped(rows: list[dict], arms: list[str]) -> list[dict]:
    """The runs of ``arms`` with a dev step."""
    return [r for r in rows if r.get("arm") in arms and (r.get("dev") or {}).get("step") is not None]


def step_table(rows: list[dict], arms: list[str]) -> list[tuple[str, str, float, float]]:
    """``(split, metric, r, slope per 100 steps)`` over the runs of ``arms`` with a dev step."""
    runs = _stepped(rows, arms)
    if len(runs) < 3:
        raise SystemExit(f"error: {len(runs)} runs of {arms} with a dev step; need at least 3")
    step = np.array([float(r["dev"]["step"]) for r in runs])
    if np.ptp(step) == 0:
        raise SystemExit("error: every run stopped at the same step; nothing to correlate")
    out = []
    for split in SPLITS:
        for metric in METRICS:
            y = _values(runs, split, metric)
            r_ = float(np.corrcoef(step, y)[0, 1])
            slope = float(np.polyfit(step, y, 1)[0]) * 100
            out.append((split, metric, r_, slope))
    return out


def adjusted_table(rows: list[dict], arms: list[str], at: float) -> list[tuple[str, str, float, float, dict]]:
    """``(split, metric, shared slope per 100 steps, R², {arm: figure at step ``at``})`` from the
    fit ``y = a_arm + b * step`` over the runs of ``arms`` with a dev step (module docstring)."""
    runs = _stepped(rows, arms)
    present = [a for a in arms if any(r["arm"] == a for r in runs)]
    if len(present) < len(arms):
        missing = [a for a in arms if a not in present]
        print(f"warning: no run with a dev step for {', '.join(missing)}: left out of the fit", file=sys.stderr)
    if len(runs) < len(present) + 2:
        raise SystemExit(f"error: {len(runs)} runs of {len(present)} arms with a dev step; the fit needs at least "
                         f"{len(present) + 2} (one intercept per arm, one slope, one degree of freedom)")
    step = np.array([float(r["dev"]["step"]) for r in runs])
    x = np.column_stack([step] + [[float(r["arm"] == a) for r in runs] for a in present])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise SystemExit("error: no arm has runs at two different steps; the shared slope is not identified")
    out = []
    for split in SPLITS:
        for metric in METRICS:
            y = _values(runs, split, metric)
            coef = np.linalg.lstsq(x, y, rcond=None)[0]
            resid = y - x @ coef
            total = float(((y - y.mean()) ** 2).sum())
            r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 1.0
            figures = {a: float(coef[1 + i] + coef[0] * at) for i, a in enumerate(present)}
            out.append((split, metric, float(coef[0]) * 100, r2, figures))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="a results_table runs.jsonl")
    p.add_argument("--arms", nargs="+", required=True)
    p.add_argument("--at", type=float, default=None, metavar="STEP",
                   help="also each arm's figure at this common step (shared-slope fit; module docstring)")
    args = p.parse_args(argv)
    if not args.runs.is_file():
        print(f"error: {args.runs}: no such file", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in args.runs.read_text().splitlines() if line.strip()]
    n = sum(1 for r in rows if r.get("arm") in args.arms)
    print(f"{n} runs of {', '.join(args.arms)}")
    print("| split | metric | r | slope per 100 steps |\n|---|---|---:|---:|")
    for split, metric, r_, slope in step_table(rows, args.arms):
        print(f"| {split} | {metric} | {r_:.2f} | {slope:+.4f} |")
    if args.at is not None:
        table = adjusted_table(rows, args.arms, args.at)
        names = list(table[0][4])
        print(f"\nat step {args.at:g}, fit y = a_arm + b * step (one slope for all arms):")
        print("| split | metric | b per 100 steps | R² | " + " | ".join(names) + " |")
        print("|---|---|---:|---:|" + "---:|" * len(names))
        for split, metric, slope, r2, figures in table:
            print(f"| {split} | {metric} | {slope:+.4f} | {r2:.2f} | " + " | ".join(f"{figures[a]:.4f}" for a in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
