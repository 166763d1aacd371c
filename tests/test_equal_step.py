"""experiments/equal_step.py: the final-step comparison against a naive computation, and its
choice of evaluation directory (final, or best when best is the last step, else a clear error)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import equal_step  # noqa: E402

from gcl.evaluation.compare import randomisation_p  # noqa: E402

QUERIES = [f"q{i}" for i in range(30)]


def _run(work: Path, name: str, dev: list[tuple[int, float]], evals: dict[str, int]) -> None:
    """A run directory: metrics.jsonl with dev points; per-query files (seeded values) per eval dir."""
    run = work / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "dev/ndcg@10": v}) + "\n" for s, v in dev))
    for d, seed in evals.items():
        (run / d).mkdir()
        rng = np.random.default_rng(seed)
        for split in equal_step.SPLITS:
            pd.DataFrame({"query_id": QUERIES, "ndcg@10": rng.random(30), "err": rng.random(30)}).to_csv(
                run / d / f"{split}_per_query.csv", index=False)


def test_final_step_comparison_equals_a_naive_computation(tmp_path, capsys):
    curve_last = [(5, 0.1), (10, 0.3)]  # best at the last step: eval is the final model's
    curve_early = [(5, 0.3), (10, 0.2)]  # best before the last: needs eval_final
    _run(tmp_path, "gcl-s0", curve_last, {"eval": 1})
    _run(tmp_path, "gcl-s1", curve_early, {"eval": 2, "eval_final": 3})
    _run(tmp_path, "binary-s0", curve_early, {"eval": 4, "eval_final": 5})
    _run(tmp_path, "binary-s1", curve_last, {"eval": 6, "eval_final": 7})  # eval_final wins when present

    def vals(run, d, split, metric):
        return pd.read_csv(tmp_path / run / d / f"{split}_per_query.csv")[metric].to_numpy()

    rows = equal_step.compare(tmp_path, "gcl", "binary", [0, 1], "eval_final", equal_step.CompareSettings(n_permutations=2000))
    for r in rows:
        sp, m = r["split"], r["metric"]
        a = [vals("gcl-s0", "eval", sp, m), vals("gcl-s1", "eval_final", sp, m)]
        b = [vals("binary-s0", "eval_final", sp, m), vals("binary-s1", "eval_final", sp, m)]
        ma, mb = (a[0] + a[1]) / 2, (b[0] + b[1]) / 2
        assert r["a"] == pytest.approx(ma.mean()) and r["b"] == pytest.approx(mb.mean())
        assert r["diff"] == pytest.approx((ma - mb).mean())
        assert r["ahead"] == sum(x.mean() > y.mean() for x, y in zip(a, b))
        p_ref = randomisation_p(ma - mb, 2000, np.random.default_rng(0))
        assert r["p"] == pytest.approx(p_ref)
    assert equal_step.main(["--work", str(tmp_path), "--pair", "gcl:binary", "--seeds", "0,1", "--rounds", "200"]) == 0
    out = capsys.readouterr().out
    assert "gcl: final steps s0 10, s1 10" in out and out.count("| in_domain |") == 2


def test_a_run_without_its_final_evaluation_is_a_clear_error(tmp_path, capsys):
    _run(tmp_path, "gcl-s0", [(5, 0.3), (10, 0.2)], {"eval": 1})
    with pytest.raises(SystemExit, match=r"best dev step 5 is not its last step 10; evaluate .*final"):
        equal_step.eval_dir("gcl", tmp_path / "gcl-s0", "eval_final")
    with pytest.raises(SystemExit, match="metrics.jsonl: no such file"):
        equal_step.steps("gcl", tmp_path / "missing")
    assert equal_step.main(["--work", str(tmp_path), "--pair", "ab"]) == 2
    assert "give A:B" in capsys.readouterr().err


def test_a_soup_is_compared_by_its_one_evaluation(tmp_path, capsys):
    """A soup directory (final/gcl_soup.json, no metrics.jsonl) uses <run>/eval and prints "soup"."""
    _run(tmp_path, "binary-s0", [(5, 0.1), (10, 0.3)], {"eval": 4})
    soup = tmp_path / "soup-s0"
    soup.mkdir()
    (soup / "final").mkdir()
    (soup / "final" / "gcl_soup.json").write_text("{}")
    (soup / "eval").mkdir()
    rng = np.random.default_rng(1)
    for split in equal_step.SPLITS:
        pd.DataFrame({"query_id": QUERIES, "ndcg@10": rng.random(30), "err": rng.random(30)}).to_csv(
            soup / "eval" / f"{split}_per_query.csv", index=False)
    assert equal_step.eval_dir("soup", soup, "eval_final") == soup / "eval"
    assert equal_step.main(["--work", str(tmp_path), "--pair", "soup:binary", "--seeds", "0", "--rounds", "100",
                            "--eval", "eval_final"]) == 0
    out = capsys.readouterr().out
    assert "soup: final steps s0 soup" in out and "binary: final steps s0 10" in out
    in_domain = pd.read_csv(soup / "eval" / "in_domain_per_query.csv")["ndcg@10"].mean()
    assert f"| in_domain | ndcg@10 | {in_domain:.4f} |" in out
