"""experiments/gain_by_grades.py: grade groups per query and seed-averaged per-query differences,
checked against hand-computed values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import gain_by_grades as gbg  # noqa: E402

from gcl.data.schema import DOC_ID, QUERY_ID, SCORE  # noqa: E402


def test_grade_groups_count_distinct_scores_per_query():
    j = pd.DataFrame({
        QUERY_ID: ["a", "a", "b", "b", "b", "c", "d", "d", "d", "d"],
        DOC_ID: list("pqrstuvwxy"),
        SCORE: [3.0, 3.0, 1.0, 2.0, 2.0, 1.33, 1.0, 2.33, 3.0, 3.0],
    })
    groups = gbg.grade_groups(j)
    assert groups.to_dict() == {"a": "1 grade", "b": "2 grades", "c": "1 grade", "d": "3+ grades"}


def test_per_query_reads_each_seed_and_skips_missing(tmp_path):
    for seed, values in ((0, [0.5, 1.0]), (2, [0.25, 0.0])):
        d = tmp_path / f"gcl-s{seed}" / "eval"
        d.mkdir(parents=True)
        # a query id that pandas would read as a number or as missing ("NA") stays text
        pd.DataFrame({"query_id": ["007", "NA"], "err": values}).to_csv(d / "in_domain_per_query.csv", index=False)
    frame = gbg.per_query(tmp_path, "gcl", [0, 1, 2], "in_domain", "err")
    assert list(frame.columns) == [0, 2]
    assert list(frame.index) == ["007", "NA"]
    np.testing.assert_allclose(frame.mean(axis=1).to_numpy(), [0.375, 0.5])
