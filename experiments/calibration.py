"""Calibrated relevance on the test splits: calibration error and the precision/recall of a cut-off.

    python experiments/calibration.py --model minilm --data homedepot --n-queries 300 --corpus-size 5000
    python experiments/calibration.py --report docs/results/calibration_homedepot_minilm.json   # its table
    python experiments/calibration.py --model gcl=runs/homedepot_gcl/final --model binary=runs/homedepot_binary/final \
        --data homedepot --out docs/results/calibration_homedepot.json

For each model, both calibrations of :mod:`gcl.calibration` are fitted on the **dev** split
(training-pool queries withheld from training, as ``gcl calibrate`` does): the global isotonic
map of the cosine, and the query-dependent form (affine in the cosine with parameters from the
query's top-``--top-n`` cosines, then isotonic). Then, on the judged pairs of each test split:

* ``ece``: binned expected calibration error on the grade scale (10 equal-width bins of the
  predicted grade over the grade range; :func:`gcl.calibration.expected_calibration_error`);
* ``rmse``: root mean squared error of the predicted against the judged grade;
* ``precision`` / ``recall`` / ``f1`` of the cut-off ``relevance >= --relevant`` against the
  judged ``grade >= --relevant`` (a rater would call it relevant), over judged pairs only --
  unjudged retrieved documents have no grade to score against.

``--n-queries`` samples queries per split (uniformly, ``--seed``) and ``--corpus-size`` samples
each split's corpus (its judged documents plus random others, the same size for dev and test, so
the top-cosine features of the query-dependent form see corpora of one size). Figures in
docs/results.md ("Calibrated relevance").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SPLITS = ("in_domain", "novel_query", "novel_corpus", "zero_shot")


def sample(ds, n_queries: int | None, corpus_size: int | None, rng):
    """``ds`` restricted to ``n_queries`` random queries and a corpus of their judged documents plus
    random others, ``corpus_size`` documents in all (None: keep all)."""
    q = ds.queries.index
    if n_queries and n_queries < len(q):
        q = q[np.sort(rng.choice(len(q), n_queries, replace=False))]
    sub = ds.subset(query_ids=q, keep_all_documents=True)
    if corpus_size:
        judged = sub.judgments["doc_id"].unique()
        others = sub.documents.index.difference(judged)
        fill = max(0, min(len(others), corpus_size - len(judged)))
        keep = list(judged) + list(others[np.sort(rng.choice(len(others), fill, replace=False))])
        sub = sub.subset(doc_ids=keep, name=ds.name)
    return sub


def cut_scores(pred: np.ndarray, grade: np.ndarray, relevant: float, cutoff: float) -> dict:
    """Precision/recall/F1 of ``pred >= cutoff`` against ``grade >= relevant``; ``kept``: share kept."""
    cut, truth = pred >= cutoff, grade >= relevant
    tp = float((cut & truth).sum())
    p = tp / cut.sum() if cut.any() else float("nan")
    r = tp / truth.sum() if truth.any() else float("nan")
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else float("nan"),
            "kept": float(cut.mean())}


def scores(pred: np.ndarray, grade: np.ndarray, relevant: float, cutoffs, grade_range) -> dict:
    from gcl.calibration import expected_calibration_error

    out = {"ece": expected_calibration_error(pred, grade, grade_range=grade_range),
           "rmse": float(np.sqrt(np.mean((pred - grade) ** 2)))}
    out |= cut_scores(pred, grade, relevant, relevant)
    out["cuts"] = {f"{t:g}": cut_scores(pred, grade, relevant, t) for t in cutoffs}
    return out


def evaluate_model(label: str, ref: str, bench, args) -> dict:
    from gcl.calibration import fit_calibration, judged_pairs
    from gcl.cli.calibrate import grade_range
    from gcl.encoders.base import load_model

    rng = np.random.default_rng(args.seed)
    model = load_model(ref)
    lo, hi = grade_range(bench)
    t0 = time.perf_counter()
    dev = judged_pairs(model, sample(bench.dev, None, args.corpus_size, rng), top_n=args.top_n)
    fits = {m: fit_calibration(dev["cos"], dev["grade"], fingerprint=model.fingerprint(), grade_range=(lo, hi),
                               method=m, top_cosines=dev.get("top"), query_index=dev["query_index"],
                               top_n=args.top_n)
            for m in ("isotonic", "query")}
    out = {"model": ref, "dev_pairs": int(len(dev["cos"])), "grade_range": [lo, hi], "splits": {}}
    for name in args.splits:
        split = bench.eval_split(name)
        if len(split.judgments) == 0:
            continue
        pairs = judged_pairs(model, sample(split, args.n_queries, args.corpus_size, rng), top_n=args.top_n)
        row = {"pairs": int(len(pairs["cos"])), "relevant_share": float((pairs["grade"] >= args.relevant).mean())}
        for m, calib in fits.items():
            pred = calib.relevance(pairs["cos"])
            if m == "query":  # each query's pairs read that query's top cosines
                for i in np.unique(pairs["query_index"]):
                    at = pairs["query_index"] == i
                    pred[at] = calib.relevance(pairs["cos"][at], pairs["top"][i])
            row[m] = scores(pred, pairs["grade"], args.relevant, args.cutoffs, (lo, hi))
        out["splits"][name] = row
        print(f"[{label}] {name}: {row['pairs']} pairs  " + "  ".join(
            f"{m}: ece {row[m]['ece']:.3f} rmse {row[m]['rmse']:.3f} P {row[m]['precision']:.3f} "
            f"R {row[m]['recall']:.3f}" for m in fits), file=sys.stderr)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def table(results: dict) -> str:
    """Per model, split and method: ECE, RMSE, then kept share / precision / recall at each cut-off."""
    first = next(iter(next(iter(results.values()))["splits"].values()))
    cuts = list(first["isotonic"].get("cuts", {}))
    lines = ["| model | split | judged pairs | relevant share | method | ECE | RMSE | "
             + " | ".join(f"kept / P / R at {t}" for t in cuts) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(cuts)]
    for label, res in results.items():
        for name, row in res["splits"].items():
            for m in ("isotonic", "query"):
                s = row[m]
                cells = " | ".join(f"{c['kept']:.2f} / {c['precision']:.3f} / {c['recall']:.3f}"
                                   for c in s.get("cuts", {}).values())
                lines.append(f"| {label} | {name} | {row['pairs']} | {row['relevant_share']:.3f} | {m} | "
                             f"{s['ece']:.3f} | {s['rmse']:.3f} | {cells} |")
    return "\n".join(lines)


def write_synthetic(path: str, n_queries: int = 2000, n_docs: int = 4000, seed: int = 7) -> str:
    """A larger generated product set than ``--data synthetic`` (its dev split has 8 queries), as a
    CSV (query, doc_id, score, title) that ``--data`` and ``gcl train data.source=`` read."""
    from gcl.data.synthetic import make_synthetic

    ds = make_synthetic(n_queries=n_queries, n_docs=n_docs, seed=seed)
    j = ds.judgments.merge(ds.queries, left_on="query_id", right_index=True)
    j = j.merge(ds.documents, left_on="doc_id", right_index=True)
    j[["query", "doc_id", "score", "title"]].to_csv(path, index=False)
    return path


def main(argv=None) -> int:
    from gcl.calibration import CalibrationParams
    from gcl.cli.evaluate import add_data_args, data_config
    from gcl.data.sources import load_benchmark

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--report"]:  # --report RESULTS.json: the table of a saved run
        print(table(json.loads(Path(argv[1]).read_text())["results"]))
        return 0
    p.add_argument("--model", action="append", required=True, metavar="[LABEL=]MODEL",
                   help="model to calibrate and score (repeatable), e.g. gcl=runs/homedepot_gcl/final")
    add_data_args(p)
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated test splits (default all four)")
    p.add_argument("--n-queries", type=int, default=None, help="queries sampled per test split (default all)")
    p.add_argument("--corpus-size", type=int, default=None, help="documents per sampled corpus (default whole corpus)")
    p.add_argument("--top-n", type=int, default=CalibrationParams.top_n,
                   help="top cosines the query-dependent form reads (default %(default)s)")
    p.add_argument("--relevant", type=float, default=2.0, help="grade a rater calls relevant: the cut-off (default 2)")
    p.add_argument("--cutoffs", default="2,2.25,2.5",
                   help="min_relevance values whose precision/recall against grade >= --relevant are reported "
                        "(default 2,2.25,2.5)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--synthetic-csv", default=None, metavar="PATH",
                   help="write 2,000 generated queries over 4,000 products (seed 7) to PATH and use it as --data")
    args = p.parse_args(argv)
    if args.synthetic_csv:
        args.data = write_synthetic(args.synthetic_csv)
    args.splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    args.cutoffs = [float(t) for t in args.cutoffs.split(",") if t.strip()]
    bench = load_benchmark(data_config(args), announce=lambda m: print(m, file=sys.stderr))
    results = {}
    for item in args.model:
        label, _, ref = item.rpartition("=")
        results[label or ref] = evaluate_model(label or ref, ref, bench, args)
    print(table(results))
    if args.out:
        meta = {k: v for k, v in vars(args).items() if k != "model"} | {"data": bench.name}
        Path(args.out).write_text(json.dumps({"args": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
