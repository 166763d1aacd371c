"""``gcl soup``: the weighted average of saved models' weights, one model that encodes at the
cost of one of them (:mod:`gcl.encoders.soup`)."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("soup", help="average the weights of models fine-tuned from the same start (a model soup)",
                       description="Write theta = sum_i a_i theta_i over MODEL directories of one architecture "
                                   "(gcl train's final/ or best/, or sentence-transformers directories): tensors "
                                   "equal in all of them are copied, so frozen lower layers stay exact.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="two or more saved model directories")
    p.add_argument("--weights", type=float, nargs="+", default=None,
                   help="one non-negative weight per model, normalised to sum to 1 (default: uniform)")
    p.add_argument("--out", required=True, help="new or empty directory for the soup")
    p.set_defaults(func=run)


def run(args) -> int:
    from gcl.cli.options import check_out_dir
    from gcl.encoders.soup import soup

    check_out_dir(args.out, "--out")
    s = soup(args.models, args.out, args.weights)
    print(f"wrote {args.out}: {s['averaged_tensors']} tensors averaged, {s['copied_tensors']} equal in every model "
          f"copied; weights " + ", ".join(f"{w:.4g}" for w in s["weights"]), file=sys.stderr)
    return 0
