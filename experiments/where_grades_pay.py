"""Where does a difference between two models come from: queries with ordering to learn, or not?

A test query whose judged documents all carry one grade has nothing to order: any order of them
is ideal, and a model can only gain there by *retrieving* them (recall into the top 10). A query
with two or more grades also rewards putting the better documents first. This script splits each
split's reference test queries (``gcl evaluate``'s: 2,000 weighted-sampled queries, ground truth
with grades 1..100, top 1,000 judged documents a query) by the number of distinct grades among
those judged documents (the grades the metrics score; ``experiments/gain_by_grades.py`` counts
distinct raw scores over all judgments instead, so its group sizes can differ) and compares
two models on each group, query by query:

* ``one grade`` / ``2+ grades``: n queries, mean of A and of B, ``B - A``, the paired sign-flip
  p-value and the bootstrap 95 % interval (:func:`gcl.evaluation.compare.paired_compare`, the test
  of ``gcl evaluate --compare``).

A graded loss that learns ordering should gain on ``2+ grades`` and not lose on ``one grade``;
a gain on ``one grade`` queries is a retrieval gain, whatever the loss meant to teach.

Each side is one or more runs (seeds), averaged per query first: an output directory of
``gcl evaluate`` (``<split>_per_query.csv``) or a per-query archive of the results table
(``docs/results/table/per_query/<run>.csv.gz``).

    python experiments/where_grades_pay.py --a runs/fullft/binary-thresholded-s1/eval \\
        --b runs/fullft/gcl-s1/eval --data homedepot --split-seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "experiments") not in sys.path:
    sys.path.insert(0, str(ROOT / "experiments"))

METRICS = ("ndcg@10", "err")
GROUPS = ("one grade", "2+ grades")


def read_side(paths: list[str]) -> dict[str, pd.DataFrame]:
    """``{split: frame of per-query metrics}`` averaged over ``paths`` (runs of one arm, same queries)."""
    from gcl.errors import DataError
    from gcl.evaluation.compare import read_per_query

    runs = []
    for p in paths:
        if Path(p).is_file():
            from results_report import _archived

            kept = _archived(p)
            if kept is None:
                raise DataError("unreadable per-query archive", source=p)
            runs.append(kept)
        else:
            runs.append(read_per_query(p))
    splits = [s for s in runs[0] if all(s in r for r in runs)]
    out = {}
    for s in splits:
        frames = [r[s] for r in runs]
        for f, p in zip(frames, paths):
            lacking = [m for m in METRICS if m not in f.columns]
            if lacking:
                raise DataError(f"split {s!r}: no per-query column {lacking[0]!r} (columns: {list(f.columns)})", source=p)
        for f, p in zip(frames[1:], paths[1:]):
            if set(f.index) != set(frames[0].index):
                raise DataError(f"split {s!r}: not the test queries of {paths[0]}", source=p)
        out[s] = sum(f.loc[frames[0].index] for f in frames) / len(frames)
    return out


def grade_groups(qrels: pd.DataFrame) -> pd.Series:
    """Each query's group (``GROUPS``) from its ground-truth rows (columns ``query_id``, ``grade``)."""
    distinct = qrels.groupby("query_id", sort=False)["grade"].nunique()
    return distinct.map(lambda n: GROUPS[0] if n == 1 else GROUPS[1])


def compare_by_group(a: pd.DataFrame, b: pd.DataFrame, groups: pd.Series, split: str) -> list[dict]:
    """Rows of the table for one split: every group and metric, ``B - A`` over that group's queries."""
    from gcl.errors import DataError
    from gcl.evaluation.compare import paired_compare

    if set(a.index) != set(b.index):
        raise DataError(f"split {split!r}: the two sides have different test queries")
    missing = a.index.difference(groups.index)
    if len(missing):
        raise DataError(f"split {split!r}: {len(missing)} test queries (e.g. {missing[0]!r}) are not in the data's "
                        "ground truth; give the data, --split-seed, --protocol and --n-queries the runs were evaluated with")
    rows = []
    for group in GROUPS:
        q = a.index[(groups.reindex(a.index) == group).to_numpy()]
        for metric in METRICS:
            if not len(q):
                rows.append({"split": split, "group": group, "metric": metric, "n": 0})
                continue
            r = paired_compare(a.loc[q, metric].to_numpy(), b.loc[q, metric].to_numpy())
            rows.append({"split": split, "group": group, "metric": metric, "n": len(q), "a": r.mean_a,
                         "b": r.mean_b, "diff": r.difference, "p": r.p_value, "lo": r.ci_low, "hi": r.ci_high})
    return rows


def table(rows: list[dict]) -> str:
    head = "| split | queries | n | metric | A | B | B − A | p | 95 % CI |\n|---|---|---:|---|---:|---:|---:|---:|---|"
    lines = [head]
    for r in rows:
        if not r["n"]:
            lines.append(f"| {r['split']} | {r['group']} | 0 | {r['metric']} | – | – | – | – | – |")
            continue
        lines.append(f"| {r['split']} | {r['group']} | {r['n']} | {r['metric']} | {r['a']:.4f} | {r['b']:.4f} | "
                     f"{r['diff']:+.4f} | {r['p']:.3f} | [{r['lo']:+.4f}, {r['hi']:+.4f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from gcl.cli.evaluate import add_data_args, data_config
    from gcl.data.sources import load_benchmark
    from gcl.errors import DataError, GCLError
    from gcl.evaluation.evaluator import Protocol, prepare_task

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs="+", required=True, help="run(s) A: gcl evaluate --out directories or archives")
    p.add_argument("--b", nargs="+", required=True, help="run(s) B, compared as B - A")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    p.add_argument("--protocol", choices=("reference", "all"), default="reference",
                   help="the test queries the runs were scored on, as gcl evaluate --protocol (default reference)")
    p.add_argument("--n-queries", type=int, default=2000, help="as gcl evaluate --n-queries (default 2000)")
    add_data_args(p)
    args = p.parse_args(argv)
    try:
        if args.out and not Path(args.out).resolve().parent.is_dir():
            raise DataError("the folder of --out does not exist", source=args.out)
        a, b = read_side(args.a), read_side(args.b)
        bench = load_benchmark(data_config(args), train=False)
        protocol = Protocol(name=args.protocol, n_queries=args.n_queries)
        rows = []
        for split in (s for s in a if s in b):
            task = prepare_task(bench.eval_split(split), protocol, name=split)
            rows += compare_by_group(a[split], b[split], grade_groups(task.qrels), split)
        if not rows:
            raise DataError("the two sides share no split")
        text = table(rows)
        print(f"A: {' '.join(args.a)}\nB: {' '.join(args.b)}\n\n{text}")
        if args.out:
            Path(args.out).write_text(f"A: `{' '.join(args.a)}`\n\nB: `{' '.join(args.b)}`\n\n{text}\n")
    except (GCLError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
