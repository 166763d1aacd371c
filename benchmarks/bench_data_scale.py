"""Data path at Marqo-GS scale: ``read_table`` against a raw pyarrow parse, and ``gcl split``.

On a table made by ``benchmarks/make_marqo_synthetic.py`` (Marqo split-CSV columns), each step
runs in a fresh Python process so that its peak resident set size (``ru_maxrss``) is its own:

* ``raw``     -- ``pyarrow.csv.read_csv`` of the columns ``read_table`` reads, all as strings
  (the parse alone: the floor for any reader);
* ``floor``   -- ``raw`` plus Arrow's ``dictionary_encode`` of the document ids (one chunk): the
  least any reader that numbers the documents must do (hashing millions of distinct ids is
  single-threaded in Arrow);
* ``read``    -- ``gcl.data.read_table`` (parse, validation, queries/documents/judgments tables);
* ``phases``  -- ``read_table`` + ``build_splits`` + ``BenchmarkSplits.write``, timed apart;
* ``split``   -- the command users run, ``python -m gcl split ... --out <tmp>``, wall time and
  peak RSS of the whole process (imports included).

    python benchmarks/make_marqo_synthetic.py --pairs 1000000 --out /tmp/marqo-1m
    python benchmarks/bench_data_scale.py --data /tmp/marqo-1m/pairs.csv --repeat 3
    python benchmarks/make_marqo_synthetic.py --pairs 10000000 --out /tmp/marqo-10m
    python benchmarks/bench_data_scale.py --data /tmp/marqo-10m/pairs.csv --repeat 1

Times are the best of ``--repeat`` runs (the steps interleaved); they depend on the machine and its load, which the
header prints (load average before and after, and after each step). Each step also reports its
process's CPU time (``cpu_s``: user + system, imports included; ``step_cpu_s``: the step alone, in
the child steps): on a loaded machine the steadier figure. pyarrow's CSV parse uses threads, so a
step's CPU time can exceed its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = ("raw", "floor", "read", "phases", "split")
COLUMNS = dict(query_col="query", doc_id_col="product_id", score_col="score_linear",
               doc_fields=["title", "image_local"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="pairs.csv from make_marqo_synthetic.py")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--repeat", type=int, default=1, help="runs per step; the best time is kept")
    p.add_argument("--child", choices=STEPS[:3], help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(step: str, data: str, out: str | None) -> dict:
    """One step in this process; returns its times (imports excluded) and peak RSS."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from gcl.data import build_splits, read_table

    t0, c0 = time.perf_counter(), time.process_time()
    if step in ("raw", "floor"):
        names = ["query", "product_id", "score_linear", "title", "image_local"]
        convert = pacsv.ConvertOptions(include_columns=names, column_types={c: pa.string() for c in names},
                                       strings_can_be_null=False)
        table = pacsv.read_csv(data, convert_options=convert)
        result = {"rows": table.num_rows}
        if step == "floor":
            import pyarrow.compute as pc

            result["docs"] = len(pc.dictionary_encode(table["product_id"].combine_chunks()).dictionary)
        return {"seconds": time.perf_counter() - t0, "step_cpu_s": time.process_time() - c0, **result,
                "peak_rss_mib": _peak_mib()}
    ds = read_table(data, **COLUMNS)
    t1 = time.perf_counter()
    result = {"read_s": t1 - t0, "rows": len(ds.judgments), "queries": len(ds.queries), "docs": len(ds.documents)}
    if step == "phases":
        splits = build_splits(ds, seed=0)
        del ds  # as gcl split does: the splits hold their own tables
        t2 = time.perf_counter()
        splits.write(out)
        t3 = time.perf_counter()
        result |= {"build_s": t2 - t1, "write_s": t3 - t2}
    result |= {"seconds": time.perf_counter() - t0, "step_cpu_s": time.process_time() - c0, "peak_rss_mib": _peak_mib()}
    return result


def run_child(args: list[str]) -> tuple[float, float, dict]:
    """Run ``python args...``: wall seconds, peak RSS (MiB) of that process, its JSON output
    (plus ``cpu_s``, the process's user + system CPU seconds, imports included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err.decode()[-2000:]}")
    text = out.decode().strip().splitlines()
    try:
        payload = json.loads(text[-1]) if text else {}
    except json.JSONDecodeError:
        payload = {}
    payload["cpu_s"] = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024, payload


def header(data: str) -> str:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    size = Path(data).stat().st_size / 2**20
    return (f"machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
            f"load average {load}\nsoftware: Python {platform.python_version()}, numpy {np.__version__}, "
            f"pandas {pd.__version__}, pyarrow {pa.__version__}\ndata: {data} ({size:.0f} MiB)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.out)))
        return 0
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    print(header(args.data), flush=True)
    me = str(Path(__file__).resolve())
    best: dict[str, tuple[float, float, dict]] = {}
    walls: dict[str, list[float]] = {step: [] for step in steps}
    for _ in range(args.repeat):  # steps interleaved, so a change of load hits them alike
        for step in steps:
            tmp = tempfile.mkdtemp(prefix="gcl-bench-split-")
            try:
                if step == "split":
                    cli = ["-m", "gcl", "split", "--data", args.data, "--out", f"{tmp}/out", "--query-col", "query",
                           "--doc-id-col", "product_id", "--score-col", "score_linear", "--doc-fields", "title,image_local"]
                    wall, rss, payload = run_child(cli)
                    payload = {"seconds": wall, "cpu_s": payload["cpu_s"]}
                else:
                    wall, rss, payload = run_child([me, "--child", step, "--data", args.data, "--out", f"{tmp}/out"])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            walls[step].append(payload["seconds"])
            if step not in best or payload["seconds"] < best[step][2]["seconds"]:
                best[step] = (wall, rss, payload)
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"  {step}: {payload['seconds']:.2f} s (process CPU {payload['cpu_s']:.2f} s), peak RSS {rss:.0f} MiB, "
                  f"load average {load}", flush=True)
    print("\nstep      seconds   peak RSS MiB   detail")
    for step, (wall, rss, payload) in best.items():
        detail = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in payload.items() if k != "seconds"}
        print(f"{step:<8}{payload['seconds']:>9.2f}{rss:>15.0f}   {detail}")
    for base in ("raw", "floor"):
        if base in best and "read" in best:
            r, w = best["read"][2], best[base][2]
            paired = sorted(a / b for a, b in zip(walls["read"], walls[base]))
            median = statistics.median(paired)
            print(f"\nread_table / {base}: {r['seconds'] / w['seconds']:.1f}x wall (best over best), "
                  f"{r['step_cpu_s'] / w['step_cpu_s']:.1f}x CPU (both steps without imports); per repeat "
                  f"(the two run back to back) median {median:.1f}x, range {paired[0]:.1f}-{paired[-1]:.1f}x")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
