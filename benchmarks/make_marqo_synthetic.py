"""Generate a synthetic judgment table in the Marqo-GS-10M shape, for data-path benchmarks.

One CSV with the Marqo split-CSV columns (``query, product_id, position, title, image_local,
pair_id, score_linear, score_reciprocal, no_score, query_id``), ``--pairs`` rows, about
``--per-query`` products per query (Marqo-GS-10M: ~100) and ``pairs / --judgments-per-doc``
products (each product judged about twice, as in Marqo-GS-10M's millions of products). Within a
query, products are distinct and ``score_linear`` falls linearly with ``position``
(``(k - position + 1) / k`` for a query with ``k`` products), ``score_reciprocal = 1/position``.
Titles and queries are built from small vocabularies ("acme modern red cotton shirt 1234");
query texts are unique, so the text can serve as the query id, as in the reference protocol.
A product's title is the same in every row. Deterministic for a seed; vectorised (10M rows take
about a minute to generate and write).

    python benchmarks/make_marqo_synthetic.py --pairs 1000000 --out /tmp/marqo-1m
    python benchmarks/make_marqo_synthetic.py --pairs 10000000 --out /tmp/marqo-10m   # ~1.3 GB

writes ``<out>/pairs.csv`` (and ``pairs.parquet`` with ``--parquet``). Read it with
``gcl split --data <out>/pairs.csv --query-col query --doc-id-col product_id
--score-col score_linear --doc-fields title,image_local`` or ``benchmarks/bench_data_scale.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

BRANDS = "acme nordic urban atlas vista peak summit harbor willow cedar orbit prime".split()
STYLES = "modern classic rustic slim deluxe compact outdoor vintage sport basic".split()
COLOURS = "red blue green black white grey brown beige navy pink yellow silver".split()
MATERIALS = "cotton wool leather steel oak bamboo glass linen denim ceramic nylon".split()
TYPES = ("shirt chair lamp table boots jacket sofa kettle backpack desk rug mirror shelf "
         "vase blanket sneakers dress watch pillow curtain").split()
COLUMNS = ("query", "product_id", "position", "title", "image_local", "pair_id", "score_linear",
           "score_reciprocal", "no_score", "query_id")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=1_000_000, help="judgment rows (default 1,000,000)")
    p.add_argument("--per-query", type=int, default=100, help="mean products per query (default 100)")
    p.add_argument("--judgments-per-doc", type=float, default=2.0, help="pairs / products (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parquet", action="store_true", help="also write pairs.parquet")
    p.add_argument("--out", required=True, help="output directory")
    return p.parse_args(argv)


def _words(rng: np.random.Generator, vocab: list[str], n: int) -> np.ndarray:
    return np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), n)]


def _join(*parts: np.ndarray) -> np.ndarray:
    """Element-wise ``" ".join`` of object arrays (vectorised through pandas ``str.cat``)."""
    import pandas as pd

    first = pd.Series(parts[0], dtype=object).astype(str)
    return first.str.cat([pd.Series(p, dtype=object).astype(str) for p in parts[1:]], sep=" ").to_numpy(dtype=object)


def query_sizes(rng: np.random.Generator, pairs: int, per_query: int) -> np.ndarray:
    """Products per query: uniform in [per_query/2, 3*per_query/2], summing to ``pairs``."""
    n_queries = max(1, round(pairs / per_query))
    sizes = rng.integers(max(1, per_query // 2), per_query + per_query // 2 + 1, n_queries)
    sizes = np.maximum(1, np.round(sizes * pairs / sizes.sum()).astype(np.int64))
    sizes[-1] += pairs - sizes.sum()  # exact total
    while sizes[-1] < 1:  # rounding overshoot: take from the largest
        i = int(np.argmax(sizes[:-1]))
        sizes[i] -= 1
        sizes[-1] += 1
    return sizes


def make_table(pairs: int, per_query: int = 100, judgments_per_doc: float = 2.0, seed: int = 0):
    """The synthetic table as a ``pyarrow.Table`` with :data:`COLUMNS`."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    sizes = query_sizes(rng, pairs, per_query)
    n_q = len(sizes)
    n_docs = max(int(sizes.max()), int(round(pairs / judgments_per_doc)))

    # products: id, title, image path (a product's title is the same wherever it appears)
    titles = _join(_words(rng, BRANDS, n_docs), _words(rng, STYLES, n_docs), _words(rng, COLOURS, n_docs),
                   _words(rng, MATERIALS, n_docs), _words(rng, TYPES, n_docs), rng.integers(0, 10_000, n_docs))
    doc_ids = np.char.mod("B%08d", np.arange(n_docs))

    # queries: unique texts from a mixed-radix code over the vocabularies
    radix = (len(COLOURS), len(MATERIALS), len(TYPES), 1000)
    codes = rng.choice(int(np.prod(radix)), size=n_q, replace=False)
    digits = []
    for r in reversed(radix):
        digits.append(codes % r)
        codes = codes // r
    num, typ, mat, col = digits
    q_text = _join(np.asarray(COLOURS, dtype=object)[col], np.asarray(MATERIALS, dtype=object)[mat],
                   np.asarray(TYPES, dtype=object)[typ], num)

    # rows: query q gets products offset_q + j * stride_q (mod n_docs), j < k_q: distinct per query
    q_of_row = np.repeat(np.arange(n_q), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.arange(pairs) - np.repeat(starts, sizes) + 1
    stride = rng.integers(1, max(2, n_docs // int(sizes.max()) + 1), n_q)
    offset = rng.integers(0, n_docs, n_q)
    doc_of_row = (offset[q_of_row] + (position - 1) * stride[q_of_row]) % n_docs
    k = sizes[q_of_row]
    return pa.table({
        "query": pa.array(q_text[q_of_row], pa.string()),
        "product_id": pa.array(doc_ids[doc_of_row]),
        "position": pa.array(position, pa.int64()),
        "title": pa.array(titles[doc_of_row], pa.string()),
        "image_local": pa.array(np.char.add(np.char.add("images/", doc_ids[doc_of_row]), ".jpg")),
        "pair_id": pa.array(np.arange(pairs), pa.int64()),
        "score_linear": pa.array((k - position + 1) / k, pa.float64()),
        "score_reciprocal": pa.array(1.0 / position, pa.float64()),
        "no_score": pa.array(np.ones(pairs, dtype=np.int64)),
        "query_id": pa.array(q_of_row, pa.int64()),
    })


def main(argv: list[str] | None = None) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = make_table(args.pairs, args.per_query, args.judgments_per_doc, args.seed)
    t1 = time.perf_counter()
    pacsv.write_csv(table, out / "pairs.csv")
    if args.parquet:
        pq.write_table(table, out / "pairs.parquet")
    t2 = time.perf_counter()
    n_q = len(set(table.column("query_id").unique().to_pylist()))
    n_d = len(table.column("product_id").unique())
    print(f"{table.num_rows} pairs, {n_q} queries, {n_d} judged products -> {out}/pairs.csv "
          f"(generate {t1 - t0:.1f}s, write {t2 - t1:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
