"""gcl evaluate --compare: paired difference, randomisation test and bootstrap CI over queries."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
import pytest

from gcl.cli.main import main
from gcl.evaluation.compare import bootstrap_ci, compare_runs, paired_compare, randomisation_p
from gcl.evaluation.settings import CompareSettings


def exact_sign_flip_p(diff: np.ndarray) -> float:
    """Naive reference: every one of the 2^n sign vectors, two-sided."""
    observed = abs(diff.mean())
    hits = sum(abs(np.dot(s, diff)) / len(diff) >= observed - 1e-12 for s in product((-1, 1), repeat=len(diff)))
    return hits / 2 ** len(diff)


def naive_bootstrap(diff: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n):
        sample = [diff[rng.integers(len(diff))] for _ in range(len(diff))]
        means.append(sum(sample) / len(sample))
    return tuple(np.quantile(means, [0.025, 0.975]))


def test_identical_runs_differ_by_zero_with_p_one():
    a = np.array([0.1, 0.5, 0.9, 0.3, 0.0])
    r = paired_compare(a, a.copy(), split="s", metric="ndcg@10")
    assert r.difference == 0.0 and r.p_value == 1.0 and (r.ci_low, r.ci_high) == (0.0, 0.0)


def test_a_run_better_on_every_query_has_a_small_p():
    a = np.linspace(0.1, 0.6, 12)
    b = a + np.linspace(0.05, 0.2, 12)
    r = paired_compare(a, b, settings=CompareSettings(n_permutations=20000, n_bootstrap=2000, seed=1))
    assert r.difference == pytest.approx(np.mean(b - a))
    assert exact_sign_flip_p(b - a) == pytest.approx(2 / 2**12)  # only all-plus and all-minus reach it
    assert r.p_value < 0.002
    assert 0 < r.ci_low < r.difference < r.ci_high
    worse = paired_compare(b, a, settings=CompareSettings(n_permutations=20000, n_bootstrap=2000, seed=1))
    assert worse.difference == pytest.approx(-r.difference) and worse.p_value == r.p_value  # two-sided


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_randomisation_p_matches_exhaustive_enumeration(seed):
    diff = np.random.default_rng(seed).normal(0.02, 0.1, size=10)
    exact = exact_sign_flip_p(diff)
    n = 20000
    got = randomisation_p(diff, n, np.random.default_rng(seed))
    assert got == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / n) + 1 / n)


def test_bootstrap_ci_matches_a_naive_loop():
    diff = np.random.default_rng(5).normal(0.03, 0.2, size=40)
    lo, hi = bootstrap_ci(diff, 4000, np.random.default_rng(7))
    nlo, nhi = naive_bootstrap(diff, 4000, 8)  # another seed: the intervals agree to Monte Carlo error
    se = diff.std() / np.sqrt(len(diff))
    assert lo == pytest.approx(nlo, abs=0.15 * se) and hi == pytest.approx(nhi, abs=0.15 * se)
    assert lo == pytest.approx(diff.mean() - 1.96 * se, abs=0.3 * se)  # close to the normal interval


def write_run_dir(path, values: dict[str, dict[str, list[float]]], queries: list[str]):
    path.mkdir()
    for split, metrics in values.items():
        pd.DataFrame(metrics, index=pd.Index(queries, name="query_id")).to_csv(path / f"{split}_per_query.csv")
    return path


def test_compare_runs_pairs_queries_by_id_and_cli_prints_and_writes(tmp_path, capsys):
    queries = [f"q{i}" for i in range(10)]
    a = write_run_dir(tmp_path / "a", {"in_domain": {"ndcg@10": list(np.linspace(0, 0.9, 10)), "err": [0.5] * 10}}, queries)
    b_vals = {"ndcg@10": list(np.linspace(0, 0.9, 10) + 0.1), "err": [0.5] * 10}
    b = tmp_path / "b"
    b.mkdir()
    pd.DataFrame(b_vals, index=pd.Index(queries, name="query_id")).iloc[::-1].to_csv(b / "in_domain_per_query.csv")
    results = {r.metric: r for r in compare_runs(a, b)}
    assert results["ndcg@10"].difference == pytest.approx(0.1)  # rows in another order: paired by id
    assert results["err"].difference == 0.0 and results["err"].p_value == 1.0
    assert main(["evaluate", "--compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--permutations", "500",
                 "--bootstrap", "500"]) == 0
    out = capsys.readouterr().out
    assert "in_domain" in out and "+0.1000" in out
    assert (tmp_path / "cmp" / "compare.json").exists()


def test_compare_refuses_different_queries_with_one_error_line(tmp_path, capsys):
    a = write_run_dir(tmp_path / "a", {"in_domain": {"ndcg@10": [0.1, 0.2]}}, ["q1", "q2"])
    b = write_run_dir(tmp_path / "b", {"in_domain": {"ndcg@10": [0.1, 0.2]}}, ["q1", "q3"])
    assert main(["evaluate", "--compare", str(a), str(b), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different test queries" in err[0] and "Traceback" not in err[0]
    assert main(["evaluate", "--compare", str(a), str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_randomisation_p_agrees_with_ranx_when_installed():
    ranx_tests = pytest.importorskip("ranx.statistical_tests")  # not a dependency: skipped without it
    n = 20000
    for seed in (1, 5):
        rng = np.random.default_rng(seed)
        a = rng.uniform(0, 1, 300)
        b = np.clip(a + rng.normal(0.005 * seed, 0.15, 300), 0, 1)
        ours = randomisation_p(b - a, n, np.random.default_rng(seed))
        theirs, _ = ranx_tests.fisher_randomization_test(a, b, n, 0.05, seed)
        assert ours == pytest.approx(theirs, abs=4 * np.sqrt(2 * ours * (1 - ours) / n) + 2 / n)
