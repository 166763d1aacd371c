"""experiments/stop_step.py against a pure-Python Pearson r and least-squares slope."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import stop_step  # noqa: E402


def _record(arm, step, base):
    splits = {s: {"ndcg@10": base + i * 0.01, "err": base / 2 + (step % 7) * 0.001 + i * 0.001}
              for i, s in enumerate(stop_step.SPLITS)}
    return {"arm": arm, "seed": 0, "dev": {"metric": "ndcg@10", "value": 0.5, "step": step}, "splits": splits}


def _naive(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy), sxy / sxx * 100


def test_r_and_slope_equal_a_naive_computation(tmp_path, capsys):
    steps = [110, 328, 165, 220, 275]
    bases = [0.43, 0.46, 0.44, 0.452, 0.445]
    rows = [_record("a" if i % 2 else "b", s, b) for i, (s, b) in enumerate(zip(steps, bases))]
    rows.append(_record("other", 999, 0.1))  # not asked for: ignored
    got = {(sp, m): (r, sl) for sp, m, r, sl in stop_step.step_table(rows, ["a", "b"])}
    for split in stop_step.SPLITS:
        for metric in stop_step.METRICS:
            ys = [row["splits"][split][metric] for row in rows[:5]]
            r_ref, slope_ref = _naive(steps, ys)
            assert got[(split, metric)] == pytest.approx((r_ref, slope_ref), rel=1e-9)
    assert got[("in_domain", "ndcg@10")][1] == pytest.approx(_naive(steps, bases)[1])
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stop_step.main([str(log), "--arms", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 runs of a, b") and out.count("\n| ") == 9  # header + 8 rows


def test_too_few_runs_or_one_step_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="need at least 3"):
        stop_step.step_table([_record("a", 100, 0.4)], ["a"])
    with pytest.raises(SystemExit, match="same step"):
        stop_step.step_table([_record("a", 100, b) for b in (0.4, 0.41, 0.42)], ["a"])
    assert stop_step.main([str(tmp_path / "missing.jsonl"), "--arms", "a"]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_common_step_figures_recover_arm_intercepts_of_exact_linear_data(tmp_path, capsys):
    # y = a_arm + 0.02 per 1000 steps, exactly: the fit must return a_arm + b * at and R² = 1
    truth = {"a": 0.40, "b": 0.43, "c": 0.45}
    layout = {"a": [800, 1400, 2400], "b": [1000, 1600], "c": [2600, 2600]}  # c stopped at one step
    rows = []
    for arm, steps in layout.items():
        for s in steps:
            rec = _record(arm, s, 0.0)
            for split in rec["splits"]:
                rec["splits"][split] = {"ndcg@10": truth[arm] + 2e-5 * s, "err": truth[arm] / 2 + 1e-5 * s}
            rows.append(rec)
    rows.append(_record("other", 999, 0.9))  # not asked for: ignored
    table = stop_step.adjusted_table(rows, ["a", "b", "c"], at=2000)
    assert len(table) == len(stop_step.SPLITS) * len(stop_step.METRICS)
    for split, metric, slope, r2, figures in table:
        b = 2e-5 if metric == "ndcg@10" else 1e-5
        scale = 1.0 if metric == "ndcg@10" else 0.5
        assert slope == pytest.approx(b * 100)
        assert r2 == pytest.approx(1.0)
        assert figures == pytest.approx({a: truth[a] * scale + b * 2000 for a in truth})
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stop_step.main([str(log), "--arms", "a", "b", "c", "--at", "2000"]) == 0
    out = capsys.readouterr().out
    assert "at step 2000" in out and "| in_domain | ndcg@10 | +0.0020 | 1.00 | 0.4400 | 0.4700 | 0.4900 |" in out


def test_common_step_fit_refuses_an_unidentified_slope():
    # every arm stopped at one step each: the slope cannot be told from the arm intercepts
    rows = [_record(a, s, 0.4) for a, s in (("a", 100), ("a", 100), ("b", 200), ("b", 200))]
    with pytest.raises(SystemExit, match="not identified"):
        stop_step.adjusted_table(rows, ["a", "b"], at=150)
    with pytest.raises(SystemExit, match="needs at least 4"):
        stop_step.adjusted_table(rows[:3], ["a", "b"], at=150)


def test_a_record_without_the_split_or_an_untrained_arm_is_named(capsys):
    rows = [_record(a, st, 0.4 + st / 1e4) for a, st in (("a", 100), ("a", 300), ("b", 200), ("b", 400), ("c", 100))]
    rows.append({"arm": "bm25", "seed": 0, "splits": rows[0]["splits"]})  # no dev step: not in the fit
    stop_step.adjusted_table(rows, ["a", "b", "bm25"], at=200)
    assert "no run with a dev step for bm25" in capsys.readouterr().err
    del rows[2]["splits"]["zero_shot"]
    with pytest.raises(SystemExit, match="run b seed 0: no ndcg@10 for zero_shot"):
        stop_step.adjusted_table(rows, ["a", "b"], at=200)
    with pytest.raises(SystemExit, match="run b seed 0: no ndcg@10 for zero_shot"):
        stop_step.step_table(rows, ["a", "b"])
