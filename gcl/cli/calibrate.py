"""``gcl calibrate``: fit a cosine -> expected-grade map on the dev split and save it with the model.

    gcl calibrate --model runs/train/final --data homedepot          # -> runs/train/final/gcl_calibration.json
    gcl calibrate --model minilm --data synthetic --out cal.json --method query

The dev split holds training-pool queries withheld from training (never a test split); see
:mod:`gcl.calibration` for the maths and docs/evaluation.md for how ``gcl search`` /
``gcl serve`` use the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gcl.cli.evaluate import add_data_args, data_config
from gcl.cli.options import check_model, positive_int
from gcl.errors import ConfigError, DataError


def add_parser(sub) -> None:
    from gcl.calibration import CALIBRATION_FILE, METHODS, CalibrationParams

    d = CalibrationParams()  # the defaults live there

    p = sub.add_parser("calibrate", help="fit a calibrated relevance (cosine -> expected grade) on the dev split",
                       description="Fit a monotone map from a model's cosine to the expected judged grade on the dev "
                                   "split (training queries withheld from training) and save it as JSON with the "
                                   "model's fingerprint; gcl search / gcl serve then report a calibrated relevance "
                                   "per hit and accept a min_relevance cut-off.")
    p.add_argument("--model", required=True, help="gcl model dir, sentence-transformers dir or name (e.g. minilm)")
    add_data_args(p)
    p.add_argument("--out", default=None,
                   help=f"calibration file to write (default: MODEL_DIR/{CALIBRATION_FILE}; required when --model "
                        "is a name rather than a directory)")
    p.add_argument("--method", choices=METHODS, default=d.method,
                   help="isotonic (default): one global monotone map of the cosine; query: a per-query affine "
                        "transform from the query's top cosines over the corpus (Cosine Adapter style), then the map")
    p.add_argument("--top-n", type=positive_int, default=d.top_n,
                   help="--method query: top cosines per query that its features read (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="texts encoded per forward pass (default 256)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while encoding")
    p.set_defaults(func=run)


def grade_range(bench) -> tuple[float, float]:
    """Lowest and highest judged grade of the training pool (train and dev splits)."""
    scores = [d.judgments["score"] for d in (bench.train, bench.dev) if d is not None and len(d.judgments)]
    if not scores:
        raise DataError(f"{bench.name} has no training-pool judgments to take the grade range from")
    return float(min(s.min() for s in scores)), float(max(s.max() for s in scores))


def output_path(args) -> Path:
    from gcl.calibration import default_path

    out = Path(args.out) if args.out else default_path(args.model)
    if out is None:
        raise ConfigError(f"--model {args.model} is not a directory, so there is nowhere to save the calibration "
                          "beside it: pass --out FILE")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {out.parent} does not exist")
    return out


def run(args) -> int:
    from gcl.calibration import fit_calibration, judged_pairs
    from gcl.data.sources import load_benchmark
    from gcl.encoders.base import load_model

    check_model(args.model)
    out = output_path(args)
    bench = load_benchmark(data_config(args), announce=lambda m: print(m, file=sys.stderr))
    dev = bench.dev
    if dev is None or len(dev.judgments) == 0:
        raise DataError(f"{bench.name} has no dev split (training queries withheld from training) to calibrate on")
    lo, hi = grade_range(bench)
    model = load_model(args.model)
    top_n = args.top_n if args.method == "query" else 0
    pairs = judged_pairs(model, dev, top_n=top_n, batch_size=args.batch_size, show_progress=not args.no_progress)
    info = {"data": bench.name, "split": "dev", "n_pairs": int(len(pairs["cos"])),
            "n_queries": int(len(dev.queries)), "model": str(args.model)}
    calib = fit_calibration(pairs["cos"], pairs["grade"], fingerprint=model.fingerprint(), grade_range=(lo, hi),
                            method=args.method, top_cosines=pairs.get("top"), query_index=pairs["query_index"],
                            top_n=args.top_n, info=info)
    calib.save(out)
    print(f"calibrated {args.model} ({args.method}) on {info['n_pairs']} judged pairs of {info['n_queries']} dev "
          f"queries of {bench.name}; grades {lo:g}..{hi:g}, {len(calib.knots_x)} knots -> {out}")
    return 0


# ---------------------------------------------------------------------- gcl search
def add_search_args(p) -> None:
    """``gcl search`` options: ``--calibration`` and ``--min-relevance``."""
    from gcl.calibration import CALIBRATION_FILE

    g = p.add_argument_group("calibrated relevance (mode dense; see 'gcl calibrate')")
    g.add_argument("--calibration", default=None, metavar="FILE",
                   help=f"calibration file (default: MODEL_DIR/{CALIBRATION_FILE} when the model has one); each "
                        "hit then shows its calibrated relevance (expected judged grade)")
    g.add_argument("--min-relevance", type=float, default=None, metavar="GRADE",
                   help="keep only hits whose calibrated relevance is at least GRADE (within the calibration's "
                        "grade range; needs a calibration and --mode dense)")


def search_calibration(args, model, model_ref):
    """The calibration ``gcl search`` applies (None: none found and none needed); checks the options."""
    from gcl.calibration import find_calibration

    if args.mode != "dense":
        if args.min_relevance is not None or args.calibration:
            raise ConfigError(f"--min-relevance and --calibration apply to --mode dense (the cosine), "
                              f"not --mode {args.mode}")
        return None
    calib = find_calibration(model, model_ref, args.calibration)
    if args.min_relevance is not None:
        if calib is None:
            raise ConfigError(f"--min-relevance needs a calibration: the model {model_ref} has none; run "
                              "'gcl calibrate --model ...' or pass --calibration FILE")
        calib.check_min_relevance(args.min_relevance, "--min-relevance")
    return calib


def cut_results(calib, results, min_relevance, k):
    """``(results, relevance)``: each query's hits cut at ``min_relevance`` and to ``k``, with their
    calibrated relevance (``relevance`` is None without a calibration)."""
    if calib is None:
        return results, None
    out, rels = [], []
    for hits in results:
        kept, rel = calib.cut(hits, min_relevance)
        out.append(kept[:k])
        rels.append(rel[:k])
    return out, rels
