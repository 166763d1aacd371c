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
