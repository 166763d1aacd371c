"""experiments/dev_resolution.py: the MDE against a simulated paired test, rank agreement and its
permutation p against naive enumeration, and a trained run's dev scores re-scored per query."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import dev_resolution as dr  # noqa: E402


@pytest.mark.parametrize("sd,n", [(0.1, 424), (0.3, 2000)])
def test_mde_has_the_stated_power_in_a_simulated_paired_test(sd, n):
    """At a true difference equal to the MDE, a two-sided z test at 0.05 rejects in 80 % of draws;
    at no difference in 5 %."""
    rng = np.random.default_rng(1)
    delta = dr.mde(sd, n)
    draws = 4000

    def rejection(mean):
        d = rng.normal(mean, sd, size=(draws, n))
        z = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(z) > 1.959964))

    assert rejection(delta) == pytest.approx(0.80, abs=0.025)
    assert rejection(0.0) == pytest.approx(0.05, abs=0.015)
    assert dr.mde(sd, 4 * n) == pytest.approx(delta / 2)


def _naive_spearman(x, y):
    """1 - 6 Σ d² / (n (n² - 1)), no ties."""
    n = len(x)
    rank = lambda v: {i: r for r, i in enumerate(sorted(range(n), key=lambda i: v[i]), start=1)}  # noqa: E731
    rx, ry = rank(x), rank(y)
    return 1 - 6 * sum((rx[i] - ry[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


def _naive_tau(x, y):
    n = len(x)
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(n) for j in range(i + 1, n))
    return s / (n * (n - 1) / 2)


def _naive_p(x, y):
    rho = _naive_spearman(x, y)
    stats = [abs(_naive_spearman(x, [y[i] for i in perm])) for perm in itertools.permutations(range(len(y)))]
    return sum(s >= abs(rho) - 1e-12 for s in stats) / len(stats)


def test_rank_agreement_exact_small():
    x = [0.51, 0.49, 0.55, 0.47, 0.50, 0.53]
    y = [0.38, 0.39, 0.40, 0.36, 0.35, 0.41]
    got = dr.rank_agreement(x, y)
    assert got["rho"] == pytest.approx(_naive_spearman(x, y))
    assert got["tau"] == pytest.approx(_naive_tau(x, y))
    assert got["p"] == pytest.approx(_naive_p(x, y))
    assert got["n"] == 6


def test_rank_agreement_sampled_p_is_near_the_exact_one():
    rng = np.random.default_rng(3)
    x, y = rng.random(9), rng.random(9)
    y = 0.2 * x + 0.8 * y  # some agreement, p well inside (0, 1)
    exact = _naive_p_vectorised(x, y)
    got = dr.rank_agreement(x, y, n_permutations=40_000, seed=5)
    assert got["rho"] == pytest.approx(_naive_spearman(list(x), list(y)))
    assert 0.01 < exact < 0.5
    assert got["p"] == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 40_000))


def _naive_p_vectorised(x, y):
    n = len(x)
    rx = np.argsort(np.argsort(x)) + 1
    ry = np.argsort(np.argsort(y)) + 1
    perms = np.array(list(itertools.permutations(range(n))))
    rho = 1 - 6 * ((rx - ry) ** 2).sum() / (n * (n * n - 1))
    rhos = 1 - 6 * ((rx[None, :] - ry[perms]) ** 2).sum(axis=1) / (n * (n * n - 1))
    return float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def test_paired_stats_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = a - 0.05 + rng.normal(0, 0.1, 300)
    st = dr.paired_stats(a, b, n_for_mde=1200)
    d = a - b
    assert st["diff"] == pytest.approx(d.mean())
    assert st["sd"] == pytest.approx(d.std(ddof=1))
    assert st["mde"] == pytest.approx(2.8016 * d.std(ddof=1) / math.sqrt(1200), rel=1e-4)
    assert st["p"] < 0.001 and st["n"] == 300
    same = dr.paired_stats(a, a.copy())  # no difference at all
    assert same["diff"] == 0 and same["p"] == 1.0


def _train(run: Path, seed: int, lr: str) -> None:
    from conftest_trainer import tiny_model

    from gcl.cli.main import main

    argv = ["train", "data.source=synthetic", f"model.text_model={tiny_model(0.1)}", "optim.steps=2", f"optim.lr={lr}",
            "batch.batch_size=8", "eval.every=2", "eval.keep_best=false", "eval.dev_corpus_size=60", f"seed={seed}",
            f"out_dir={run}", "progress=false"]
    assert main(argv) == 0


def test_rescored_dev_equals_what_training_recorded(tmp_path):
    """Runs trained with dev evaluation: re-scoring each final model per query (its seed's dev
    corpus) reproduces the dev figure training logged; the report holds the pair and the checks."""
    from results_table import dev_metric

    work, table, out = tmp_path / "work", tmp_path / "table", tmp_path / "out"
    records = []
    for seed in (0, 1):
        for arm, lr in (("a", "1e-3"), ("b", "1e-5")):
            _train(work / f"{arm}-s{seed}", seed, lr)
            dev = dev_metric("gcl-best", work / f"{arm}-s{seed}")
            assert dev is not None and dev["model"] == "final"
            splits = {s: {"ndcg@10": 0.5, "err": 0.4} for s in dr.SPLITS}
            records.append({"arm": arm, "seed": seed, "work": str(work), "dev": dev, "splits": splits})
    table.mkdir()
    (table / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert dr.main(["--table", str(table), "--out", str(out), "--pairs", "a:b"]) == 0

    frames, checks = dr.dev_frames(records, {}, out, {"a", "b"})  # from the cache now
    for r in records:
        frame = frames[(r["arm"], r["seed"])]
        for m in dr.METRICS:
            assert frame[m].mean() == pytest.approx(r["dev"]["curve"][-1][m], abs=1e-6)
    assert len(checks) == 4
    report = (out / "README.md").read_text()
    assert "| `a` − `b` | ndcg@10 | 2 |" in report
    mean_diff = np.mean([(frames[("a", k)]["ndcg@10"] - frames[("b", k)]["ndcg@10"]).mean() for k in (0, 1)])
    assert f"{mean_diff:+.4f}" in report

    # the whole training corpus instead of the 60-document sample training scored
    assert dr.main(["--table", str(table), "--out", str(out), "--pairs", "a:b", "--full-corpus-pairs", "a:b"]) == 0
    assert "### The same dev queries against the whole training corpus" in (out / "README.md").read_text()
    full, none = dr.dev_frames(records, {}, out, {"a"}, full_corpus=True)
    assert none == [] and set(full) == {("a", 0), ("a", 1)}
    from gcl.data.sources import load_benchmark
    from gcl.training.dev_eval import DevEvaluator

    cfg = dr.train_config(work / "a-s0")
    splits = load_benchmark(cfg.data)
    assert len(DevEvaluator(splits, cfg.eval, seed=0).task.documents) == 60
    cfg.eval.dev_corpus_size = 2**62
    assert len(DevEvaluator(splits, cfg.eval, seed=0).task.documents) == len(splits.corpus_1) > 60
    assert full[("a", 0)].index.equals(frames[("a", 0)].index)

    # cached: without the model the file is read, not re-scored
    (work / "a-s0" / "final" / "modules.json").unlink()
    again, _ = dr.dev_frames(records[:1], {}, out, {"a"})
    assert again[("a", 0)].equals(frames[("a", 0)])

    # a record whose seed is not its run's: refused, with both named
    wrong = dict(records[1], seed=0)
    with pytest.raises(SystemExit, match="seed 1, expected 0"):
        dr.dev_frames([wrong], {"b": str(work / "b-s1")}, tmp_path / "out2", {"b"})


def test_rank_agreement_without_a_ranking_is_nan():
    assert math.isnan(dr.rank_agreement([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5])["rho"])
    assert math.isnan(dr.rank_agreement([1, 2], [1, 2])["p"])
