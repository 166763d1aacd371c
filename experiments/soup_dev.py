"""Weight soups of two trained arms, scored on the dev split only (issue 12 §5).

    python experiments/soup_dev.py --work runs/budget --a gcl --b gcl-best --seeds 0 1 2 \\
        --alphas 0 0.25 0.5 0.75 1 --out docs/results/soup
    python experiments/soup_dev.py --out docs/results/soup --report          # the table only
    python experiments/soup_dev.py --work runs/budget --a gcl --b gcl-best --seeds 0 1 2 \\
        --alphas 0.5 --save gcl-soup0.5 --out docs/results/soup              # keep the picked soups

For each seed ``s`` and weight ``α`` the soup is ``θ = α θ_A + (1 − α) θ_B`` of
``<work>/<A>-s<s>/final`` and ``<work>/<B>-s<s>/final`` (:mod:`gcl.encoders.soup`; both arms start
from the same MiniLM with the same frozen lower layers, which the soup copies). ``α = 1`` and
``α = 0`` are the arms themselves. Each model is scored three ways, none on a test split:

* dev retrieval: the :class:`~gcl.training.dev_eval.DevEvaluator` of ``configs/homedepot_gcl_fast.yaml``
  with the seed's dev corpus, as the trainer builds it (``α = 1`` repeats the run's own final
  dev figure);
* trained-query order: judged re-rank of 500 training queries (``loss_search.JudgedRerank``),
  the share of the ERR headroom between random and ideal order: what the soup keeps of the
  grade order the grouped arm learns on its queries;
* new-query order: the same for every dev query.

One line per (seed, α) in ``<out>/soup.jsonl``; finished lines are skipped on a re-run.
``--save NAME`` writes each soup to ``<work>/<NAME>-s<seed>/final`` for ``gcl evaluate``, which
should run only for the α a rule written beforehand picks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # loss_search.py sits beside this script

BASE = "configs/homedepot_gcl_fast.yaml"
TRAIN_RERANK = 500


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("runs/budget"))
    p.add_argument("--a", default="gcl", help="arm whose weight is α")
    p.add_argument("--b", default="gcl-best", help="arm whose weight is 1 − α")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--out", type=Path, default=Path("docs/results/soup"))
    p.add_argument("--save", default=None, help="also keep each soup as <work>/<SAVE>-s<seed>/final")
    p.add_argument("--report", action="store_true", help="only write the table from soup.jsonl")
    p.add_argument("--extra", nargs="*", default=[], help="overrides of the base config's data/eval (key=value)")
    args = p.parse_args(argv)
    if any(not 0.0 <= a <= 1.0 for a in args.alphas):
        p.error(f"--alphas must lie in [0, 1], got {args.alphas}")
    if args.save and (len(args.alphas) != 1 or args.alphas[0] in (0.0, 1.0)):
        p.error("--save keeps one soup per seed: give one --alphas value strictly between 0 and 1")
    return args


def model_dir(work: Path, arm: str, seed: int, base=None) -> Path:
    """``<work>/<arm>-s<seed>/final``; with ``base``, the run's own ``config.json`` must have the data,
    dev corpus size and seed the dev evaluation here assumes."""
    d = work / f"{arm}-s{seed}" / "final"
    if not d.is_dir():
        raise SystemExit(f"error: {d}: no such model directory (train the arm first: "
                         f"experiments/results_table.py --arms {arm} --seeds {seed})")
    cfg_file = d.parent / "config.json"
    if base is not None and cfg_file.is_file():
        from dataclasses import asdict

        got = json.loads(cfg_file.read_text())
        want = {"data": asdict(base.data), "dev_corpus_size": base.eval.dev_corpus_size, "seed": seed}
        have = {"data": got.get("data"), "dev_corpus_size": (got.get("eval") or {}).get("dev_corpus_size"),
                "seed": got.get("seed")}
        if have != want:
            raise SystemExit(f"error: {cfg_file}: the run's data, dev corpus size or seed {have} differ from the "
                             f"dev evaluation here {want} (pass the run's settings with --extra)")
    return d


def run(args) -> None:
    from gcl.config import load_config
    from gcl.data.sources import load_benchmark
    from gcl.encoders.model import BiEncoder
    from gcl.encoders.soup import soup
    from gcl.training.config import TrainConfig
    from gcl.training.dev_eval import DevEvaluator
    from loss_search import JudgedRerank

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "soup.jsonl"
    done = {(r["a"], r["b"], r["seed"], r["alpha"]) for r in _records(log)}
    todo = [(s, a) for s in args.seeds for a in args.alphas if (args.a, args.b, s, a) not in done or args.save]
    if not todo:
        return
    base = load_config(TrainConfig, BASE, list(args.extra))
    splits = load_benchmark(base.data)
    devs: dict[int, DevEvaluator] = {}  # the trainer's: its dev corpus fill is drawn with the run's seed
    trained = JudgedRerank(splits.train, TRAIN_RERANK, "train_rerank")
    new = JudgedRerank(splits.dev, 0, "dev_rerank")
    for seed, alpha in todo:
        a, b = model_dir(args.work, args.a, seed, base), model_dir(args.work, args.b, seed, base)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            if alpha in (0.0, 1.0):
                path = a if alpha == 1.0 else b
            else:
                path = Path(tmp) / "soup"
                soup([a, b], path, [alpha, 1.0 - alpha])
            if args.save:
                save(path, args.work / f"{args.save}-s{seed}" / "final", [alpha, 1.0 - alpha])
            if (args.a, args.b, seed, alpha) in done:
                continue
            model = BiEncoder.load(path).eval()
            if seed not in devs:  # built once per seed, not per α
                devs[seed] = DevEvaluator(splits, base.eval, seed=seed)
            rec = {"a": args.a, "b": args.b, "seed": seed, "alpha": alpha, "work": str(args.work),
                   "dev": devs[seed](model), "train_rerank": trained(model), "dev_rerank": new(model)}
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"seed {seed} α {alpha}: dev nDCG@10 {rec['dev']['ndcg@10']:.4f} ERR {rec['dev']['err']:.4f}; "
              f"trained-query order {rec['train_rerank']['share']['err']:.1%}, new-query order "
              f"{rec['dev_rerank']['share']['err']:.1%} ({rec['seconds']:.0f} s)", flush=True)


def save(path: Path, keep: Path, weights: list[float]) -> None:
    """Copy the soup at ``path`` to ``keep`` (beside it, then renamed); a soup already there must have
    the same weights (an earlier ``--save`` of another α under the same name is an error)."""
    if keep.exists():
        got = json.loads((keep / "gcl_soup.json").read_text())["weights"] if (keep / "gcl_soup.json").is_file() else None
        if got is None or not np.allclose(got, weights):
            raise SystemExit(f"error: {keep}: holds another model (soup weights {got}, asked {weights}); "
                             "remove it or --save under another name")
        return
    keep.parent.mkdir(parents=True, exist_ok=True)
    tmp = keep.parent / f".{keep.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(path, tmp)
    tmp.rename(keep)


def _records(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []


def report(out: Path) -> str:
    recs = _records(out / "soup.jsonl")
    if not recs:
        raise SystemExit(f"error: {out / 'soup.jsonl'}: no records yet")
    lines = ["Dev split only. θ = α·θ_A + (1 − α)·θ_B; mean over seeds (per seed in brackets). "
             "Orders: share of the ERR headroom of the judged re-rank (random → ideal order).", "",
             "| A | B | α | seeds | dev nDCG@10 | dev ERR | trained-query order | new-query order |",
             "|---|---|---:|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["a"], r["b"], r["alpha"]), []).append(r)
    for (a, b, alpha), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])):
        rs = sorted(rs, key=lambda r: r["seed"])

        def cell(get, fmt):
            vals = [get(r) for r in rs]
            return f"{format(np.mean(vals), fmt)} ({', '.join(format(v, fmt) for v in vals)})"

        lines.append(f"| {a} | {b} | {alpha:g} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{cell(lambda r: r['dev']['ndcg@10'], '.4f')} | {cell(lambda r: r['dev']['err'], '.4f')} | "
                     f"{cell(lambda r: 100 * r['train_rerank']['share']['err'], '.1f')} | "
                     f"{cell(lambda r: 100 * r['dev_rerank']['share']['err'], '.1f')} |")
    lines += ["", f"Regenerate: `python experiments/soup_dev.py --work {recs[0]['work']} --a A --b B --seeds ... "
                  f"--alphas ... --out {out}`; table: `--out {out} --report`."]
    text = "\n".join(lines) + "\n"
    (out / "soup.md").write_text(text)
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.report:
        run(args)
    print(report(args.out))


if __name__ == "__main__":
    main()
