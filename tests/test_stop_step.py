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


def _naive_ancova(groups: dict[str, list[tuple[float, float]]], base: str):
    """Shared-slope ANCOVA by the textbook formulas: b = sum_g sum (x - xg)(y - yg) / sum_g sum (x - xg)^2;
    a_g - a_base = (yg - ybase) - b (xg - xbase); var = s^2 (1/ng + 1/nbase + (xg - xbase)^2 / Sxx_within),
    s^2 = RSS / (n - groups - 1)."""
    sxy = sxx = 0.0
    means = {}
    for g, pts in groups.items():
        mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
        means[g] = (mx, my, len(pts))
        sxy += sum((x - mx) * (y - my) for x, y in pts)
        sxx += sum((x - mx) ** 2 for x, _ in pts)
    b = sxy / sxx
    rss = sum((y - (means[g][1] + b * (x - means[g][0]))) ** 2 for g, pts in groups.items() for x, y in pts)
    s2 = rss / (sum(len(p) for p in groups.values()) - len(groups) - 1)
    mxb, myb, nb = means[base]
    return b, rss, {g: ((my - myb) - b * (mx - mxb), math.sqrt(s2 * (1 / ng + 1 / nb + (mx - mxb) ** 2 / sxx)))
                    for g, (mx, my, ng) in means.items() if g != base}


def _noisy(layout, truth, slope, seed=0):
    import random
    rnd = random.Random(seed)
    rows = []
    for arm, steps in layout.items():
        for i, s in enumerate(steps):
            rec = _record(arm, s, 0.0)
            rec["seed"] = i
            for split in rec["splits"]:
                rec["splits"][split] = {m: truth[arm] + slope[arm] * s + rnd.gauss(0, 0.003) for m in ("ndcg@10", "err")}
            rows.append(rec)
    return rows


def test_differences_at_equal_steps_and_their_errors_equal_the_textbook_ancova():
    layout = {"base": [654, 1090, 2398, 3270], "gcl": [654, 872, 1308], "one": [2616]}
    truth = {"base": 0.40, "gcl": 0.43, "one": 0.38}
    rows = _noisy(layout, truth, {a: 2e-5 for a in layout})
    table = stop_step.baseline_table(rows, ["base", "gcl", "one"], "base")
    assert len(table) == len(stop_step.SPLITS) * len(stop_step.METRICS)
    for f in table:
        groups = {a: [(r["dev"]["step"], r["splits"][f["split"]][f["metric"]]) for r in rows if r["arm"] == a]
                  for a in layout}
        b, _, effects = _naive_ancova(groups, "base")
        assert f["slope"] == pytest.approx(b * 100, rel=1e-9)
        for e in f["effects"]:
            assert e["diff"] == pytest.approx(effects[e["arm"]][0], abs=1e-12)
            assert e["se"] == pytest.approx(effects[e["arm"]][1], rel=1e-9)
            ys = [y for _, y in groups[e["arm"]]]
            assert e["raw"] == pytest.approx(sum(ys) / len(ys) - sum(y for _, y in groups["base"]) / 4)
            assert e["ci"][0] < e["diff"] < e["ci"][1]
        by = {e["arm"]: e for e in f["effects"]}
        assert by["one"]["slope"] is None and by["gcl"]["slope"] == pytest.approx(
            _naive([x for x, _ in groups["gcl"]], [y for _, y in groups["gcl"]])[1])
        # the truth at equal steps (+0.03): gcl stopped earlier, so its raw lead is smaller
        assert abs(by["gcl"]["diff"] - 0.03) < 3 * by["gcl"]["se"] and by["gcl"]["raw"] < by["gcl"]["diff"]


def test_p_slopes_is_the_f_test_of_one_line_per_arm_and_tells_parallel_from_crossing():
    from scipy import stats
    layout = {"base": [500, 1000, 2000, 3000, 4000], "a": [500, 1000, 2000, 3000, 4000]}
    for slope_a, crossing in ((2e-5, False), (-2e-5, True)):
        rows = _noisy(layout, {"base": 0.40, "a": 0.45}, {"base": 2e-5, "a": slope_a}, seed=1)
        f = stop_step.baseline_table(rows, ["base", "a"], "base")[0]
        groups = {a: [(r["dev"]["step"], r["splits"][f["split"]][f["metric"]]) for r in rows if r["arm"] == a]
                  for a in layout}
        _, rss_shared, _ = _naive_ancova(groups, "base")
        rss_own = 0.0  # one least-squares line per arm
        for pts in groups.values():
            mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
            b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
            rss_own += sum((y - my - b * (x - mx)) ** 2 for x, y in pts)
        p = stats.f.sf((rss_shared - rss_own) / (rss_own / (10 - 4)), 1, 10 - 4)
        assert f["p_slopes"] == pytest.approx(p, rel=1e-6)
        assert (f["p_slopes"] < 0.001) is crossing


def test_p_slopes_with_the_baseline_at_one_step_and_an_arm_at_one_step():
    """The baseline stopped at one step, two arms with opposite slopes, one arm at one step: the F test
    compares the two arms' own lines (k = 1) with the shared one; the one-step arms add no slope."""
    from scipy import stats
    layout = {"base": [1000, 1000], "up": [500, 1500, 2500, 3500], "down": [500, 1500, 2500, 3500], "one": [2000]}
    rows = _noisy(layout, {"base": 0.4, "up": 0.4, "down": 0.5, "one": 0.45},
                  {"base": 0.0, "up": 3e-5, "down": -3e-5, "one": 0.0}, seed=2)
    f = stop_step.baseline_table(rows, list(layout), "base")[0]
    assert f["base_slope"] is None
    groups = {a: [(r["dev"]["step"], r["splits"][f["split"]][f["metric"]]) for r in rows if r["arm"] == a] for a in layout}
    _, rss_shared, _ = _naive_ancova(groups, "base")
    rss_own = 0.0  # a line per arm with two steps or more, a mean for the others
    for pts in groups.values():
        mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        b = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0
        rss_own += sum((y - my - b * (x - mx)) ** 2 for x, y in pts)
    n, p_own = len(rows), 4 + 2  # 4 intercepts, 2 own slopes
    p = stats.f.sf((rss_shared - rss_own) / 1 / (rss_own / (n - p_own)), 1, n - p_own)
    assert f["p_slopes"] == pytest.approx(p, rel=1e-6) and f["p_slopes"] < 1e-4
    # the 95 % interval is the t interval with n - arms - 1 degrees of freedom
    for e in f["effects"]:
        width = 2 * stats.t.ppf(0.975, n - len(layout) - 1) * e["se"]
        assert e["ci"][1] - e["ci"][0] == pytest.approx(width)
    # only one arm with two steps: no separate-slope test is possible
    two = {"base": [1000, 2000, 3000], "one": [1500]}
    f = stop_step.baseline_table(_noisy(two, {"base": 0.4, "one": 0.4}, {"base": 1e-5, "one": 0}), list(two), "base")[0]
    assert f["p_slopes"] is None and f["effects"][0]["slope"] is None


def test_the_baseline_option_prints_the_table_and_refuses_what_it_cannot_fit(tmp_path, capsys):
    rows = _noisy({"base": [100, 200, 300], "gcl": [150, 250]}, {"base": 0.4, "gcl": 0.42}, {"base": 1e-4, "gcl": 1e-4})
    log = tmp_path / "runs.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stop_step.main([str(log), "--arms", "gcl", "--baseline", "base"]) == 0  # the baseline joins --arms
    out = capsys.readouterr().out
    assert "each arm minus base at equal steps" in out and out.count("\n| gcl | 2 | ") == 8
    with pytest.raises(SystemExit, match="the baseline nope has no run"):
        stop_step.baseline_table(rows, ["nope", "gcl"], "nope")
    with pytest.raises(SystemExit, match="no arm besides the baseline"):
        stop_step.baseline_table(rows, ["base"], "base")
    for text, words in (("{oops", "line 2: not JSON"), ("[1, 2]", "line 2: not a runs.jsonl record")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(rows[0]) + "\n" + text + "\n")
        assert stop_step.main([str(bad), "--arms", "base"]) == 2
        err = capsys.readouterr().err
        assert "bad.jsonl: " + words in err and err.count("\n") == 1
    assert stop_step.main([str(log), "--arms", "gcl", "--baseline", "nope"]) == 2
    assert "--baseline nope: no run of that arm" in capsys.readouterr().err
    rows[1]["dev"]["step"] = "abc"
    with pytest.raises(SystemExit, match="run base seed 1: dev.step is 'abc', not a number"):
        stop_step.baseline_table(rows, ["base", "gcl"], "base")
