"""Random precomputed embeddings for every query and product of a Marqo-shaped table, for
``gcl evaluate --embeddings`` memory runs at scale.

    python benchmarks/make_split_embeddings.py --data /tmp/marqo-10m/pairs.csv --dim 384 --out /tmp/emb-384
    python benchmarks/make_split_embeddings.py --widen /tmp/emb-384 --out /tmp/emb-768

writes, in the layout ``gcl evaluate --embeddings DIR`` reads, ``documents.npy`` (float32, one row
per distinct ``product_id`` of ``--data``, written ``--chunk`` rows at a time, never whole in
memory), ``doc_ids.txt``, ``queries.npy`` and ``query_ids.txt`` (one row per
distinct ``query`` text: ``gcl split`` keys queries by their text). Vectors are standard normal
times a per-row scale in [0.5, 2) (not normalised, so the evaluator's normalisation is exercised),
deterministic for ``--seed``. ``--widen DIR`` instead doubles the width of an existing directory
made by this script: row ``i`` becomes ``[v_i, v_{i+1}]`` (the next row, wrapping), which needs no
random numbers (on a loaded machine, drawing 3 billion normal numbers for a 768-d file is most of
the cost); rows stay distinct. They carry no relevance signal: the metrics of such a run are
chance-level; it measures time and memory only. The ids come from the source table, so the
directory serves every split ``gcl split`` makes of it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def distinct(path: str, column: str) -> list[str]:
    """The distinct values of ``column`` in the CSV ``path``, in order of first appearance."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()})
    col = pacsv.read_csv(path, convert_options=convert).column(column)
    return pc.unique(col).to_pylist()


def write_vectors(path: Path, n: int, dim: int, rng: np.random.Generator, chunk: int) -> None:
    """A ``.npy`` header, then the rows ``chunk`` at a time with plain writes (a memory map's dirty
    pages would count in this process's resident set: 7.9 GB for a 6.2 GiB file)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (n, dim)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            block = rng.standard_normal((m, dim), dtype=np.float32)
            block *= rng.uniform(0.5, 2.0, (m, 1)).astype(np.float32)
            block.tofile(fh)


def widen(src: Path, dst: Path, chunk: int) -> None:
    """``dst`` = ``src`` with each vector followed by the next row's (wrapping), ids copied."""
    import shutil

    for kind, ids in (("documents", "doc_ids.txt"), ("queries", "query_ids.txt")):
        shutil.copyfile(src / ids, dst / ids)
        v = np.load(src / f"{kind}.npy", mmap_mode="r")
        n, dim = v.shape
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                  "shape": (n, 2 * dim)}
        with open(dst / f"{kind}.npy", "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                nxt = np.arange(start + 1, stop + 1) % n
                np.concatenate([v[start:stop], v[nxt]], axis=1).astype(np.float32).tofile(fh)
        print(f"{kind}: {n:,} x {2 * dim} float32 ({n * 2 * dim * 4 / 2**30:.2f} GiB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="pairs.csv from make_marqo_synthetic.py")
    p.add_argument("--widen", type=Path, help="a directory made by this script: write it at twice the width")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=65536, help="rows generated and written at a time")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.widen:
        widen(args.widen, out, args.chunk)
        print(f"wrote {out} in {time.perf_counter() - t0:.0f}s")
        return 0
    if not args.data:
        p.error("--data or --widen is required")
    rng = np.random.default_rng(args.seed)
    for kind, column in (("documents", "product_id"), ("queries", "query")):
        ids = distinct(args.data, column)
        (out / f"{'doc' if kind == 'documents' else 'query'}_ids.txt").write_text(
            "".join(f"{i}\n" for i in ids), encoding="utf-8")
        write_vectors(out / f"{kind}.npy", len(ids), args.dim, rng, args.chunk)
        print(f"{kind}: {len(ids):,} x {args.dim} float32 ({len(ids) * args.dim * 4 / 2**30:.2f} GiB)", flush=True)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
