"""experiments/where_grades_pay.py: queries grouped by their distinct grades, B - A per group,
checked against a naive loop over the synthetic benchmark's real test queries."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import results_report as rr  # noqa: E402
import where_grades_pay as wgp  # noqa: E402


def test_groups_count_distinct_grades_by_hand():
    qrels = pd.DataFrame({"query_id": ["a", "a", "b", "b", "b", "c"], "grade": [3, 3, 1, 2, 2, 1]})
    assert wgp.grade_groups(qrels).to_dict() == {"a": "one grade", "b": "2+ grades", "c": "one grade"}


def _per_query(task, rng) -> pd.DataFrame:
    ids = task.queries.index.astype(str)
    return pd.DataFrame({"query_id": ids, "ndcg@10": rng.random(len(ids)), "err": rng.random(len(ids))})


def test_end_to_end_on_synthetic_equals_a_naive_loop(tmp_path):
    from gcl.data.sources import load_benchmark
    from gcl.evaluation.evaluator import Protocol, prepare_task
    from gcl.training.config import DataConfig

    bench = load_benchmark(DataConfig(source="synthetic"), train=False)
    rng = np.random.default_rng(0)
    a_dirs = [tmp_path / "a0", tmp_path / "a1"]
    b_dir = tmp_path / "b"
    naive = {}
    for split in ("in_domain", "zero_shot"):
        task = prepare_task(bench.eval_split(split), Protocol(), name=split)
        frames = []
        for d in [*a_dirs, b_dir]:
            d.mkdir(exist_ok=True)
            f = _per_query(task, rng)
            f.to_csv(d / f"{split}_per_query.csv", index=False)
            frames.append(f.set_index("query_id"))
        grades: dict[str, set] = {}
        for q, g in zip(task.qrels["query_id"].astype(str), task.qrels["grade"]):
            grades.setdefault(q, set()).add(g)
        for group, keep in (("one grade", lambda s: len(s) == 1), ("2+ grades", lambda s: len(s) > 1)):
            qs = [q for q in frames[0].index if keep(grades[q])]
            assert qs, (split, group)  # both groups occur in the synthetic data
            for m in ("ndcg@10", "err"):
                a = [(frames[0].loc[q, m] + frames[1].loc[q, m]) / 2 for q in qs]  # seeds averaged per query
                b = [frames[2].loc[q, m] for q in qs]
                naive[(split, group, m)] = (len(qs), sum(b) / len(b) - sum(a) / len(a))
    rr.archive_per_query(a_dirs[1], tmp_path / "a1.csv.gz")  # an archive reads as its directory does
    out = tmp_path / "t.md"
    rc = wgp.main(["--a", str(a_dirs[0]), str(tmp_path / "a1.csv.gz"), "--b", str(b_dir), "--data", "synthetic",
                   "--out", str(out)])
    assert rc == 0
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| in_domain") or
            line.startswith("| zero_shot")]
    assert len(rows) == 8
    for r in rows:
        split, group, n, metric, diff = r[0][2:], r[1], int(r[2]), r[3], float(r[6])
        assert (n, diff) == (naive[(split, group, metric)][0], pytest.approx(naive[(split, group, metric)][1], abs=1e-4))


def test_queries_of_another_evaluation_are_a_clear_error(tmp_path, capsys):
    d = tmp_path / "a"
    d.mkdir()
    pd.DataFrame({"query_id": ["not a query"], "ndcg@10": [0.5], "err": [0.5]}).to_csv(d / "in_domain_per_query.csv",
                                                                                       index=False)
    assert wgp.main(["--a", str(d), "--b", str(d), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not in the data's ground truth" in err and "Traceback" not in err
    assert wgp.main(["--a", str(tmp_path / "missing"), "--b", str(d), "--data", "synthetic"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert wgp.main(["--a", str(d), "--b", str(d), "--data", "synthetic", "--out", str(tmp_path / "no" / "t.md")]) == 2
    assert "the folder of --out does not exist" in capsys.readouterr().err
    pd.DataFrame({"query_id": ["q"], "ndcg@10": [0.5]}).to_csv(d / "in_domain_per_query.csv", index=False)
    assert wgp.main(["--a", str(d), "--b", str(d), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "no per-query column 'err'" in err and "Traceback" not in err
