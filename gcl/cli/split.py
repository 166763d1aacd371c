"""``gcl split``: build the benchmark splits of a dataset and write them in the Marqo-GS layout."""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    from gcl.cli.evaluate import add_data_args

    p = sub.add_parser("split", help="split a dataset by query and by document (Marqo-GS layout)",
                       description="Write train/dev, the four evaluation splits and both corpora.")
    add_data_args(p)
    p.add_argument("--query-frac", type=float, default=0.8, help="fraction of queries for training (default 0.8)")
    p.add_argument("--doc-frac", type=float, default=0.5, help="fraction of documents for the training corpus (default 0.5)")
    p.add_argument("--dev-frac", type=float, default=0.05, help="fraction of training queries withheld as dev (default 0.05)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from gcl.cli.evaluate import data_config
    from gcl.cli.options import check_out_dir
    from gcl.data.arrow_text import prefer_jemalloc_pool
    from gcl.data.sources import load_dataset
    from gcl.data.splits import build_splits

    check_out_dir(args.out, "--out")
    prefer_jemalloc_pool()  # lower peak memory (freed Arrow pages go back to the OS sooner)
    ds, _ = load_dataset(data_config(args), announce=lambda m: print(m, file=sys.stderr))
    splits = build_splits(ds, query_frac_train=args.query_frac, doc_frac_train=args.doc_frac,
                          dev_frac=args.dev_frac, seed=args.split_seed)
    del ds  # the splits hold their own tables: free the source before writing (peak memory)
    manifest = splits.write(args.out)
    print(json.dumps(splits.sizes(), indent=2))
    print(f"written to {args.out} (manifest {manifest})", file=sys.stderr)
    return 0
