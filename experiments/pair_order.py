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
results are kept in ``<out>.cache/`` (keyed by the model directory, valid while the pairs and the
directory's files are unchanged), so a killed or extended run encodes only the models it has not
seen. With ``--reference ARM [ARM ...]`` every arm's per-pair concordance (mean over its seeds) is
compared with each reference arm's on the same pairs, and the difference gets a 95 % interval from
a bootstrap over *queries*: one query's pairs share its documents, so a pair-level interval would
be too narrow.

    python experiments/pair_order.py --out docs/results/pair_order.json \\
        --reference zero-shot binary-thresholded-random --arm zero-shot=minilm \\
        --arm binary-thresholded-random=runs/budget/binary-thresholded-random-s{0,1,2}/final \\
        --arm gcl=runs/budget/gcl-s{0,1,2}/final --arm gcl-best=runs/budget/gcl-best-s{0,1,2}/final \\
        --arm gcl-soup=runs/budget/gcl-soup-s{0,1,2}/final

(``--arm NAME=DIR,DIR,...``, or ``NAME=DIR NAME=DIR ...`` as the shell's brace expansion writes
it, or ``NAME=DIR DIR ...``: every word up to the next option is a model of that arm; an arm is
named once.) The data and split come from ``--config`` (default: the budget table's base config)
and its ``--set KEY=VALUE`` overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "homedepot_gcl_fast.yaml"
EDGES = (0.34, 0.67, 1.01)  # upper edges of the gap bins, on gaps rounded to 2 decimals (1/3 -> 0.33)
LABELS = ("1/3", "2/3", "1", ">1")  # gaps <= 0.34 | <= 0.67 | <= 1.01 | above (rare means of 4+ raters fall in between)
CACHE_VERSION = 2  # bump when the pairs or the concordance change meaning


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
        return pd.DataFrame({QUERY_ID: pd.Series([], dtype=object), "hi": np.zeros(0, np.int64),
                             "lo": np.zeros(0, np.int64), "gap": np.zeros(0)})
    return pd.concat(rows, ignore_index=True)


def gap_bins(pairs: pd.DataFrame) -> np.ndarray:
    """Bin index (position in ``LABELS``) of each pair's score gap; the gap is rounded to 2 decimals
    first, so a one-vote gap (0.3333... or 0.3300...1 in floating point) never lands on an edge."""
    return np.digitize(np.round(pairs["gap"].to_numpy(dtype=np.float64), 2), EDGES, right=True)


def concordance(pair_scores_hi: np.ndarray, pair_scores_lo: np.ndarray) -> np.ndarray:
    """Per pair: 1 if the better document scores higher, ½ on a tie, else 0."""
    return (pair_scores_hi > pair_scores_lo) + 0.5 * (pair_scores_hi == pair_scores_lo)


def by_gap(pairs: pd.DataFrame, conc: np.ndarray) -> dict:
    """``{bin label: (pairs, concordance)}`` plus ``all``."""
    b = gap_bins(pairs)
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

    b = gap_bins(pairs)
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
        wn = w @ n
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.where(wn > 0, (w @ d) / wn, np.nan)  # a resample without this bin's queries: no value
        out[lab] = {"diff": float(d.sum() / n.sum()), "low": float(np.nanquantile(boot, 0.025)),
                    "high": float(np.nanquantile(boot, 0.975))}
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


NOT_MODEL_DIRS = frozenset({"eval", "eval_rerank", "logs", "checkpoints"})  # a run directory's other outputs


def model_signature(model: str) -> str:
    """What a cached result depends on in a model directory: every model file's name, size and
    mtime (weights rewritten in place change it; evaluations and logs beside them do not); a named
    model (``minilm``) is signed by the directory it resolves to."""
    path = Path(model)
    if not path.is_dir():
        from gcl.encoders.text import MINILM_ALIASES, minilm_path

        if model.lower() not in MINILM_ALIASES:
            return model
        path = minilm_path()
    files = sorted(f for f in path.rglob("*") if f.is_file()
                   and not NOT_MODEL_DIRS.intersection(f.relative_to(path).parts[:-1]))
    return json.dumps([str(path.resolve()), *([str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns]
                                              for f in files)])


def pairs_fingerprint(pairs: dict[str, pd.DataFrame], splits: dict) -> str:
    """A hash of every split's pairs (query, both documents, the gap) and of the judged queries'
    and documents' fields (same ids with other texts, e.g. other ``data.doc_fields``, differ)."""
    import hashlib

    from gcl.data.schema import DOC_ID, QUERY_ID

    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for name in sorted(pairs):
        split = splits[name]
        pr, docs = pairs[name], split.judgments[DOC_ID].reset_index(drop=True)
        h.update(name.encode())
        for table, ids in ((split.queries, split.judgments[QUERY_ID]), (split.documents, docs)):
            rows = table.loc[pd.Index(ids.unique())]
            h.update(",".join(map(str, rows.columns)).encode())
            h.update(pd.util.hash_pandas_object(rows.astype(str), index=True).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(pd.DataFrame({
            "q": pr["query_id"].astype(str), "hi": docs.iloc[pr["hi"].to_numpy()].astype(str).to_numpy(),
            "lo": docs.iloc[pr["lo"].to_numpy()].astype(str).to_numpy(), "gap": np.round(pr["gap"], 6)}),
            index=False).to_numpy().tobytes())
    return h.hexdigest()


def _cache_file(cache: Path, model: str) -> Path:
    import hashlib

    key = str(Path(model).resolve()) if Path(model).exists() else model
    return cache / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")


def load_cached(cache: Path, model: str, fingerprint: str, pairs: dict) -> dict | None:
    """A model's per-pair concordance from an earlier run on the same pairs with the same model
    files, else None (also for an unreadable cache file: it is recomputed)."""
    f = _cache_file(cache, model)
    if not f.exists():
        return None
    try:
        with np.load(f, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint or str(z["model"]) != model_signature(model):
                return None
            got = {name: z[name] for name in pairs}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # truncated or foreign file: recompute
        return None
    return got if all(len(got[n]) == len(pairs[n]) for n in pairs) else None


def save_cached(cache: Path, model: str, fingerprint: str, conc: dict) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    f = _cache_file(cache, model)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(tmp, fingerprint=np.array(fingerprint), model=np.array(model_signature(model)), **conc)
    tmp.replace(f)


def is_model_dir(path: Path) -> bool:
    """A saved gcl model or a sentence-transformers / Hugging Face model directory."""
    return any((path / n).is_file() for n in ("gcl_model.json", "modules.json", "config_sentence_transformers.json"))


def parse_arms(words: list[list[str]]) -> dict[str, list[str]]:
    arms: dict[str, list[str]] = {}
    for group in words:
        head, _, first = group[0].partition("=")
        if not head or not first:
            raise ValueError(f"--arm wants NAME=MODEL[,MODEL...], got {group[0]!r}")
        if head in arms:
            raise ValueError(f"--arm {head} is given twice; list all its models in one --arm")
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
    p.add_argument("--reference", nargs="+", default=[], metavar="ARM",
                   help="arms that every arm is compared with, pair by pair (seed means), with a bootstrap over queries")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the queries")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="JSON file for the figures; the Markdown tables go beside it (.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a key of --config (e.g. --set data.source=synthetic); repeatable")
    args = p.parse_args(argv)
    from gcl.encoders.text import MINILM_ALIASES

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        arms = parse_arms(args.arm)
    except ValueError as e:
        return fail(str(e))

    for name, value, low in (("--train-queries", args.train_queries, 0), ("--bootstrap", args.bootstrap, 1),
                             ("--threads", args.threads, 1)):
        if value < low:
            return fail(f"{name} must be >= {low}, got {value}")
    missing = [f"{a}: {m}" for a, ms in arms.items() for m in ms if m.lower() not in MINILM_ALIASES
               and not is_model_dir(Path(m))]
    if missing:  # checked before any encoding; nothing is fetched from a hub
        return fail("not a saved model directory (no gcl_model.json or modules.json): " + "; ".join(missing))
    unknown = [r for r in args.reference if r not in arms]
    if unknown:
        return fail(f"--reference {', '.join(unknown)} is not an --arm ({', '.join(arms)})")

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
        return fail(str(e))
    pairs = {name: judged_pairs(s.judgments) for name, s in splits.items()}
    result = {"config": args.config, "overrides": list(args.overrides), "train_queries": args.train_queries,
              "edges": EDGES, "bins": LABELS, "reference": args.reference, "bootstrap": args.bootstrap,
              "pairs": {n: len(pr) for n, pr in pairs.items()},
              "queries": {n: int(pr["query_id"].nunique()) for n, pr in pairs.items()},  # queries with a pair
              "judged_queries": {n: int(s.judgments["query_id"].nunique()) for n, s in splits.items()}, "arms": {}}
    mean_conc: dict[str, dict[str, np.ndarray]] = {}  # arm -> split -> per-pair concordance, mean over seeds
    cache = Path(args.out).with_suffix(".cache")  # one .npz of per-pair concordance per model: a re-run skips it
    fingerprint = pairs_fingerprint(pairs, splits)
    for arm, models in arms.items():
        per_seed = []
        conc_sum = {name: np.zeros(len(pr)) for name, pr in pairs.items()}
        for m in models:
            t0 = time.perf_counter()
            conc = load_cached(cache, m, fingerprint, pairs)
            if conc is None:
                try:
                    model = load_model(m)
                except Exception as e:  # noqa: BLE001 - a broken directory of any kind: one line, not a traceback
                    return fail(f"arm {arm}: cannot load model {m}: {type(e).__name__}: {e}")
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
                mean = float(vals.mean())  # NaN for an empty bin: mean and std are then both null
                std = float(vals.std(ddof=1)) if len(vals) > 1 else (math.nan if math.isnan(mean) else 0.0)
                summary[name][lab] = {"pairs": per_seed[0]["splits"][name][lab][0], "mean": mean, "std": std,
                                      "seeds": len(vals)}
        result["arms"][arm] = {"models": per_seed, "summary": summary}
        mean_conc[arm] = {name: v / len(models) for name, v in conc_sum.items()}
    for ref in args.reference:
        for arm in mean_conc:
            for name, pr in pairs.items():
                diff = paired_difference(pr, mean_conc[arm][name], mean_conc[ref][name], args.bootstrap)
                for lab, d in diff.items():
                    result["arms"][arm]["summary"][name][lab].setdefault("vs", {})[ref] = d
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(_null_nan(result), indent=1) + "\n")
    table = "\n".join(markdown(result, ref) for ref in (args.reference or [None]))
    command = "python experiments/pair_order.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.out).with_suffix(".md").write_text(
        "# Concordance of judged pairs by score gap (`experiments/pair_order.py`)\n\n"
        f"Generated by `{command}`. Cells: share of a split's judged pairs (better, worse) that the model scores "
        "in the judged order, ties ½; mean ± std over the arm's models (seeds)"
        + ("; in brackets the difference from the reference arm on the same pairs and its 95 % interval "
           "(bootstrap over queries), one set of tables per reference" if args.reference else "") + ".\n"
        + table + "\n")
    print(table)
    return 0


def _null_nan(x):
    """NaN (an empty bin) as JSON null."""
    if isinstance(x, dict):
        return {k: _null_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_null_nan(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def markdown(result: dict, ref: str | None = None) -> str:
    """One table per split: arms as rows, gap bins as columns (concordance mean ± std over seeds;
    with a reference arm, the difference from it and its 95 % query-bootstrap interval)."""
    lines = [f"\n### Against {ref}\n"] if ref else []
    first = next(iter(result["arms"].values()))["summary"]
    for split, bins in first.items():
        counts = " | ".join(f"{lab} ({bins[lab]['pairs']})" for lab in (*result["bins"], "all"))
        lines += [f"\n**{split}** (pairs per score gap)\n", f"| arm | {counts} |",
                  "|---|" + "---|" * (len(result["bins"]) + 1)]
        for arm, a in result["arms"].items():
            cells = []
            for lab in (*result["bins"], "all"):
                c = a["summary"][split][lab]
                if not c["pairs"]:
                    cells.append("–")
                    continue
                cell = f"{c['mean']:.3f}" + (f" ± {c['std']:.3f}" if c["seeds"] > 1 else "")
                if ref and arm != ref:
                    v = c["vs"][ref]
                    cell += f" ({v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}])"
                cells.append(cell)
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
