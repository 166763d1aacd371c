"""Paired comparison of two evaluated runs over the same test queries.

Input: two output directories of ``gcl evaluate`` (``--out``); each holds one
``<split>_per_query.csv`` per split (a ``query_id`` column, one column per metric). For every
split and metric present in both, with ``x_q`` and ``y_q`` the values of run A and run B on query
``q`` (the queries must be the same in both) and ``d_q = y_q - x_q``:

* **difference**: :math:`\\bar d = \\frac{1}{n} \\sum_q d_q` (B - A);
* **randomisation test** (paired, two-sided; Fisher's sign-flip test, as ``ranx.compare``'s
  ``"fisher"``): under the null hypothesis A and B are exchangeable on each query, so each
  ``d_q`` keeps or flips its sign with probability 1/2. With ``R`` seeded draws of signs
  ``e_{r,q}``,

  .. math:: p = \\frac{1 + \\#\\{r : |\\frac{1}{n}\\sum_q e_{r,q} d_q| \\ge |\\bar d|\\}}{1 + R}

  (identical runs: ``p = 1``; the smallest possible ``p`` is ``1 / (1 + R)``);
* **bootstrap 95 % confidence interval** of :math:`\\bar d`: the 2.5 and 97.5 percentiles of the
  mean difference over ``B`` resamples of the queries with replacement (percentile bootstrap).

Both draws come from ``numpy.random.default_rng(seed)``; the same inputs and settings give the
same numbers. A comparison is the unit of the test: with many metrics and splits, some
``p < 0.05`` are expected by chance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gcl.errors import DataError
from gcl.evaluation.settings import CompareSettings

PER_QUERY_SUFFIX = "_per_query.csv"
QUERY_COLUMN = "query_id"
_CHUNK = 1000  # draws per block: bounds memory to _CHUNK x n_queries floats


@dataclass(frozen=True)
class PairedResult:
    split: str
    metric: str
    n_queries: int
    mean_a: float
    mean_b: float
    difference: float  # mean of B - A
    p_value: float
    ci_low: float
    ci_high: float


def randomisation_p(diff: np.ndarray, n_permutations: int, rng: np.random.Generator) -> float:
    """Two-sided paired sign-flip test of ``mean(diff) == 0`` (see the module docstring)."""
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    if n == 0:
        return float("nan")
    observed = abs(diff.mean())
    tol = 1e-12 * max(1.0, np.abs(diff).max())  # float sums of the same terms in another order
    hits, left = 0, n_permutations
    while left:
        r = min(left, _CHUNK)
        signs = rng.integers(0, 2, size=(r, n), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ diff) / n
        hits += int(np.count_nonzero(means >= observed - tol))
        left -= r
    return (1 + hits) / (1 + n_permutations)


def bootstrap_ci(diff: np.ndarray, n_bootstrap: int, rng: np.random.Generator, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(diff)``, resampling queries with replacement."""
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    if n == 0:
        return float("nan"), float("nan")
    means, left = [], n_bootstrap
    while left:
        r = min(left, _CHUNK)
        means.append(diff[rng.integers(0, n, size=(r, n))].mean(axis=1))
        left -= r
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(np.concatenate(means), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_compare(
    a: np.ndarray, b: np.ndarray, *, split: str = "", metric: str = "", settings: CompareSettings | None = None
) -> PairedResult:
    """Difference, randomisation p-value and bootstrap CI of ``b - a`` (aligned per query)."""
    settings = settings or CompareSettings()
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of one length; got {a.shape} and {b.shape}")
    diff = b - a
    rng = np.random.default_rng(settings.seed)
    p = randomisation_p(diff, settings.n_permutations, rng)
    lo, hi = bootstrap_ci(diff, settings.n_bootstrap, rng, settings.confidence)
    return PairedResult(split, metric, len(diff), float(a.mean()), float(b.mean()), float(diff.mean()), p, lo, hi)


def read_per_query(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """``{split: per-query frame indexed by query_id}`` from a ``gcl evaluate`` output directory."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError("not a directory (give the --out directory of a gcl evaluate run)", source=str(root))
    out = {}
    for path in sorted(root.glob(f"*{PER_QUERY_SUFFIX}")):
        frame = pd.read_csv(path, dtype={QUERY_COLUMN: str}, keep_default_na=False)
        if QUERY_COLUMN not in frame.columns:
            raise DataError(f"no {QUERY_COLUMN!r} column (columns: {list(frame.columns)})", source=str(path))
        if frame[QUERY_COLUMN].duplicated().any():
            dup = frame[QUERY_COLUMN][frame[QUERY_COLUMN].duplicated()].iloc[0]
            raise DataError(f"query {dup!r} appears twice", source=str(path))
        frame = frame.set_index(QUERY_COLUMN)
        try:
            frame = frame.astype(np.float64)
        except ValueError as exc:
            raise DataError(f"non-numeric metric value: {exc}", source=str(path)) from None
        out[path.name[: -len(PER_QUERY_SUFFIX)]] = frame
    if not out:
        raise DataError(f"no <split>{PER_QUERY_SUFFIX} files (give the --out directory of a gcl evaluate run)",
                        source=str(root))
    return out


def compare_runs(run_a: str | Path, run_b: str | Path, settings: CompareSettings | None = None) -> list[PairedResult]:
    """Every split and metric of both runs, compared query by query (B - A)."""
    settings = settings or CompareSettings()
    a_splits, b_splits = read_per_query(run_a), read_per_query(run_b)
    common = [s for s in a_splits if s in b_splits]
    if not common:
        raise DataError(f"the two runs share no split: {sorted(a_splits)} vs {sorted(b_splits)}", source=str(run_b))
    results = []
    for split in common:
        fa, fb = a_splits[split], b_splits[split]
        if set(fa.index) != set(fb.index):
            only_a, only_b = fa.index.difference(fb.index), fb.index.difference(fa.index)
            example = (only_a if len(only_a) else only_b)[0]
            raise DataError(
                f"split {split!r}: the runs have different test queries ({len(only_a)} only in A, {len(only_b)} "
                f"only in B, e.g. {example!r}); a paired test needs the same queries (same data, protocol, "
                "--n-queries and --split-seed)", source=str(run_b))
        fb = fb.loc[fa.index]
        for metric in (m for m in fa.columns if m in fb.columns):
            results.append(paired_compare(fa[metric].to_numpy(), fb[metric].to_numpy(), split=split, metric=metric,
                                          settings=settings))
    return results


def compare_table(results: list[PairedResult]) -> str:
    head = f"{'split':<14}{'metric':<12}{'n':>6}{'A':>9}{'B':>9}{'B - A':>10}{'p':>9}   95% CI"
    lines = [head, "-" * (len(head) + 12)]
    for r in results:
        lines.append(f"{r.split:<14}{r.metric:<12}{r.n_queries:>6}{r.mean_a:>9.4f}{r.mean_b:>9.4f}"
                     f"{r.difference:>+10.4f}{r.p_value:>9.4f}   [{r.ci_low:+.4f}, {r.ci_high:+.4f}]")
    return "\n".join(lines)


def write_compare(path: str | Path, results: list[PairedResult], *, run_a: str, run_b: str,
                  settings: CompareSettings) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"run_a": str(run_a), "run_b": str(run_b), "settings": asdict(settings),
               "comparisons": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=2))
    return path
