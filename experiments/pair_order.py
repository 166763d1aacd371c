"""Which grade differences does a model order correctly, on trained and on new queries?

The judged re-rank (``gcl evaluate --judged-rerank``) says how much of the ordering headroom a
model captures, as one number per split. This script opens it up by the size of the grade gap.
For every query and every two of its judged documents with different raw scores
(Home Depot: the mean of three or more raters' 1..3 votes, so one rater's vote moves a mean of
three by 1/3), the pair is *concordant* when the model scores the better-graded document higher:

    concordance(B) = (1 / |P_B|) Σ_{(q, i, j) ∈ P_B} ( 1[s(q,i) > s(q,j)] + ½ · 1[s(q,i) = s(q,j)] ),
    P_B = {(q, i, j) : g(q,i) − g(q,j) ∈ B},   s(q, d) = cos(E_q(q), E_d(d)),

over the pairs of each gap bin ``B`` (0.5 = no order, 1 = every pair right; a pair counts once).
A gap of 1/3 is one rater changing a vote; a gap above 1 separates an irrelevant-leaning product
from a relevant one. If a loss's trained-query gains sit in the small gaps and vanish on new
queries, it learnt query-specific (or rater-specific) orderings; a model that orders the large
gaps of new queries better than untrained MiniLM learnt something that carries over.

Per arm (one or more model directories: seeds), each bin reports the pairs, the mean concordance
over the seeds and their standard deviation. Splits: ``train`` (``--train-queries`` training
queries sampled with seed 0, the same for every arm: the order a model was trained on), ``dev``
(never trained on, carved from training queries) and any test split named with ``--splits``.
Each split's judged queries and documents are encoded once per model; each model's per-pair
results are kept in ``<out>.cache/`` (keyed by the model directory, checked against the data and
pairs), so a killed or extended run encodes only the models it has not seen. With ``--reference ARM``
every arm's per-pair concordance (mean over its seeds) is compared with that arm's on the same
pairs, and the difference gets a 95 % interval from a bootstrap over *queries*: one query's pairs
share its documents, so a pair-level interval would be too narrow.

    python experiments/pair_order.py --out docs/results/pair_order.json --reference zero-shot \\
        --arm zero-shot=minilm \\
        --arm binary-thresholded-random=runs/budget/binary-thresholded-random-s{0,1,2}/final \\
        --arm gcl=runs/budget/gcl-s{0,1,2}/final --arm gcl-best=runs/budget/gcl-best-s{0,1,2}/final \\
        --arm gcl-soup=runs/budget/gcl-soup-s{0,1,2}/final

(``--arm NAME=DIR,DIR,...``, or ``NAME=DIR NAME=DIR ...`` as the shell's brace expansion writes it,
or ``NAME=DIR DIR ...``: every word up to the next option is a model of that arm.) The data and split come
from ``--config`` (default: the budget table's base config).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "homedepot_gcl_fast.yaml"
EDGES = (0.0, 0.34, 0.67, 1.01, 2.01)  # score gaps: 1/3 | 2/3 | 1 | above 1 (mean-of-three votes, with slack)
LABELS = ("1/3", "2/3", "1", ">1")


def judged_pairs(judgments: pd.DataFrame) -> pd.DataFrame:
    """Every (query, better, worse) pair of a query's judged documents with different scores:
    columns ``query_id``, ``hi``, ``lo`` (row positions in ``judgments``) and ``gap`` (> 0)."""
    from gcl.data.schema import QUERY_ID, SCORE

    j = judgments.reset_index(drop=True)
    rows = []
    for _, grp in j.groupby(QUERY_ID, sort=True):
        idx = grp.index.to_numpy()
        sc = grp[SCORE].to_numpy(dtype=np.float64)
        a, b = np.triu_indices(len(idx), k=1)
        d = sc[a] - sc[b]
        keep = d != 0
        a, b, d = a[keep], b[keep], d[keep]
        hi = np.where(d > 0, idx[a], idx[b])
        lo = np.where(d > 0, idx[b], idx[a])
        rows.append(pd.DataFrame({QUERY_ID: grp[QUERY_ID].iloc[0], "hi": hi, "lo": lo, "gap": np.abs(d)}))
    if not rows:
        return pd.DataFrame({QUERY_ID: [], "hi": [], "lo": [], "gap": []})
    return pd.concat(rows, ignore_index=True)


def concordance(pair_scores_hi: np.ndarray, pair_scores_lo: np.ndarray) -> np.ndarray:
    """Per pair: 1 if the better document scores higher, ½ on a tie, else 0."""
    return (pair_scores_hi > pair_scores_lo) + 0.5 * (pair_scores_hi == pair_scores_lo)


def by_gap(pairs: pd.DataFrame, conc: np.ndarray) -> dict:
    """``{bin label: (pairs, concordance)}`` plus ``all``."""
    b = np.digitize(pairs["gap"].to_numpy(), EDGES[1:-1], right=True)
    out = {lab: (int((b == k).sum()), float(conc[b == k].mean()) if (b == k).any() else float("nan"))
           for k, lab in enumerate(LABELS)}
    out["all"] = (len(conc), float(conc.mean()) if len(conc) else float("nan"))
    return out


def paired_difference(pairs: pd.DataFrame, conc_a: np.ndarray, conc_b: np.ndarray, rounds: int,
                      seed: int = 0) -> dict:
    """Per gap bin: ``A − B`` concordance over the same pairs, with a 95 % percentile interval from
    resampling *queries* (a query's pairs share its documents, so pairs are not independent):

        Δ* = Σ_q w_q Σ_{p∈q} (c_A(p) − c_B(p)) / Σ_q w_q n_q,   w ~ Multinomial(|Q|, 1/|Q|).
    """
    from gcl.data.schema import QUERY_ID

    b = np.digitize(pairs["gap"].to_numpy(), EDGES[1:-1], right=True)
    q = pd.factorize(pairs[QUERY_ID])[0]
    nq = int(q.max()) + 1 if len(q) else 0
    w = np.random.default_rng(seed).multinomial(nq, np.full(nq, 1.0 / nq), size=rounds) if nq else None
    out = {}
    for k, lab in enumerate((*LABELS, "all")):
        sel = (b == k) if lab != "all" else np.ones(len(b), dtype=bool)
        if not sel.any():
            out[lab] = {"diff": float("nan"), "low": float("nan"), "high": float("nan")}
            continue
        d = np.bincount(q[sel], weights=conc_a[sel] - conc_b[sel], minlength=nq)
        n = np.bincount(q[sel], minlength=nq).astype(np.float64)
        boot = (w @ d) / np.maximum(w @ n, 1)
        out[lab] = {"diff": float(d.sum() / n.sum()), "low": float(np.quantile(boot, 0.025)),
                    "high": float(np.quantile(boot, 0.975))}
    return out


def pair_scores(model, split, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each pair's two documents with its query under ``model`` (each text encoded once)."""
    from gcl.data.schema import DOC_ID, QUERY_ID
    from gcl.evaluation.retrievers import DenseRetriever

    j = split.judgments.reset_index(drop=True)
    r = DenseRetriever(model, show_progress=False)
    qids = pd.Index(j[QUERY_ID].unique())
    dids = pd.Index(j[DOC_ID].unique())
    q = np.asarray(r.query_embeddings(split.queries.loc[qids]), dtype=np.float32)
    d = np.asarray(r.corpus_embeddings(split.documents.loc[dids]), dtype=np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    qrow = qids.get_indexer(j[QUERY_ID])
    drow = dids.get_indexer(j[DOC_ID])
    s = np.einsum("ij,ij->i", q[qrow], d[drow])  # one score per judgment
    return s[pairs["hi"].to_numpy()], s[pairs["lo"].to_numpy()]


def sample_queries(split, n: int, seed: int = 0):
    """``n`` of the split's judged queries (all when ``n`` is 0), drawn once with ``seed``."""
    from gcl.data.schema import QUERY_ID

    if not n:
        return split
    qids = np.sort(split.judgments[QUERY_ID].unique())
    keep = np.random.default_rng(seed).choice(qids, min(n, len(qids)), replace=False)
    return split.subset(query_ids=keep, name=f"{split.name}-sample")


def _cache_file(cache: Path, model: str) -> Path:
    import hashlib

    return cache / (hashlib.sha1(str(Path(model).resolve() if Path(model).exists() else model).encode()).hexdigest()[:16] + ".npz")


def load_cached(cache: Path, model: str, fingerprint: str, pairs: dict) -> dict | None:
    """A model's per-pair concordance from an earlier run with the same data and pairs, else None.
    A model directory newer than its cache entry is recomputed."""
    f = _cache_file(cache, model)
    if not f.exists() or (Path(model).exists() and Path(model).stat().st_mtime > f.stat().st_mtime):
        return None
    with np.load(f, allow_pickle=False) as z:
        if str(z["fingerprint"]) != fingerprint or set(pairs) - set(z.files):
            return None
        return {name: z[name] for name in pairs}


def save_cached(cache: Path, model: str, fingerprint: str, conc: dict) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    f = _cache_file(cache, model)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(tmp, fingerprint=np.array(fingerprint), **conc)
    tmp.replace(f)


def parse_arms(words: list[list[str]]) -> dict[str, list[str]]:
    arms: dict[str, list[str]] = {}
    for group in words:
        head, _, first = group[0].partition("=")
        if not head or not first:
            raise SystemExit(f"error: --arm wants NAME=MODEL[,MODEL...], got {group[0]!r}")
        rest = [w.removeprefix(f"{head}=") for w in group[1:]]  # brace expansion repeats "NAME="
        arms[head] = [m for w in [first, *rest] for m in w.split(",") if m]
    return arms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", action="append", nargs="+", required=True, metavar="NAME=MODEL",
                   help="an arm and its models (seeds): NAME=DIR[,DIR...] or NAME=DIR DIR ...")
    p.add_argument("--config", default=str(BASE), help="the config whose data section gives the data and split")
    p.add_argument("--train-queries", type=int, default=500, help="training queries sampled (seed 0); 0 = all")
    p.add_argument("--splits", nargs="*", default=["novel_query"], help="test splits beside train and dev")
    p.add_argument("--reference", default=None, help="an arm that every arm is compared with, pair by pair "
                   "(seed means), with a bootstrap over queries")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the queries")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="JSON file for the figures; the Markdown tables go beside it (.md)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of --config (e.g. data.source=synthetic)")
    args = p.parse_args(argv)
    arms = parse_arms(args.arm)
    from gcl.encoders.text import MINILM_ALIASES

    missing = [f"{a}: {m}" for a, ms in arms.items() for m in ms if m.lower() not in MINILM_ALIASES and not Path(m).is_dir()]
    if missing:  # checked before hours of encoding, and nothing is fetched from a hub
        print(f"error: no such model directory: {'; '.join(missing)}", file=sys.stderr)
        return 2
    if args.reference is not None and args.reference not in arms:
        print(f"error: --reference {args.reference!r} is not an --arm ({', '.join(arms)})", file=sys.stderr)
        return 2

    import torch

    from gcl.config import load_config
    from gcl.data.sources import load_benchmark
    from gcl.encoders.base import load_model
    from gcl.errors import GCLError
    from gcl.training.config import TrainConfig

    torch.set_num_threads(args.threads)
    try:
        cfg = load_config(TrainConfig, args.config, list(args.overrides))
        bench = load_benchmark(cfg.data)
        splits = {"train": sample_queries(bench.train, args.train_queries), "dev": bench.dev}
        splits.update({s: bench.eval_split(s) for s in args.splits})
    except GCLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pairs = {name: judged_pairs(s.judgments) for name, s in splits.items()}
    result = {"config": args.config, "overrides": list(args.overrides), "train_queries": args.train_queries,
              "edges": EDGES, "bins": LABELS, "reference": args.reference, "bootstrap": args.bootstrap,
              "pairs": {n: len(pr) for n, pr in pairs.items()}, "arms": {}}
    mean_conc: dict[str, dict[str, np.ndarray]] = {}  # arm -> split -> per-pair concordance, mean over seeds
    cache = Path(args.out).with_suffix(".cache")  # one .npz of per-pair concordance per model: a re-run skips it
    fingerprint = json.dumps({"config": args.config, "overrides": list(args.overrides), "pairs": result["pairs"],
                              "train_queries": args.train_queries}, sort_keys=True)
    for arm, models in arms.items():
        per_seed = []
        conc_sum = {name: np.zeros(len(pr)) for name, pr in pairs.items()}
        for m in models:
            t0 = time.perf_counter()
            conc = load_cached(cache, m, fingerprint, pairs)
            if conc is None:
                try:
                    model = load_model(m)
                except (GCLError, OSError) as e:
                    print(f"error: arm {arm}: cannot load model {m}: {e}", file=sys.stderr)
                    return 2
                model.eval()
                with torch.no_grad():
                    conc = {name: concordance(*pair_scores(model, s, pairs[name])) for name, s in splits.items()}
                save_cached(cache, m, fingerprint, conc)
            got = {}
            for name in splits:
                conc_sum[name] += conc[name]
                got[name] = by_gap(pairs[name], conc[name])
            per_seed.append({"model": m, "splits": got})
            print(f"{arm} {m}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        summary = {}
        for name in splits:
            summary[name] = {}
            for lab in (*LABELS, "all"):
                vals = np.array([ps["splits"][name][lab][1] for ps in per_seed])
                summary[name][lab] = {"pairs": per_seed[0]["splits"][name][lab][0], "mean": float(vals.mean()),
                                      "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, "seeds": len(vals)}
        result["arms"][arm] = {"models": per_seed, "summary": summary}
        mean_conc[arm] = {name: v / len(models) for name, v in conc_sum.items()}
    if args.reference is not None:
        for arm in mean_conc:
            for name, pr in pairs.items():
                diff = paired_difference(pr, mean_conc[arm][name], mean_conc[args.reference][name], args.bootstrap)
                for lab, d in diff.items():
                    result["arms"][arm]["summary"][name][lab]["vs_reference"] = d
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    command = "python experiments/pair_order.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.out).with_suffix(".md").write_text(
        "# Concordance of judged pairs by score gap (`experiments/pair_order.py`)\n\n"
        f"Generated by `{command}`. Cells: share of a split's judged pairs (better, worse) that the model scores "
        "in the judged order, ties ½; mean ± std over the arm's models (seeds)"
        + (f"; in brackets the difference from **{args.reference}** on the same pairs and its 95 % interval "
           "(bootstrap over queries)" if args.reference else "") + ".\n" + table + "\n")
    print(table)
    return 0


def markdown(result: dict) -> str:
    """One table per split: arms as rows, gap bins as columns (concordance mean ± std over seeds;
    with a reference arm, the difference from it and its 95 % query-bootstrap interval)."""
    lines = []
    first = next(iter(result["arms"].values()))["summary"]
    for split, bins in first.items():
        counts = " | ".join(f"{lab} ({bins[lab]['pairs']})" for lab in (*result["bins"], "all"))
        lines += [f"\n**{split}** (pairs per score gap)\n", f"| arm | {counts} |",
                  "|---|" + "---|" * (len(result["bins"]) + 1)]
        for arm, a in result["arms"].items():
            cells = []
            for lab in (*result["bins"], "all"):
                c = a["summary"][split][lab]
                cell = f"{c['mean']:.3f}" + (f" ± {c['std']:.3f}" if c["seeds"] > 1 else "")
                if "vs_reference" in c and arm != result["reference"]:
                    v = c["vs_reference"]
                    cell += f" ({v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}])"
                cells.append(cell)
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
