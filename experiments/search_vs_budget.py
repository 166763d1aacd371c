"""Does the short dev loss search rank arms as the budget does? (issue 12 §5, dev split only)

    python experiments/search_vs_budget.py              # the table and rank correlations, to stdout

The loss search (docs/results.md §1c; ``experiments/loss_search.py``) judges an arm after 164 steps on
1,500 training queries; the budget table (``experiments/results_table.py --profile budget``) trains
the same recipes 3,496 steps (8 epochs) on every training query and scores the dev split once an
epoch. For each arm run both ways this prints its mean final dev nDCG@10 and ERR in the search
(every seed it has) and in the budget table after 1 epoch (step 437) and at the end, and the
Spearman rank correlation over arms

    ρ = 1 − 6 Σ_i d_i² / (n (n² − 1)),   d_i = rank of arm i in one column − its rank in the other

(with ties: the Pearson correlation of average ranks, as ``scipy.stats.spearmanr``). The two use
different dev corpora (search: judged + random documents to 5,000; budget: to 10,000, the
trainer's), so only the ranks are compared, never the levels. Nothing here reads a test split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

# search arm -> budget arm with the same recipe (gcl-best is the paper's GCL with random batches)
PAIRS: dict[str, str] = {
    "binary-thresholded": "binary-thresholded",
    "binary-thresholded-random": "binary-thresholded-random",
    "gcl": "gcl",
    "gcl-random": "gcl-best",
    "gcl-reciprocal": "gcl-reciprocal",
}
SEARCHES = ("docs/results/loss_search/search.jsonl", "docs/results/loss_search_weights/search.jsonl")
BUDGET = "docs/results/table_budget/runs.jsonl"
COLUMNS = ("search", "budget 1 epoch", "budget 8 epochs")


def _means(points: list[dict], ndcg: str, err: str) -> tuple[float, float, int]:
    return float(np.mean([x[ndcg] for x in points])), float(np.mean([x[err] for x in points])), len(points)


def table(searches=SEARCHES, budget=BUDGET) -> dict[str, dict[str, tuple[float, float, int]]]:
    """arm -> column -> (mean dev nDCG@10, mean dev ERR, runs); arms run both ways only.

    A seed found in two search files counts once (the weight search repeats some arms' seeds), and
    a budget (arm, seed) recorded twice counts its last record, as the budget report does."""
    from results_report import by_arm, read_runs  # same directory

    search: dict[str, dict[int, dict]] = {}
    for path in searches:
        for r in read_runs(Path(path)):
            search.setdefault(r["arm"], {})[r["seed"]] = r["history"][-1]
    runs = by_arm(read_runs(Path(budget)))
    out = {}
    for s_arm, b_arm in PAIRS.items():
        curves = [r["dev"]["curve"] for r in runs.get(b_arm, []) if (r.get("dev") or {}).get("curve")]
        if s_arm not in search or not curves:
            continue
        out[s_arm] = {
            "search": _means(list(search[s_arm].values()), "dev/ndcg@10", "dev/err"),
            "budget 1 epoch": _means([c[0] for c in curves], "ndcg@10", "err"),
            "budget 8 epochs": _means([c[-1] for c in curves], "ndcg@10", "err"),
        }
    return out


def _ranks(x) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (pandas' ``rank``, method "average")."""
    return pd.Series(x, dtype=float).rank(method="average").to_numpy()


def spearman(a, b) -> float:
    """Pearson correlation of the (average) ranks: the formula above when there are no ties."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def report(t: dict) -> str:
    arms = list(t)
    lines = ["| search arm (budget arm) | " + " | ".join(f"{c} nDCG@10 / ERR (runs)" for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for a in arms:
        cells = [f"{t[a][c][0]:.4f} / {t[a][c][1]:.4f} ({t[a][c][2]})" for c in COLUMNS]
        lines.append(f"| {a} ({PAIRS.get(a, a)}) | " + " | ".join(cells) + " |")
    lines.append("")
    for k, metric in ((0, "nDCG@10"), (1, "ERR")):
        col = {c: [t[a][c][k] for a in arms] for c in COLUMNS}
        lines.append(f"Spearman ρ over {len(arms)} arms, {metric}: search vs 8 epochs "
                     f"{spearman(col['search'], col['budget 8 epochs']):+.2f}, search vs 1 epoch "
                     f"{spearman(col['search'], col['budget 1 epoch']):+.2f}, 1 epoch vs 8 epochs "
                     f"{spearman(col['budget 1 epoch'], col['budget 8 epochs']):+.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default=BUDGET, help="the budget table's runs.jsonl")
    p.add_argument("--search", nargs="+", default=list(SEARCHES), help="the loss searches' search.jsonl files")
    args = p.parse_args(argv)
    for path in [args.budget, *args.search]:
        if not Path(path).is_file():
            raise SystemExit(f"search_vs_budget: {path}: no such file (run the search / the budget table first)")
    t = table(args.search, args.budget)
    if len(t) < 3:
        raise SystemExit(f"search_vs_budget: only {len(t)} arm(s) run both ways; a rank correlation needs 3")
    print(report(t))


if __name__ == "__main__":
    main()
