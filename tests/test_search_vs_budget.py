"""experiments/search_vs_budget.py: means per column, seeds counted once, ranks against a naive ρ."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import search_vs_budget as svb  # noqa: E402


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _search(arm, seed, ndcg, err):
    return {"arm": arm, "seed": seed, "history": [{"step": 1, "dev/ndcg@10": 0.0, "dev/err": 0.0},
                                                  {"step": 2, "dev/ndcg@10": ndcg, "dev/err": err}]}


def _budget(arm, seed, first, last):
    curve = [{"step": 437, "ndcg@10": first[0], "err": first[1]},
             {"step": 874, "ndcg@10": 0.9, "err": 0.9},
             {"step": 3496, "ndcg@10": last[0], "err": last[1]}]
    return {"arm": arm, "seed": seed, "dev": {"curve": curve}}


def _naive_rho(a, b):
    n = len(a)
    ra = {i: r for r, i in enumerate(sorted(range(n), key=lambda i: a[i]))}
    rb = {i: r for r, i in enumerate(sorted(range(n), key=lambda i: b[i]))}
    return 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


@pytest.fixture
def files(tmp_path):
    s1 = _write(tmp_path / "s1.jsonl", [_search("gcl", 0, 0.50, 0.40), _search("gcl", 1, 0.60, 0.44),
                                         _search("gcl-random", 0, 0.70, 0.30), _search("binary-thresholded", 0, 0.40, 0.20),
                                         _search("not-in-budget", 0, 0.99, 0.99)])
    # the weight search repeats gcl seed 1 (same run): counted once; adds seed 2
    s2 = _write(tmp_path / "s2.jsonl", [_search("gcl", 1, 0.60, 0.44), _search("gcl", 2, 0.70, 0.48)])
    b = _write(tmp_path / "b.jsonl", [
        _budget("gcl", 0, (0.1, 0.2), (0.5, 0.6)), _budget("gcl", 1, (0.3, 0.4), (0.7, 0.8)),
        _budget("gcl-best", 0, (0.2, 0.1), (0.4, 0.3)),
        _budget("binary-thresholded", 0, (0.05, 0.05), (0.3, 0.75)),
        {"arm": "bm25", "seed": 0, "dev": None}])
    return [s1, s2], b


def test_means_per_column_and_seeds_counted_once(files):
    searches, budget = files
    t = svb.table(searches, budget)
    assert set(t) == {"gcl", "gcl-random", "binary-thresholded"}  # an arm run one way only is left out
    ndcg, err, n = t["gcl"]["search"]
    assert n == 3 and ndcg == pytest.approx((0.5 + 0.6 + 0.7) / 3) and err == pytest.approx((0.40 + 0.44 + 0.48) / 3)
    assert t["gcl"]["budget 1 epoch"] == pytest.approx((0.2, 0.3, 2))  # the first dev point, not the best
    assert t["gcl"]["budget 8 epochs"] == pytest.approx((0.6, 0.7, 2))  # the last one
    assert t["gcl-random"]["budget 8 epochs"] == pytest.approx((0.4, 0.3, 1))  # read from gcl-best


def test_rank_correlation_matches_a_naive_one(files):
    searches, budget = files
    t = svb.table(searches, budget)
    arms = list(t)
    for k in (0, 1):
        a = [t[x]["search"][k] for x in arms]
        b = [t[x]["budget 8 epochs"][k] for x in arms]
        assert svb.spearman(a, b) == pytest.approx(_naive_rho(a, b))
    out = svb.report(t)
    # nDCG@10: search order gcl-random > gcl > binary; 8 epochs gcl > gcl-best > binary: ρ = 0.5
    assert "nDCG@10: search vs 8 epochs +0.50" in out
    # ERR: search gcl > gcl-random > binary; 8 epochs binary 0.75 > gcl 0.7 > gcl-best 0.3: ρ = -0.5
    assert "ERR: search vs 8 epochs -0.50" in out


def test_bad_inputs_exit_with_a_message(tmp_path, files, capsys):
    searches, budget = files
    with pytest.raises(SystemExit, match="nope.jsonl: no such file"):
        svb.main(["--budget", str(tmp_path / "nope.jsonl"), "--search", *searches])
    few = _write(tmp_path / "few.jsonl", [_search("gcl", 0, 0.5, 0.4)])
    with pytest.raises(SystemExit, match="only 1 arm"):
        svb.main(["--budget", budget, "--search", few])
    svb.main(["--budget", budget, "--search", *searches])
    assert "| gcl (gcl) |" in capsys.readouterr().out


def test_ties_take_their_average_rank_as_scipy_does():
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = [0.5, 0.5, 0.2, 0.9, 0.1], [0.3, 0.1, 0.3, 0.8, 0.0]
    assert svb.spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).correlation)
    assert list(svb._ranks(a)) == [3.5, 3.5, 2.0, 5.0, 1.0]
