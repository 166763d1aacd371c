"""The report of ``experiments/results_table.py``: ``runs.jsonl`` -> ``results.md`` + ``results.png``.

Only aggregates; trains and evaluates nothing. Per split and metric: mean ± sample standard
deviation (ddof 1) over seeds; the ordering ceilings (BM25's record carries them); paired
differences of every seeded arm against the binary baseline with the better dev metric recorded
during training (never a test split), per seed ``d_s = arm_s - binary_s`` (mean ± std, seeds
ahead), and a paired test over queries: each query's metric is first averaged over the seeds
(of each arm), then ``gcl.evaluation.compare.paired_compare`` (sign-flip randomisation test, bootstrap
95 % CI) compares the two per-query vectors. The issue-12 targets are printed as met / missed.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")
METRICS = ("ndcg@10", "err", "rbp@0.9", "map@1000", "mrr@1000")
PAIRED = ("ndcg@10", "err")
BINARY_ARMS = ("binary", "binary-thresholded", "binary-thresholded-random", "binary-thresholded-random-batch4x")
FIXED = ("bm25", "zero-shot")
ST_PEERS = ("st-mnrl-all", "st-mnrl-thresholded", "st-cached-mnrl", "st-cosent", "st-mnrl-thresholded-batch4x",
            "st-mnrl-all-batch4x", "st-cached-mnrl-batch4x")
GCL_ARMS = ("gcl", "gcl-random", "gcl-best", "gcl-soup", "gcl-batch4x", "gcl-reciprocal", "gcl-best-thresholded",
            "gcl-best-one-way")
ORDER = ("bm25", "zero-shot", *BINARY_ARMS, *GCL_ARMS, *ST_PEERS)
# the binary arm trained with the same sampler as these gcl arms (query groups of the base config):
# with the sampler held fixed, what the graded loss alone changes (when that arm is not the baseline)
SAME_SAMPLER = {"binary-thresholded": ("gcl", "gcl-reciprocal")}
# weight soups of trained arms: no training curve of their own, so the dev rule cannot weigh them;
# they are set against the peers beside the configuration the rule picks
SOUPS = ("gcl-soup",)
# ablations: (arm, the arm it changes in one respect, what that is); each changed arm gets one paired
# section, its ablations as rows
ABLATIONS: tuple[tuple[str, str, str], ...] = (
    ("gcl-best-thresholded", "gcl-best", "the pairs graded below 2 dropped, the kept pairs weighted as `gcl-best` "
     "weights them: what training the pairs raters called irrelevant as weak positives does"),
    ("gcl-best-one-way", "gcl-best", "the d->q term dropped (each query picks its document among the batch's; "
     "no document picks its query): what the symmetric loss does"),
    ("gcl-best-one-way", "st-mnrl-all", "the same pairs (every judged pair), random batches of 64 and a one-way "
     "in-batch softmax at T 0.05 in both; `gcl-best-one-way` weights each pair by its grade (linear, 0.1-1) and "
     "keeps a same-query document of lower grade as a negative, MNRL weights every pair 1 and is trained by "
     "sentence-transformers' own trainer: what the graded weights do against the library's recipe"),
)


def read_runs(path: Path) -> list[dict]:
    """The records of ``runs.jsonl``; a record's ``per_query`` archive (written relative to the
    table's directory) is resolved against it, so the report can run from any directory."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill
    for r in rows:
        if isinstance(r.get("per_query"), str) and not Path(r["per_query"]).is_absolute():
            r["per_query"] = str(path.parent / r["per_query"])
    return rows


def by_arm(rows: list[dict]) -> dict[str, list[dict]]:
    """``{arm: records sorted by seed}`` (the last record wins for a repeated (arm, seed))."""
    keyed = {(r["arm"], int(r["seed"])): r for r in rows}
    out: dict[str, list[dict]] = {}
    for (arm, _), r in sorted(keyed.items(), key=lambda kv: kv[0][1]):
        out.setdefault(arm, []).append(r)
    return {a: out[a] for a in sorted(out, key=lambda a: ORDER.index(a) if a in ORDER else len(ORDER))}


def values(runs: list[dict], section: str, split: str, metric: str) -> np.ndarray:
    return np.array([r[section][split][metric] for r in runs if r.get(section) and split in r[section]
                     and metric in r[section][split]], dtype=np.float64)


def mean_std(v: np.ndarray) -> str:
    """``mean ± std`` (sample std, ddof 1) over seeds; the value alone for one run; ``—`` for none
    (a NaN is no value: the metric of an empty group, e.g. no unseen query when every query was seen)."""
    v = np.asarray(v, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return "—"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def metric_table(arms: dict, section: str, metric: str, ceilings: dict | None) -> list[str]:
    lines = ["| arm | n | " + " | ".join(SPLITS) + " |", "|---|---|" + "---|" * len(SPLITS)]
    for arm, runs in arms.items():
        cells = [mean_std(values(runs, section, s, metric)) for s in SPLITS]
        if any(c != "—" for c in cells):
            lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    if ceilings:
        for label, key in (("ceiling: ideal order", "ideal"), ("ceiling: random order", "random"),
                           ("headroom (ideal − random)", "headroom")):
            cells = [f"{ceilings[s][key][metric]:.4f}" if s in ceilings else "—" for s in SPLITS]
            lines.append(f"| *{label}* | | " + " | ".join(cells) + " |")
    return lines + [""]


def dev_means(arms: dict, candidates: tuple[str, ...],
              seeds: set[int] | None = None) -> dict[str, tuple[float, str, int]]:
    """``{arm: (mean best dev metric over its seeds, metric name, runs)}`` for the candidates run
    with one; only the runs of ``seeds`` when given."""
    dev = {}
    for a in candidates:
        recs = [r["dev"] for r in arms.get(a, []) if r.get("dev") and (seeds is None or r.get("seed") in seeds)]
        if recs:
            dev[a] = (float(np.mean([d["value"] for d in recs])), recs[0]["metric"], len(recs))
    return dev


def common_dev_seeds(arms: dict, candidates: tuple[str, ...]) -> set[int] | None:
    """The seeds every run candidate has a dev figure for, or None when that is all of each one's
    seeds already, or when they share none. The dev corpus is drawn per seed (``DevEvaluator``
    seeded by the run's seed), so arms are compared on the same seeds when they can be."""
    per_arm = [{r.get("seed") for r in arms[a] if r.get("dev")} for a in candidates if a in arms]
    per_arm = [s for s in per_arm if s]
    if not per_arm:
        return None
    common = set.intersection(*per_arm)
    return common if common and any(s != common for s in per_arm) else None


def choose_by_dev(arms: dict, candidates: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The candidate with the best mean dev metric recorded during training, when every candidate
    that was run has one; ``(arm, why)``, or ``(None, None)`` when the rule cannot decide. Arms run
    with different seeds are compared on the seeds they share (:func:`common_dev_seeds`)."""
    present = [a for a in candidates if a in arms]
    if len(present) < 2 or not all(any(r.get("dev") for r in arms[a]) for a in present):
        return None, None
    seeds = common_dev_seeds(arms, candidates)
    dev = dev_means(arms, candidates, seeds)
    best = max(dev, key=lambda a: dev[a][0])
    detail = ", ".join(f"{a} {v:.4f} (n = {n})" for a, (v, _, n) in dev.items())
    over = "" if seeds is None else f" over the seeds every candidate has ({', '.join(map(str, sorted(seeds)))})"
    return best, (f"**{best}**: the best mean best-dev {dev[best][1]} recorded during training{over} ({detail}); "
                  "chosen on the dev split, never on a test split")


def choose_binary(arms: dict) -> tuple[str | None, str]:
    """The stronger binary baseline by the dev metric recorded during training; ``(arm, why)``."""
    best, why = choose_by_dev(arms, BINARY_ARMS)
    if best is not None:
        return best, why
    present = [a for a in BINARY_ARMS if a in arms]
    if present:
        best = next((a for a in present if "thresholded" in a), present[0])  # binary-thresholded first
        return best, (f"**{best}**: " + ("the only binary arm run" if len(present) == 1 else
                      "no dev metric recorded for every binary arm, so the fair (thresholded) one by rule"))
    return None, "no binary arm was run"


def choose_gcl(arms: dict) -> tuple[str | None, str]:
    """The best gcl configuration (for the peer target) by the same dev rule, among the trained gcl
    arms (a soup has no training curve); without dev figures for every one of them, ``gcl-best``
    (the dev-only loss search's choice), else ``gcl``."""
    best, why = choose_by_dev(arms, tuple(a for a in GCL_ARMS if a not in SOUPS))
    if best is not None:
        return best, why
    present = [a for a in ("gcl-best", *(g for g in GCL_ARMS if g != "gcl-best")) if a in arms]
    if not present:
        return None, "no gcl arm was run"
    return present[0], f"**{present[0]}**: " + ("the only gcl arm run" if len(present) == 1 else
                                                 "no dev metric recorded for every gcl arm, so by rule")


def seed_diffs(runs: list[dict], base: list[dict], split: str, metric: str, section: str = "splits") -> np.ndarray:
    b = {r["seed"]: r for r in base}
    return np.array([r[section][split][metric] - b[r["seed"]][section][split][metric] for r in runs
                     if r["seed"] in b and split in r.get(section, {}) and split in b[r["seed"]].get(section, {})])


def paired_relative(runs: list[dict], base: list[dict], split: str, metric: str) -> float:
    """100 (mean(arm) / mean(baseline) − 1) over the seeds both have: an arm run with one seed is
    compared with the baseline's run of that seed, not with the baseline's mean over more seeds."""
    seeds = {r["seed"] for r in runs} & {r["seed"] for r in base}
    a = values([r for r in runs if r["seed"] in seeds], "splits", split, metric)
    b = values([r for r in base if r["seed"] in seeds], "splits", split, metric)
    return 100 * (a.mean() / b.mean() - 1)


def archive_per_query(eval_dir: Path, dest: Path) -> None:
    """Keep the per-query figures the paired tests read (``PAIRED`` metrics of every split of the
    ``gcl evaluate`` output ``eval_dir``) in one gzip CSV ``dest`` with columns ``split, query_id,
    <metric>...``, beside ``runs.jsonl``: the work directory with the evaluation outputs is not
    kept between sessions, and without these files the report has no test over queries. Values are
    written at full precision (a round trip is exact); gzip without a timestamp, so equal inputs
    give equal bytes."""
    import pandas as pd

    from gcl.evaluation.compare import QUERY_COLUMN, read_per_query

    frames = []
    for split, frame in read_per_query(eval_dir).items():
        cols = [m for m in PAIRED if m in frame.columns]
        frames.append(frame[cols].reset_index().assign(split=split)[["split", QUERY_COLUMN, *cols]])
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    text = pd.concat(frames, ignore_index=True).to_csv(index=False)
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.encode())  # no name, no timestamp in the header
    tmp.replace(dest)


def _archived(path: str) -> dict | None:
    """``{split: frame indexed by query id}`` of an archive, or None (with a warning) if it cannot be
    read; cached per file version (path, modification time, size)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _read_archive(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _read_archive(path: str, _mtime_ns: int, _size: int) -> dict | None:
    import pandas as pd

    from gcl.evaluation.compare import QUERY_COLUMN

    try:
        frame = pd.read_csv(path, dtype={"split": str, QUERY_COLUMN: str}, keep_default_na=False,
                            na_values={m: [""] for m in PAIRED})
        return {split: g.drop(columns="split").set_index(QUERY_COLUMN).astype(float)
                for split, g in frame.groupby("split")}
    except (OSError, EOFError, ValueError, KeyError) as exc:  # a cut or corrupt file: no test, not a crash
        print(f"warning: {path}: unreadable per-query archive ({exc}); its run has no test over queries",
              file=sys.stderr)
        return None


def per_query_mean(runs: list[dict], split: str, metric: str):
    """Each query's ``metric`` averaged over the runs' seeds (a pandas Series), or None if missing.
    A run's figures come from its archive in the table's directory (``per_query``:
    :func:`archive_per_query`, written with the record, so a later run in the same work directory
    cannot change them) or, without one, from its evaluation directory (``eval_dir``)."""
    from gcl.evaluation.compare import read_per_query

    frames = []
    for r in runs:
        d = Path(r.get("eval_dir", ""))
        kept = _archived(r["per_query"]) if r.get("per_query") else None
        if kept is not None and split in kept and metric in kept[split].columns:
            frames.append(kept[split][metric])
        elif (d / f"{split}_per_query.csv").exists():
            frames.append(read_per_query(d)[split][metric])
        else:
            return None
    if not frames:
        return None
    return sum(frames) / len(frames)


def significance(runs: list[dict], base: list[dict], split: str, metric: str, settings=None):
    """Paired test over queries of the seed-averaged metrics (arm - baseline), or None
    (``settings``: the draws of :func:`gcl.evaluation.compare.paired_compare`, its default if None)."""
    from gcl.evaluation.compare import paired_compare

    seeds = {r["seed"] for r in base}
    a = per_query_mean([r for r in runs if r["seed"] in seeds], split, metric)
    b = per_query_mean([r for r in base if r["seed"] in {x["seed"] for x in runs}], split, metric)
    if a is None or b is None or set(a.index) != set(b.index):
        return None
    return paired_compare(b.to_numpy(), a.loc[b.index].to_numpy(), split=split, metric=metric, settings=settings)


def paired_section(arms: dict, baseline: str, only: tuple[str, ...] | None = None, why: str = "") -> list[str]:
    """``arm − baseline`` for every trained arm (``only``: those of them), one table per metric."""
    base = arms[baseline]
    lines = [f"## Paired difference vs {baseline} (same seed)", "",
             *([why, ""] if why else []),
             "Cell: mean ± std over seeds of `arm − baseline` (same seed: same batches and initialisation), the "
             "relative difference of the means, seeds where the arm is ahead, then the paired test over queries: "
             "each query's metric averaged over the seeds first, then a sign-flip randomisation test (p) and a "
             "bootstrap 95% CI of the mean difference (`gcl.evaluation.compare`). One seed against another, any "
             "metric: `gcl evaluate --compare WORK/<baseline>-s0/eval WORK/<arm>-s0/eval`.", ""]
    for metric in PAIRED:
        lines += [f"### {metric}", "", "| arm | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
        for arm, runs in arms.items():
            if arm == baseline or arm in FIXED or (only is not None and arm not in only):
                continue
            lines.append(f"| {arm} | " + " | ".join(paired_cell(runs, base, s, metric) for s in SPLITS) + " |")
        lines.append("")
    return lines


def paired_cell(runs: list[dict], base: list[dict], split: str, metric: str) -> str:
    """``mean ± std (rel%) ahead/seeds, p = … [CI]`` of ``runs − base`` (same seeds), or a dash."""
    d = seed_diffs(runs, base, split, metric)
    if len(d) == 0:
        return "—"
    spread = f" ± {d.std(ddof=1):.4f}" if len(d) > 1 else ""
    rel = paired_relative(runs, base, split, metric)
    cell = f"{d.mean():+.4f}{spread} ({rel:+.1f}%) {int((d > 0).sum())}/{len(d)}"
    sig = significance(runs, base, split, metric)
    if sig is not None:
        cell += f", p = {sig.p_value:.3f} [{sig.ci_low:+.4f}, {sig.ci_high:+.4f}]"
    return cell


def peer_section(arms: dict, best: str) -> list[str]:
    """The best gcl configuration minus each sentence-transformers peer, with the same cells as the
    paired section: the peer target (issue 12) read with its seeds and its test over queries."""
    peers = [p for p in ST_PEERS if p in arms]
    if not peers:
        return []
    lines = [f"## {best} against each sentence-transformers peer (same seed)", "",
             f"Cell: `{best} − peer`, as in the paired section above (mean ± std over seeds, relative difference, "
             "seeds where it is ahead, sign-flip p and bootstrap 95% CI over queries when both have per-query "
             "figures).", ""]
    for metric in PAIRED:
        lines += [f"### {metric}", "", "| peer | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS)]
        for peer in peers:
            lines.append(f"| {peer} | " + " | ".join(paired_cell(arms[best], arms[peer], s, metric)
                                                    for s in SPLITS) + " |")
        lines.append("")
    return lines


def peer_candidates(arms: dict, best: str) -> list[str]:
    """The gcl arms set against the peers: the dev rule's choice, then each soup that was run."""
    return [best, *(a for a in SOUPS if a in arms and a != best)]


def soup_why(soup: str, best: str) -> str:
    return (f"**{soup}**, a weight soup of trained arms: no training curve for the dev rule, so it is set against "
            f"the peers beside {best}")


def seed_mean_difference(runs: list[dict], other: list[dict], split: str, metric: str) -> float:
    """mean(runs) − mean(other) over the seeds both have (a peer run with one seed is compared with
    that seed of the gcl arm, as in the paired cells); over all their seeds when they share none."""
    d = seed_diffs(runs, other, split, metric)
    if len(d):
        return float(d.mean())
    return float(values(runs, "splits", split, metric).mean() - values(other, "splits", split, metric).mean())


def peer_target(arms: dict, best: str, peers: list[str], why: str) -> str:
    """The target line 'best ≥ every peer on every split' (nDCG@10 and ERR seed means) for one gcl arm:
    judged against the peers trained at its batch (the others are named, not judged); each cell
    where it is behind carries the sign-flip p over queries when both have per-query figures."""
    like = [p for p in peers if train_batch(arms[p]) == train_batch(arms[best])]
    unlike = [p for p in peers if p not in like]
    judged = like or peers
    behind = [(p, s, m) for p in judged for s in SPLITS for m in PAIRED if seed_mean_difference(arms[best], arms[p], s, m) < 0]
    tested = {c: significance(arms[best], arms[c[0]], c[1], c[2]) for c in behind}
    losses = [" ".join(c) + ("" if t is None else f" (p {t.p_value:.3f})") for c, t in tested.items()]
    if any(t is not None for t in tested.values()):
        sig = sum(1 for t in tested.values() if t is not None and t.difference < 0 and t.p_value < 0.05)
        losses.append(f"{sig} of {sum(t is not None for t in tested.values())} tested behind at p < 0.05")
    batch = train_batch(arms[best]) or "of the base config"
    if not like:
        outcome = (f"**not like for like** ({best} trained at batch {batch}, {', '.join(unlike)} at "
                   f"{train_batch(arms[unlike[0]]) or 'the base config’s'}: a win does not count)")
    else:
        outcome = ("**met**" if not losses else "**missed**") + (
            f" (peers at another batch than {best}'s, not judged: {', '.join(unlike)})" if unlike else "")
    return (f"- {best} ≥ every sentence-transformers peer ({', '.join(judged)}) on every split (nDCG@10 and "
            f"ERR means): " + (f"behind on {len(behind)}: {'; '.join(losses)}" if losses else "ahead everywhere")
            + f" → {outcome}; the best gcl configuration: {why}")


def group_table(arms: dict, key: str) -> list[str]:
    groups = ("seen", "unseen", "dev")
    rows = []
    for arm, runs in arms.items():
        su = [r[key] for r in runs if r.get(key)]
        if not su:
            continue
        cells = []
        for g in groups:
            for m in PAIRED:
                cells.append(mean_std(np.array([x["groups"][g]["summary"][m] for x in su if g in x["groups"]])))
        n = "/".join(str(su[0]["groups"][g]["queries"]) if g in su[0]["groups"] else "0" for g in groups)
        rows.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    head = " | ".join(f"{g} {m}" for g in groups for m in PAIRED)
    return ["| arm | queries (seen/unseen/dev) | " + head + " |", "|---|---|" + "---|" * 6, *rows, ""]


def capture(value: float, ceiling: dict, metric: str) -> float:
    """Share of the ordering headroom a judged re-rank captures: (model − random) / (ideal − random)."""
    head = ceiling["headroom"][metric]
    return (value - ceiling["random"][metric]) / head if head else math.nan


def _train_tokens(rec: dict) -> list[str]:
    """The words of a run's training command (the first of its ``commands``)."""
    return ((rec.get("commands") or [""])[0] or "").split()


def _override(tokens: list[str], key: str) -> str | None:
    """The last ``key=value`` of a command (the one ``gcl train`` applies), or ``None``."""
    given = [t.split("=", 1)[1] for t in tokens if t.startswith(f"{key}=")]
    return given[-1] if given else None


def train_batch(runs: list[dict]) -> str | None:
    """The ``batch.batch_size=`` its training command set (the last one wins, as in ``gcl train``);
    ``None``: the base config's batch (no such override, or no command recorded)."""
    return _override(_train_tokens(runs[0]), "batch.batch_size") if runs else None


@functools.lru_cache(maxsize=None)
def _config_file(path: str) -> dict | None:
    try:
        import yaml

        return yaml.safe_load(Path(path).read_text())
    except (OSError, ImportError, ValueError):
        return None


def train_setting(rec: dict, key: str) -> int | None:
    """An integer setting of a run's training: the last ``key=`` of its command (as ``gcl train``
    reads overrides), else the value in the command's config file (``gcl train CONFIG`` /
    ``--config CONFIG``; each file read once), else ``None``."""
    tokens = _train_tokens(rec)
    given = _override(tokens, key)
    if given is not None:
        return int(float(given))
    config = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("train", "--config")), None)
    if config is None:
        return None
    path = Path(config) if Path(config).is_absolute() else Path(__file__).resolve().parent.parent / config
    node = _config_file(str(path))
    try:
        for part in key.split("."):
            node = node[part]
        return int(node)
    except (KeyError, TypeError, ValueError):
        return None


def evals_after(picked: int, steps: int, every: int) -> int:
    """Dev evaluations after step ``picked`` in a budget of ``steps`` evaluated every ``every``
    steps and at the last step (as ``gcl train`` and the ST peers evaluate)."""
    at = set(range(every, steps + 1, every)) | {steps}
    return sum(t > picked for t in at)


def is_soup(rec: dict) -> bool:
    """A record of a soup arm (``gcl soup`` of other arms' models; results_table.py kind soup)."""
    return str((rec.get("commands") or [""])[0]).startswith("gcl soup ")


def convergence(arms: dict) -> list[str]:
    """Per trained arm: the dev-picked step of each seed against the budget. Early stopping (the
    issue's rule for "converged") ends a run after ``eval.patience`` evaluations without
    improvement; a run whose pick is followed by fewer evaluations than that within the budget
    was still in the running when the budget ended: not converged."""
    lines = ["## Convergence: the dev-picked step against the budget", "",
             "Early stopping on dev decides \"converged\": a run is converged when at least `eval.patience` dev "
             "evaluations followed its best one within the budget. Fewer: dev had not stopped improving for "
             "long enough when the budget ended, and a longer budget might pick a later step.", "",
             "| arm | runs | budget (steps) | dev-picked step per seed | converged |", "|---|---|---|---|---|"]
    for a, runs in arms.items():
        if a in FIXED:
            continue
        if all(is_soup(r) for r in runs):
            lines.append(f"| {a} | {len(runs)} | — | — | — (a weight soup of trained arms: no training of its own) |")
            continue
        ok, picks, budgets, stopping = 0, [], set(), False
        for r in runs:
            p = (r.get("dev") or {}).get("step")
            n, e = train_setting(r, "optim.steps"), train_setting(r, "eval.every")
            patience = train_setting(r, "eval.patience")
            budgets.add(str(n))
            stopping = stopping or patience != 0
            picks.append(f"s{r['seed']}: {p if p is not None else '?'}")
            if None not in (p, n, e, patience) and e > 0 and evals_after(p, n, e) >= max(patience, 1):
                ok += 1
        verdict = f"{ok}/{len(runs)}" if stopping else "— (no early stopping: the whole budget, final model)"
        lines.append(f"| {a} | {len(runs)} | {'/'.join(sorted(budgets))} | {', '.join(picks)} | {verdict} |")
    return lines + [""]


def dev_curve(rec: dict) -> dict[int, dict]:
    """A run's dev evaluations by step (``dev.curve`` of its record; empty for older records)."""
    return {int(p["step"]): p for p in ((rec.get("dev") or {}).get("curve") or []) if "step" in p}


def step_differences(runs: list[dict], base: dict[int, dict[int, dict]]) -> dict[int, list[dict]]:
    """``{step: [arm - baseline per metric, one dict per seed]}`` at the steps where a run and the
    baseline's run of its seed (``base``: seed -> :func:`dev_curve`) both evaluated dev."""
    points: dict[int, list[dict]] = {}
    for r in runs:
        mine, theirs = dev_curve(r), base.get(r["seed"], {})
        for step in sorted(set(mine) & set(theirs)):
            points.setdefault(step, []).append(
                {m: mine[step][m] - theirs[step][m] for m in PAIRED if m in mine[step] and m in theirs[step]})
    return points


def equal_steps(arms: dict) -> list[str]:
    """Each trained arm minus the stronger binary baseline *of its batch size* (chosen by dev as
    ``choose_binary`` does) *on dev at the same training step* (same seed), at every step where both
    evaluated dev: whether an arm's lead depends on the step each run's early stopping picked.
    Cell: mean over seeds of the difference (seeds ahead / seeds with that step)."""
    lines: list[str] = []
    batches: dict[str | None, dict] = {}
    for a, runs in arms.items():
        if a not in FIXED:
            batches.setdefault(train_batch(runs), {})[a] = runs
    for batch, group in batches.items():
        baseline, _ = choose_binary(group)
        if baseline is None or not any(dev_curve(r) for r in group[baseline]):
            continue
        base = {r["seed"]: dev_curve(r) for r in group[baseline]}
        rows = {a: step_differences(runs, base) for a, runs in group.items() if a != baseline}
        rows = {a: points for a, points in rows.items() if points}
        if not rows:
            continue
        steps = sorted({s for points in rows.values() for s in points})
        lines += [f"## Dev at equal steps, batch {batch or 'of the base config'}: each arm minus {baseline} (same seed)", "",
                  f"{baseline} is the binary arm of this batch size with the better mean best-dev metric. The dev split "
                  "(training-pool queries withheld from training) at every step where both runs evaluated it, so a "
                  "lead does not depend on the step early stopping picked. Cell: mean over seeds of the difference "
                  "(seeds ahead / seeds with both runs evaluated at that step); the last column counts every "
                  "(seed, step) point.", ""]
        for metric in PAIRED:
            lines += [f"### dev {metric}", "",
                      "| arm | " + " | ".join(f"step {s}" for s in steps) + " | ahead, all points |",
                      "|---|" + "---|" * (len(steps) + 1)]
            for a, points in rows.items():
                cells, ahead, total = [], 0, 0
                for s in steps:
                    v = [d[metric] for d in points.get(s, []) if metric in d]
                    cells.append(f"{np.mean(v):+.4f} ({sum(x > 0 for x in v)}/{len(v)})" if v else "")
                    ahead, total = ahead + sum(x > 0 for x in v), total + len(v)
                lines.append(f"| {a} | " + " | ".join(cells) + f" | {ahead}/{total} |")
            lines.append("")
    return lines


def targets(arms: dict, baseline: str | None, ceilings: dict) -> list[str]:
    """Issue 12's targets as met / missed, with the figures."""
    lines = ["## Targets (issue 12)", ""]
    if baseline is None:
        return lines + ["No binary baseline was run: no target can be checked.", ""]
    base = arms[baseline]

    def rel(arm: str, s: str, m: str) -> float:
        return paired_relative(arms[arm], base, s, m)

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    for arm in GCL_ARMS:
        if arm not in arms:
            continue
        e, n = rel(arm, "in_domain", "err"), rel(arm, "in_domain", "ndcg@10")
        lines.append(f"- in-domain {arm} − {baseline} ≥ +15% ERR and +3% nDCG@10: ERR {e:+.1f}%, nDCG@10 {n:+.1f}% "
                     f"→ {verdict(e >= 15 and n >= 3)}")
        for s in ("novel_query", "zero_shot"):
            e, n = rel(arm, s, "err"), rel(arm, s, "ndcg@10")
            worst = min(float(seed_diffs(arms[arm], base, s, m).min(initial=math.inf)) for m in PAIRED)
            below = worst < 0
            lines.append(f"- {s} {arm} − {baseline} ≥ +3% ERR and +1% nDCG@10, not below in any seed: ERR {e:+.1f}%, "
                         f"nDCG@10 {n:+.1f}%, worst seed difference {worst:+.4f} → "
                         f"{verdict(e >= 3 and n >= 1 and not below)}")
    best, best_why = choose_gcl(arms)
    peers = [p for p in ST_PEERS if p in arms]
    if best and peers:
        for cand in peer_candidates(arms, best):
            lines.append(peer_target(arms, cand, peers, best_why if cand == best else soup_why(cand, best)))
    elif best:
        lines.append("- best gcl ≥ every sentence-transformers peer: no peer was run → not checked")
    ceil = ceilings.get("in_domain")
    for arm in GCL_ARMS:
        runs = [r for r in arms.get(arm, []) if r.get("rerank")]
        if not runs or ceil is None:
            continue
        seen = [r["rerank_seen_unseen"]["groups"]["seen"]["summary"] for r in runs if r.get("rerank_seen_unseen")]
        src, rows = ("seen training queries", seen) if seen else ("all in-domain queries", [r["rerank"]["in_domain"] for r in runs])
        caps = {m: capture(float(np.mean([x[m] for x in rows])), ceil, m) for m in PAIRED}
        lines.append(f"- judged re-rank of {src} by {arm} captures ≥ 50% of the ordering headroom "
                     "((model − random) / (ideal − random), with the ceilings of all in-domain test queries; a "
                     "subset's own ceilings are not computed): "
                     + ", ".join(f"{m} {100 * c:.0f}%" for m, c in caps.items())
                     + f" → {verdict(all(c >= 0.5 for c in caps.values()))}")
    return lines + [""]


def report(out_dir: Path, out=None) -> Path:
    """Write ``results.md`` and ``results.png`` in ``out_dir`` from its ``runs.jsonl``; print the markdown."""
    out_dir = Path(out_dir)
    stream = out or sys.stdout
    log = out_dir / "runs.jsonl"
    if not log.exists():
        print(f"no {log}: nothing to report", file=stream)
        return out_dir
    rows = read_runs(log)
    if not rows:
        print(f"{log} holds no finished run: nothing to report", file=stream)
        return out_dir
    arms = by_arm(rows)
    ceilings = next((r["ceilings"] for r in rows if r.get("ceilings")), {})
    t_ceilings = next((r["thresholded_ceilings"] for r in rows if r.get("thresholded_ceilings")), {})
    rerank_ceilings = ceilings  # the judged documents in ideal / random order: the same for both modes
    baseline, why = choose_binary(arms)
    profiles = sorted({r.get("profile", "?") for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows if r["arm"] not in FIXED})
    lines = [
        "# The main table of issue 12: graded vs binary vs sentence-transformers peers",
        "",
        f"Generated by `python experiments/results_table.py --out {out_dir} --work {rows[0].get('work', '?')}` "
        f"runs (profile {'/'.join(profiles)}; each run's own command, with its overrides, is in `runs.jsonl`; "
        f"report only: `--report`); base config `{rows[0].get('base_config', '?')}`; data "
        f"{next((json.dumps(r['data']) for r in rows if r.get('data')), '?')}; seeds {seeds}; "
        "reference protocol of `gcl evaluate` (2,000 weighted-sampled test queries per split, grades 1..100, "
        "top-1,000 cosine over the split's corpus). Cells: mean ± std (ddof 1) over the seeds, n = runs; "
        "a cell without ± is one run. Every run's command, seconds and versions are in `runs.jsonl`.",
        "",
        f"Binary baseline for the differences and the targets: {why}.",
        "",
    ]
    for metric in METRICS:
        lines += [f"## {metric}", ""] + metric_table(arms, "splits", metric, ceilings)
    if any(r.get("thresholded") for r in rows):
        lines += ["## Zero-irrelevant gains (`gcl evaluate --relevance-threshold 2`: grade 1 has gain 0 and is "
                  "not relevant)", ""]
        for metric in METRICS:
            lines += [f"### {metric}", ""] + metric_table(arms, "thresholded", metric, t_ceilings)
    if baseline:
        lines += paired_section(arms, baseline)
    for twin, grouped in SAME_SAMPLER.items():
        present = tuple(a for a in grouped if a in arms)
        if twin in arms and twin != baseline and present:
            lines += paired_section(arms, twin, only=present, why=(
                f"The gcl arms trained with the same sampler as `{twin}` (the base config's query groups) against "
                "it: the graded loss with the sampler held fixed. Not the same batches: the thresholded arm trains "
                "only on the pairs graded at or above its threshold."))
    variants = tuple(a for a in GCL_ARMS if a != "gcl" and a in arms)
    if "gcl" in arms and variants:  # each new configuration against the paper's GCL, its reference
        lines += paired_section(arms, "gcl", only=variants, why=(
            "Each other gcl configuration against the paper's GCL (`gcl`, linear weights, query-grouped batches): "
            "what the change of loss, sampler or weights bought on the test splits, seed for seed."))
    for base in dict.fromkeys(b for _, b, _ in ABLATIONS):  # one section per arm changed, its ablations as rows
        present = [(a, what) for a, b, what in ABLATIONS if b == base and a in arms]
        if base in arms and present:
            lines += paired_section(arms, base, only=tuple(a for a, _ in present), why=" ".join(
                f"`{a}` against `{base}`, seed for seed: {what}." for a, what in present))
    best, _ = choose_gcl(arms)
    if best:
        for cand in peer_candidates(arms, best):
            lines += peer_section(arms, cand)
    if any(r.get("rerank") for r in rows):
        lines += ["## Judged re-rank (each test query's judged documents only: ordering without retrieval)", ""]
        for metric in PAIRED:
            lines += [f"### {metric}", ""] + metric_table(arms, "rerank", metric, rerank_ceilings)
    for key, title in (("seen_unseen", "retrieval"), ("rerank_seen_unseen", "judged re-rank")):
        table = group_table(arms, key)
        if table:
            lines += [f"## In-domain queries seen / unseen in training / dev, {title} (`--seen-unseen`)", "",
                      "seen: at least one of the query's pairs was in a training batch of the run (replayed sampler); "
                      "dev: withheld for early stopping. Mean ± std over seeds. After a few epochs nearly every training "
                      "query is seen; the query-grouped sampler draws groups only from queries with two or more training "
                      "pairs, so its few unseen queries are mostly single-document ones, whose judged re-rank is 1 in any "
                      "order, and for a thresholded arm also queries with no pair at the threshold, which it never "
                      "trains on: the unseen column then measures no ordering.", ""] + table
    lines += convergence(arms)
    lines += equal_steps(arms)
    lines += targets(arms, baseline, ceilings)
    lines += ["## Time", "", "Minutes per run, mean over the runs (`seconds`, `train_seconds`, `eval_seconds` of "
              "runs.jsonl; a resumed training counts its last part only).", "",
              "| arm | runs | train + evaluate | train | evaluate |", "|---|---|---|---|---|"]
    for a, runs in arms.items():
        m = [np.mean([r.get(k, math.nan) for r in runs]) / 60 for k in ("seconds", "train_seconds", "eval_seconds")]
        lines.append(f"| {a} | {len(runs)} | " + " | ".join(f"{x:.1f}" for x in m) + " |")
    lines.append("")
    text = "\n".join(lines) + "\n"
    (out_dir / "results.md").write_text(text)
    plot(arms, out_dir / "results.png")
    print(text, file=stream)
    return out_dir


def plot(arms: dict, path: Path) -> None:
    """Bars of nDCG@10 and ERR per split and arm, error bars = std over seeds."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is a dev extra
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    names = list(arms)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(SPLITS))
    # the default cycle has 10 colours; past that tab20 then tab20b, 40 distinct ones
    palette = (*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors)
    for ax, metric in zip(axes, PAIRED):
        for i, arm in enumerate(names):
            color = palette[i % len(palette)] if len(names) > 10 else None
            v = np.array([[r["splits"].get(s, {}).get(metric, np.nan) for s in SPLITS] for r in arms[arm]])
            err = v.std(0, ddof=1) if len(v) > 1 else np.zeros(len(SPLITS))
            ax.bar(x + i * width, v.mean(0), width, yerr=err, capsize=2, label=arm, color=color)
        ax.set_xticks(x + 0.4 - width / 2, SPLITS)
        ax.set_title(f"{metric}, mean ± std over seeds")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
