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
measurement is ``experiments/equal_step.py`` (the final models of equal-budget runs) or the
``budget`` profile of ``results_table.py``.

With ``--baseline ARM``, the same fit read as differences at equal steps, with their uncertainty::

    a_A - a_base ± se,   se^2 = s^2 [(X'X)^-1]_AA-terms,   s^2 = RSS / (n - arms - 1)

and a 95 % t interval, beside the raw difference of the arms' means; each arm's own slope (its
runs alone, when they stopped at two steps or more); and ``p slopes``, the F test of one slope per
such arm against the shared one (a small p: the arms' lines are not parallel, and a difference at
equal steps depends on the step it is read at)::

    F = ((RSS_shared - RSS_own) / k) / (RSS_own / (n - p_own))

A run that kept no best model (``eval.keep_best=false``: the ``budget`` profile) was evaluated
at its last step, and its record's ``dev`` is that of its final model (``results_table.dev_metric``),
so ``dev.step`` is the step of the evaluated model for every record. Trains nothing; reads only
``runs.jsonl``.

    python experiments/stop_step.py docs/results/table/runs.jsonl --baseline binary-thresholded-random \
        --arms binary-thresholded-random binary-thresholded gcl gcl-best st-mnrl-thresholded
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
    """The runs of ``arms`` with a dev step (that of the model their test figures come from)."""
    out = []
    for r in rows:
        step = (r.get("dev") or {}).get("step")
        if r.get("arm") not in arms or step is None:
            continue
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            raise SystemExit(f"error: run {r.get('arm')} seed {r.get('seed')}: dev.step is {step!r}, not a number")
        out.append(r)
    return out


def step_table(rows: list[dict], arms: list[str]) -> list[tuple[str, str, float, float]]:
    """``(split, metric, r, slope per 100 steps)`` over the runs of ``arms`` with a dev step."""
    runs = _stepped(rows, arms)
    if len(runs) < 3:
        raise SystemExit(f"error: {len(runs)} runs of {arms} with a dev step; need at least 3")
    step = np.array([float(r["dev"]["step"]) for r in runs])
    if np.ptp(step) == 0:
        raise SystemExit("error: every run was evaluated at the same step; nothing to correlate")
    out = []
    for split in SPLITS:
        for metric in METRICS:
            y = _values(runs, split, metric)
            r_ = float(np.corrcoef(step, y)[0, 1])
            slope = float(np.polyfit(step, y, 1)[0]) * 100
            out.append((split, metric, r_, slope))
    return out


def _shared_slope_runs(rows: list[dict], arms: list[str]) -> tuple[list[dict], list[str], np.ndarray]:
    """``(runs, arms present, their steps)`` for the fit ``y = a_arm + b * step``, or a clear error
    when it has no degree of freedom left or its slope is not identified."""
    runs = _stepped(rows, arms)
    present = [a for a in arms if any(r["arm"] == a for r in runs)]
    if len(runs) < len(present) + 2:
        raise SystemExit(f"error: {len(runs)} runs of {len(present)} arms with a dev step; the fit needs at least "
                         f"{len(present) + 2} (one intercept per arm, one slope, one degree of freedom)")
    step = np.array([float(r["dev"]["step"]) for r in runs])
    if not any(len(set(step[[r["arm"] == a for r in runs]])) >= 2 for a in present):
        raise SystemExit("error: no arm has runs at two different steps; the shared slope is not identified")
    return runs, present, step


def adjusted_table(rows: list[dict], arms: list[str], at: float) -> list[tuple[str, str, float, float, dict]]:
    """``(split, metric, shared slope per 100 steps, R², {arm: figure at step ``at``})`` from the
    fit ``y = a_arm + b * step`` over the runs of ``arms`` with a dev step (module docstring)."""
    runs, present, step = _shared_slope_runs(rows, arms)
    if len(present) < len(arms):
        missing = [a for a in arms if a not in present]
        print(f"warning: no run with a dev step for {', '.join(missing)}: left out of the fit", file=sys.stderr)
    x = np.column_stack([step] + [[float(r["arm"] == a) for r in runs] for a in present])
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


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares: coefficients, their covariance s^2 (X'X)^-1 and the residual sum of squares."""
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ coef
    rss = float(resid @ resid)
    return coef, rss / (len(y) - x.shape[1]) * np.linalg.inv(x.T @ x), rss


def _own_slope(step: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.polyfit(step, y, 1)[0]) if len(set(step)) >= 2 else None


def baseline_table(rows: list[dict], arms: list[str], baseline: str) -> list[dict]:
    """Per split and metric, the shared-slope fit read against ``baseline`` (module docstring):
    ``{split, metric, runs, slope, slope_se, r2, p_slopes, base_slope, effects: [{arm, runs, diff,
    se, ci, raw, slope}]}``; slopes per 100 steps."""
    from scipy import stats

    stepped = _stepped(rows, arms)
    if not any(r["arm"] == baseline for r in stepped):
        raise SystemExit(f"error: the baseline {baseline} has no run with a dev step among {', '.join(arms)}")
    if all(r["arm"] == baseline for r in stepped):
        raise SystemExit(f"error: no arm besides the baseline {baseline} has a run with a dev step")
    runs, present, step = _shared_slope_runs(rows, arms)
    others = [a for a in present if a != baseline]
    arm = np.array([r["arm"] for r in runs])
    x = np.column_stack([np.ones(len(runs))] + [(arm == a).astype(float) for a in others] + [step])
    # one slope per arm run at two steps or more (the baseline too); an arm at one step has no
    # slope of its own (its intercept absorbs it), so the shared model is nested in this one
    own = [a for a in present if len(set(step[arm == a])) >= 2]
    x_own = np.column_stack([x[:, :-1]] + [step * (arm == a) for a in own])
    t = float(stats.t.ppf(0.975, len(runs) - x.shape[1]))
    out = []
    for split in SPLITS:
        for metric in METRICS:
            y = _values(runs, split, metric)
            coef, cov, rss = _ols(x, y)
            total = float(((y - y.mean()) ** 2).sum())
            p_slopes = None
            dof_own = len(runs) - x_own.shape[1]
            k = len(own) - 1  # extra slopes beyond the shared one
            if k > 0 and dof_own > 0 and np.linalg.matrix_rank(x_own) == x_own.shape[1]:
                rss_own = _ols(x_own, y)[2]
                if rss_own > 0:
                    p_slopes = float(stats.f.sf(((rss - rss_own) / k) / (rss_own / dof_own), k, dof_own))
            effects = []
            for i, a in enumerate(others, 1):
                se = float(np.sqrt(cov[i, i]))
                slope = _own_slope(step[arm == a], y[arm == a])
                effects.append({"arm": a, "runs": int((arm == a).sum()), "diff": float(coef[i]), "se": se,
                                "ci": (float(coef[i] - t * se), float(coef[i] + t * se)),
                                "raw": float(y[arm == a].mean() - y[arm == baseline].mean()),
                                "slope": None if slope is None else slope * 100})
            base_slope = _own_slope(step[arm == baseline], y[arm == baseline])
            out.append({"split": split, "metric": metric, "runs": len(runs), "slope": float(coef[-1]) * 100,
                        "slope_se": float(np.sqrt(cov[-1, -1])) * 100,
                        "r2": 1.0 - rss / total if total > 0 else 1.0, "p_slopes": p_slopes,
                        "base_slope": None if base_slope is None else base_slope * 100, "effects": effects})
    return out


def _slope(v: float | None) -> str:
    return "—" if v is None else f"{v:+.4f}"


def print_baseline_table(table: list[dict], baseline: str) -> None:
    print(f"\neach arm minus {baseline} at equal steps, fit y = a_arm + b * step (one slope for all arms); "
          "diff ± se [95 % t interval], raw = difference of the means; own slope per 100 steps; "
          "p slopes: F test of one slope per arm against the shared one")
    for f in table:
        p = "—" if f["p_slopes"] is None else f"{f['p_slopes']:.3f}"
        print(f"\n{f['split']} {f['metric']}: b {f['slope']:+.4f} ± {f['slope_se']:.4f} per 100 steps, "
              f"R² {f['r2']:.2f}, {f['runs']} runs, p slopes {p}, {baseline}'s own slope {_slope(f['base_slope'])}")
        print("| arm | runs | at equal steps | 95 % interval | raw | own slope |\n|---|---:|---:|---|---:|---:|")
        for e in f["effects"]:
            print(f"| {e['arm']} | {e['runs']} | {e['diff']:+.4f} ± {e['se']:.4f} | "
                  f"[{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}] | {e['raw']:+.4f} | {_slope(e['slope'])} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="a results_table runs.jsonl")
    p.add_argument("--arms", nargs="+", required=True)
    p.add_argument("--at", type=float, default=None, metavar="STEP",
                   help="also each arm's figure at this common step (shared-slope fit; module docstring)")
    p.add_argument("--baseline", default=None, metavar="ARM",
                   help="also each arm minus ARM at equal steps, with standard errors (module docstring)")
    args = p.parse_args(argv)
    if not args.runs.is_file():
        print(f"error: {args.runs}: no such file", file=sys.stderr)
        return 2
    rows = []
    for i, line in enumerate(args.runs.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"error: {args.runs}: line {i}: not JSON ({exc.msg})", file=sys.stderr)
            return 2
        if not isinstance(row, dict):
            print(f"error: {args.runs}: line {i}: not a runs.jsonl record (a JSON object)", file=sys.stderr)
            return 2
        rows.append(row)
    if args.baseline is not None:
        if not any(r.get("arm") == args.baseline for r in rows):
            print(f"error: --baseline {args.baseline}: no run of that arm in {args.runs}", file=sys.stderr)
            return 2
        if args.baseline not in args.arms:
            args.arms = [args.baseline, *args.arms]
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
    if args.baseline is not None:
        print_baseline_table(baseline_table(rows, args.arms, args.baseline), args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
