"""How small a difference the dev split can see, and whether it ranks recipes as the test splits do.

    python experiments/dev_resolution.py --table docs/results/table_budget \
        --model gcl-best=runs/devres/gcl-best-s{seed} --out docs/results/dev_resolution

Two dev rules of docs/results.md §1c were judged on leads of about 0.003 dev nDCG@10 (3 seeds);
one passed and its lead did not reach the test splits. This script asks whether the dev split
could have seen such a lead at all, and whether it orders recipes as the test splits do.

**Resolution.** A paired test over ``n`` queries detects a true mean difference ``δ`` with power
``1 - β`` at two-sided level ``α`` when (normal approximation; the minimal detectable effect)::

    MDE = (z_{1-α/2} + z_{1-β}) · σ_d / √n,        z_{0.975} + z_{0.8} = 2.80

where ``σ_d`` is the standard deviation over queries of one query's difference between two
models. A rule judged on means over ``S`` seeds sees each query's seed-averaged difference, whose
``σ_d`` is smaller by the part of it that is seed noise. ``σ_d`` is measured per pair of arms:

* on the dev split, by re-scoring each stored final model per query with the very evaluator
  training used (:class:`gcl.training.dev_eval.DevEvaluator`: the run's config, its seed's dev
  corpus); each re-scored mean must equal the run's recorded dev figure (checked, printed);
* on the four test splits, from the per-query files the table archived (``per_query/``).

Each pair also gets its paired sign-flip test over the dev queries (seed-averaged, as the report
tests the test splits): what a rule "paired test over dev queries" would have said.

**Agreement.** Over the seeded arms of the table whose records carry a dev figure, Spearman's ρ
and Kendall's τ between the arms' mean final dev figure and their mean figure on each test split
(also between test splits), with a two-sided permutation p (the arms' labels shuffled; exact
enumeration up to 8 arms). ``--exclude`` drops arms (by default CoSENT, 0.1 below every other arm
on every figure, which alone makes any ranking agree).

Trains nothing. The per-query dev scores are kept in ``<out>/per_query_dev/<arm>-s<seed>.csv.gz``
and reused (the models are needed only once).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_report as rr  # noqa: E402

METRICS = ("ndcg@10", "err")
SPLITS = rr.SPLITS
DEFAULT_PAIRS = ("gcl-best-one-way:gcl-best", "gcl-best-thresholded:gcl-best", "gcl-best-one-way:st-mnrl-all",
                 "gcl-best:st-mnrl-all", "gcl-best:st-cached-mnrl", "st-mnrl-thresholded:st-mnrl-all")
Z_SUM = 2.8015852  # z_{0.975} + z_{0.80}


def mde(sd: float, n: int, z_sum: float = Z_SUM) -> float:
    """Minimal detectable mean difference of a paired test over ``n`` queries (see module docstring)."""
    return z_sum * sd / math.sqrt(n)


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b."""
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


def rank_agreement(x, y, *, n_permutations: int = 100_000, seed: int = 0) -> dict[str, float]:
    """ρ, τ and the two-sided permutation p of ρ (``|ρ_perm| >= |ρ|``): every permutation of ``y``
    when there are at most 8 items, else ``n_permutations`` random ones (p = (1 + hits) / (1 + draws))."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # no ranking to agree with
        return {"rho": float("nan"), "tau": float("nan"), "p": float("nan"), "n": len(x)}
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = (ry - ry.mean()) / np.linalg.norm(ry - ry.mean())
    rho, tau = float(rx @ ry), _kendall(x, y)  # Spearman's ρ: Pearson's r of the ranks
    tol = 1e-12
    if len(x) <= 8:
        perms = np.array(list(itertools.permutations(range(len(y)))))
        stats = np.abs(ry[perms] @ rx)
        p = float(np.mean(stats >= abs(rho) - tol))
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_permutations, len(y))), axis=1)
        stats = np.abs(ry[perms] @ rx)
        p = float((1 + np.count_nonzero(stats >= abs(rho) - tol)) / (1 + n_permutations))
    return {"rho": rho, "tau": tau, "p": p, "n": len(x)}


# ------------------------------------------------------------------ dev per query

def model_dir(run: Path) -> Path:
    """A ``gcl train`` run keeps its final model in ``final/``; a sentence-transformers peer in the run."""
    return run / "final" if (run / "final").is_dir() else run


def train_config(run: Path):
    """The run's training config: ``config.json`` of a ``gcl train`` run; for a peer the config
    file, overrides and seed its ``peer.json`` records (experiments/st_peers.py)."""
    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    if (run / "peer.json").is_file():
        peer = json.loads((run / "peer.json").read_text())
        return load_config(TrainConfig, peer["config"], list(peer["overrides"]) + [f"seed={peer['seed']}"])
    return load_config(TrainConfig, run / "config.json")


def score_dev(run: Path, seed: int, *, full_corpus: bool = False):
    """Per-query dev metrics of the run's final model, with the evaluator its training used
    (``full_corpus``: against every training-corpus document instead of its seed's sample)."""
    from gcl.data.sources import load_benchmark
    from gcl.encoders.base import load_model
    from gcl.evaluation.evaluator import evaluate_task
    from gcl.evaluation.retrievers import DenseRetriever
    from gcl.training.dev_eval import DevEvaluator

    cfg = train_config(run)
    if full_corpus:
        cfg.eval.dev_corpus_size = 2**62  # DevEvaluator: judged + every other corpus document
    if cfg.seed != seed:
        raise SystemExit(f"{run}/config.json: seed {cfg.seed}, expected {seed}")
    ev = DevEvaluator(load_benchmark(cfg.data), cfg.eval, seed=cfg.seed)
    result = evaluate_task(ev.task, DenseRetriever(load_model(model_dir(run)), show_progress=False), ev.protocol)
    frame = result.per_query[list(METRICS)].copy()
    frame.index.name = "query_id"
    return frame


def recorded_dev(rec: dict) -> dict[str, float] | None:
    curve = (rec.get("dev") or {}).get("curve") or []
    return {m: curve[-1][m] for m in METRICS} if curve else None


def dev_frames(records: list[dict], models: dict[str, str], out: Path, arms: set[str], *,
               full_corpus: bool = False) -> tuple[dict, list[str]]:
    """``{(arm, seed): per-query frame}`` for every run of ``arms`` with a stored model (its
    table work directory, or ``models[arm]`` with ``{seed}``), cached in ``out/per_query_dev``
    (``out/per_query_dev_full`` with ``full_corpus``); and the reproduction check of each against
    its recorded dev figure (not with ``full_corpus``: training scored its seed's sample)."""
    import pandas as pd

    cache = out / ("per_query_dev_full" if full_corpus else "per_query_dev")
    cache.mkdir(parents=True, exist_ok=True)
    frames, checks = {}, []
    for rec in records:
        arm, seed = rec["arm"], rec["seed"]
        if arm not in arms or recorded_dev(rec) is None:
            continue
        run = Path(models[arm].format(seed=seed)) if arm in models else Path(rec["work"]) / f"{arm}-s{seed}"
        path = cache / f"{arm}-s{seed}.csv.gz"
        if path.exists():
            frame = pd.read_csv(path, index_col="query_id", keep_default_na=False, na_values=[])
        elif ((run / "config.json").exists() or (run / "peer.json").exists()) and (model_dir(run) / "modules.json").exists():
            print(f"scoring dev per query: {run}", file=sys.stderr)
            frame = score_dev(run, seed, full_corpus=full_corpus)
            frame.to_csv(path, compression={"method": "gzip", "mtime": 0})
        else:
            continue
        frame.index = frame.index.astype(str)
        frames[(arm, seed)] = frame
        if full_corpus:
            continue
        want = recorded_dev(rec)
        got = {m: float(frame[m].mean()) for m in METRICS}
        where = "retrained: " + str(run) if arm in models else str(run)
        checks.append(f"| {arm} | {seed} | {want['ndcg@10']:.4f} / {want['err']:.4f} | {got['ndcg@10']:.4f} / "
                      f"{got['err']:.4f} | {max(abs(got[m] - want[m]) for m in METRICS):.1e} | {where} |")
    return frames, checks


# ------------------------------------------------------------------ pairs

def paired_stats(a: np.ndarray, b: np.ndarray, n_for_mde: int | None = None, *, seed: int = 0) -> dict[str, float]:
    """Mean of a - b, σ_d, MDE at ``n_for_mde`` queries (default: these), sign-flip p."""
    from gcl.evaluation.compare import randomisation_p

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    sd = float(d.std(ddof=1))
    return {"diff": float(d.mean()), "sd": sd, "n": len(d), "mde": mde(sd, n_for_mde or len(d)),
            "p": randomisation_p(d, 10_000, np.random.default_rng(seed))}


def seed_mean(frames: dict, arm: str, seeds: list[int], metric: str):
    s = [frames[(arm, k)][metric] for k in seeds]
    return sum(s) / len(s)


def pair_rows(pair: str, frames: dict, by_arm: dict) -> list[str]:
    a, b = pair.split(":")
    seeds = sorted({k for (x, k) in frames if x == a} & {k for (x, k) in frames if x == b})
    rows = []
    for metric in METRICS:
        cells = []
        if seeds:
            per_seed = []
            for k in seeds:
                fa, fb = frames[(a, k)][metric], frames[(b, k)][metric]
                st = paired_stats(fa.to_numpy(), fb.loc[fa.index].to_numpy())
                per_seed.append(st)
            ma, mb = seed_mean(frames, a, seeds, metric), seed_mean(frames, b, seeds, metric)
            st = paired_stats(ma.to_numpy(), mb.loc[ma.index].to_numpy())
            one = float(np.mean([s["sd"] for s in per_seed]))
            each = ", ".join(f"{s['diff']:+.4f}" for s in per_seed)
            cells.append(f"{st['diff']:+.4f} (p {_p(st['p'])}; per seed {each})")
            cells.append(f"{one:.3f} → {mde(one, st['n']):.4f}")
            cells.append(f"{st['sd']:.3f} → {st['mde']:.4f}")
        else:
            cells += ["no stored models", "", ""]
        test = []
        for split in ("novel_query", "zero_shot"):
            ra, rb = by_arm.get(a, []), by_arm.get(b, [])
            common = {r["seed"] for r in ra} & {r["seed"] for r in rb}
            va = rr.per_query_mean([r for r in ra if r["seed"] in common], split, metric)
            vb = rr.per_query_mean([r for r in rb if r["seed"] in common], split, metric)
            if va is None or vb is None:
                test.append("–")
                continue
            st = paired_stats(va.to_numpy(), vb.loc[va.index].to_numpy())
            test.append(f"{st['diff']:+.4f} (p {_p(st['p'])}), MDE {st['mde']:.4f}")
        rows.append(f"| `{a}` − `{b}` | {metric} | {len(seeds)} | " + " | ".join(cells + test) + " |")
    return rows


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


# ------------------------------------------------------------------ agreement

def arm_means(by_arm: dict, exclude: set[str]) -> dict[str, dict[str, float]]:
    out = {}
    for arm, runs in by_arm.items():
        if arm in exclude or not all(recorded_dev(r) for r in runs) or len(runs) < 2:
            continue
        fig = {}
        for metric in METRICS:
            fig[f"dev {metric}"] = float(np.mean([recorded_dev(r)[metric] for r in runs]))
            for split in SPLITS:
                fig[f"{split} {metric}"] = float(np.mean([r["splits"][split][metric] for r in runs]))
        out[arm] = fig
    return out


def agreement_rows(means: dict) -> list[str]:
    arms = sorted(means)
    if len(arms) < 4:
        return [f"| fewer than 4 arms ({len(arms)}): no agreement to measure | | | | | |"]
    rows = []
    for metric in METRICS:
        for split in SPLITS:
            for left in ("dev", "novel_query"):
                if left == split:
                    continue
                x = [means[a][f"{left} {metric}"] for a in arms]
                y = [means[a][f"{split} {metric}"] for a in arms]
                ag = rank_agreement(x, y)
                rows.append(f"| {left} | {split} | {metric} | {ag['rho']:+.2f} | {ag['tau']:+.2f} | {_p(ag['p'])} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, required=True, help="a results_table.py output directory (runs.jsonl, per_query/)")
    ap.add_argument("--out", type=Path, required=True, help="directory for the report and the per-query dev files")
    ap.add_argument("--model", action="append", default=[], metavar="ARM=DIR",
                    help="where ARM's stored runs are, DIR with {seed} (default: the record's work directory)")
    ap.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help="A:B pairs (A − B), comma-separated")
    ap.add_argument("--exclude", default="st-cosent", help="arms left out of the agreement (comma-separated)")
    ap.add_argument("--full-corpus-pairs", default="", metavar="A:B,...",
                    help="also score these pairs' dev queries against the whole training corpus (not the "
                         "sample training scored), to tell the sample's part from the queries'")
    args = ap.parse_args(argv)

    by_arm = rr.by_arm(rr.read_runs(args.table / "runs.jsonl"))  # per_query resolved against the table
    records = [r for runs in by_arm.values() for r in runs]
    models = {}
    for m in args.model:
        arm, sep, pattern = m.partition("=")
        if not sep or "{seed}" not in pattern:
            ap.error(f"--model {m!r}: expected ARM=DIR with {{seed}} in DIR")
        models[arm] = pattern
    pairs = [p for p in args.pairs.split(",") if p]
    full_pairs = [p for p in args.full_corpus_pairs.split(",") if p]
    for p in pairs + full_pairs:
        if p.count(":") != 1:
            ap.error(f"--pairs / --full-corpus-pairs: {p!r} is not A:B")
    wanted = {x for p in pairs for x in p.split(":")}
    frames, checks = dev_frames(records, models, args.out, wanted)
    exclude = {x for x in args.exclude.split(",") if x}
    means = arm_means(by_arm, exclude)
    n_dev = len(next(iter(frames.values()))) if frames else 0

    lines = [
        "# How small a difference the dev split can see (generated)",
        "",
        f"`python experiments/dev_resolution.py --table {args.table} --out {args.out}"
        + "".join(f" --model {m}" for m in args.model)
        + (f" --full-corpus-pairs {args.full_corpus_pairs}" if full_pairs else "") + "`; method: the script's docstring.",
        "",
        f"## Resolution: paired differences, σ_d and the MDE (α 0.05, power 0.8; dev {n_dev} queries, test 2,000)",
        "",
        "dev: the stored final models re-scored per query (seed by seed, each seed's own dev corpus); "
        "'σ_d → MDE, one seed' is the mean over seeds of the per-query σ_d of one seed's difference; "
        "'seed-mean' is the σ_d of each query's difference averaged over the seeds first (what a rule on "
        "3-seed means sees). p: sign-flip test over queries of the seed-averaged difference. "
        "Test columns: the same from the table's per-query files.",
        "",
        "| pair | metric | seeds | dev difference | dev σ_d → MDE, one seed | dev σ_d → MDE, seed-mean | "
        "novel query (test) | zero-shot (test) |",
        "|---|---|---:|---|---|---|---|---|",
    ]
    for p in pairs:
        lines += pair_rows(p, frames, by_arm)
    if full_pairs:
        full, _ = dev_frames(records, models, args.out, {x for p in full_pairs for x in p.split(":")}, full_corpus=True)
        n_docs = records[0].get("data", {}).get("sizes", {}).get("dev", {}).get("corpus_docs")
        n_docs = f"{n_docs:,}" if isinstance(n_docs, int) else "every"
        lines += ["", f"### The same dev queries against the whole training corpus ({n_docs} documents, as the "
                  "novel-query split ranks its queries' documents; training scored a sample of 10,000)", "",
                  "| pair | metric | seeds | dev difference | dev σ_d → MDE, one seed | dev σ_d → MDE, seed-mean | "
                  "novel query (test) | zero-shot (test) |", "|---|---|---:|---|---|---|---|---|"]
        for p in full_pairs:
            lines += pair_rows(p, full, by_arm)
    lines += ["", "Each re-scored model reproduces the dev figure its run recorded:", "",
              "| arm | seed | recorded dev nDCG@10 / ERR | re-scored | max abs diff | model |", "|---|---:|---|---|---|---|",
              *checks, "",
              f"## Agreement over arms: dev (and novel query) against each test split ({len(means)} arms, "
              f"seed means; left out: {', '.join(sorted(exclude)) or 'none'})", "",
              "Arms: " + ", ".join(f"`{a}`" for a in sorted(means)) + ".", "",
              "| ranked by | against | metric | Spearman ρ | Kendall τ | permutation p |", "|---|---|---|---:|---:|---:|",
              *agreement_rows(means), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
