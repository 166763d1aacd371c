"""``evaluate_model``: a saved model on the benchmark's test splits, with typed arguments.

What ``gcl evaluate --model DIR`` does with its defaults (dense retrieval, reference protocol,
document-embedding cache), callable from Python and from ``gcl train --evaluate`` without going
through the command line. ``evaluate_splits`` is the loop over splits that both share.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from gcl.data.splits import EVAL_SPLITS
from gcl.errors import DataError


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def evaluate_splits(bench, retriever, protocol, names: Sequence[str] = EVAL_SPLITS, *,
                    score: Callable | None = None, skip_empty: bool = True, announce: Callable[[str], None] = _stderr):
    """``(results, tasks)`` of ``retriever`` on the splits ``names`` of ``bench``.

    ``score(task, retriever, protocol)`` scores one split (default
    :func:`gcl.evaluation.evaluator.evaluate_task`). A split without judgments is skipped with a
    message when ``skip_empty``, else a :class:`DataError`; no split at all is a DataError.
    """
    from gcl.evaluation.evaluator import evaluate_task, prepare_task

    score = score or evaluate_task
    results, tasks = [], []
    for name in names:
        t0 = time.perf_counter()
        split = bench.eval_split(name)
        if len(split.judgments) == 0:  # a small dataset can leave a split empty
            if not skip_empty:
                raise DataError(f"split {name!r} has no judgments to evaluate (too few queries or documents to split?)")
            announce(f"[{name}] skipped: no judgments (too few queries or documents for this split)")
            continue
        task = prepare_task(split, protocol, name=name)
        res = score(task, retriever, protocol)
        announce(f"[{name}] {res.n_queries} queries over {res.n_documents} documents in {time.perf_counter() - t0:.1f}s")
        results.append(res)
        tasks.append(task)
    if not results:
        raise DataError(f"no split of {bench.name} has judgments to evaluate")
    return results, tasks


def evaluate_model(model_dir: str | Path, data, out_dir: str | Path, *, protocol=None, batch_size: int = 256,
                   cache_dir: str | Path | None = None, use_cache: bool = True, show_progress: bool = True,
                   announce: Callable[[str], None] = _stderr, device: str = "cpu") -> Path:
    """Evaluate the model at ``model_dir`` on every test split of ``data`` (a
    :class:`gcl.data.config.DataConfig`); write ``results.json`` / ``results.csv`` / per-query CSVs
    under ``out_dir``, print the table, and return ``out_dir``.

    ``protocol``: a :class:`gcl.evaluation.evaluator.Protocol` (default: the reference protocol).
    ``cache_dir``: the document-embedding cache (default :func:`gcl.embedding_cache.default_cache_dir`;
    none when ``use_cache`` is False). ``device``: where the model encodes.
    """
    from gcl.data.sources import load_benchmark
    from gcl.embedding_cache import default_cache_dir
    from gcl.encoders.base import load_model
    from gcl.evaluation.evaluator import Protocol, results_table, write_results
    from gcl.evaluation.retrievers import DenseRetriever

    protocol = protocol or Protocol()
    bench = load_benchmark(data, announce=announce)
    label = str(model_dir)
    from gcl.training.frozen_reuse import use_cache_dir

    model = load_model(label, device=device)
    use_cache_dir(model, (cache_dir or default_cache_dir()) if use_cache else None)  # stored lower-layer outputs
    retriever = DenseRetriever(model, batch_size=batch_size, show_progress=show_progress,
                               cache_dir=(cache_dir or default_cache_dir()) if use_cache else None)
    results, tasks = evaluate_splits(bench, retriever, protocol, announce=announce)
    if retriever.cache_dir is not None:
        announce(f"[cache] {retriever.encoded_documents} documents encoded, the others read from {retriever.cache_dir}")
    meta = {"model": label, "mode": "retrieval", "data": bench.describe(),
            "protocol": protocol.__dict__ | {"metrics": list(protocol.metrics)}}
    out = write_results(out_dir, results, tasks, meta=meta)
    print(f"\n{label} on {bench.name} ({protocol.name} protocol)")
    print(results_table(results))
    print(f"\nresults written to {out}/results.json and results.csv")
    return out
