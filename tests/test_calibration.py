"""Calibrated relevance: PAV against a naive min-max reference, the query-dependent adapter, the
saved file and its fingerprint check, ``gcl calibrate``, and the cut-off in ``gcl search`` and
``POST /search``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from gcl.calibration import (Calibration, QueryAdapter, expected_calibration_error, fit_calibration, isotonic_fit,
                             isotonic_predict, query_features)
from gcl.errors import ConfigError


def naive_isotonic(x, y, w):
    """The min-max formula of isotonic regression, by explicit loops over unique x:
    f_i = max_{j <= i} min_{k >= i} (weighted mean of y over unique x_j..x_k)."""
    ux = sorted(set(x))
    sw = [sum(wi for xi, wi in zip(x, w) if xi == u) for u in ux]
    sy = [sum(wi * yi for xi, yi, wi in zip(x, y, w) if xi == u) for u in ux]
    n = len(ux)
    f = []
    for i in range(n):
        best = -np.inf
        for j in range(i + 1):
            low = np.inf
            for k in range(i, n):
                low = min(low, sum(sy[j:k + 1]) / sum(sw[j:k + 1]))
            best = max(best, low)
        f.append(best)
    return np.array(ux), np.array(f)


@pytest.mark.parametrize("seed", range(12))
def test_pav_matches_the_naive_min_max_formula(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    x = rng.integers(0, 10, n).astype(float) / 10 if seed % 2 else rng.normal(size=n)  # ties on odd seeds
    y = rng.integers(1, 4, n).astype(float) + rng.normal(scale=0.3, size=n)
    w = rng.uniform(0.2, 2.0, n)
    kx, ky = isotonic_fit(x, y, w)
    ux, ref = naive_isotonic(list(x), list(y), list(w))
    np.testing.assert_allclose(isotonic_predict(kx, ky, ux), ref, rtol=1e-10, atol=1e-10)
    assert np.all(np.diff(kx) > 0) and np.all(np.diff(ky) >= -1e-12)


def test_pav_agrees_with_scikit_learn_when_installed():
    iso = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=300), rng.normal(size=300)
    x[:50] = np.round(x[:50], 1)
    kx, ky = isotonic_fit(x, y)
    ref = iso.IsotonicRegression(out_of_bounds="clip").fit(x, y)
    grid = np.linspace(-3.5, 3.5, 301)
    np.testing.assert_allclose(isotonic_predict(kx, ky, grid), ref.predict(grid), atol=1e-10)


def test_interpolation_between_knots_and_constant_beyond():
    kx, ky = isotonic_fit([0.1, 0.5, 0.9], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(isotonic_predict(kx, ky, [0.0, 0.3, 0.7, 1.0]), [1.0, 1.5, 2.5, 3.0])


def _synthetic_pairs(rng, n_q=60, per_q=8):
    """Grades that follow the cosine *relative to the query's best cosine* (a per-query offset)."""
    offset = rng.uniform(-0.3, 0.3, n_q)
    rel = rng.uniform(0, 1, (n_q, per_q))
    cos = 0.2 + 0.5 * rel + offset[:, None]
    grade = 1 + 2 * rel
    top = np.sort(np.concatenate([cos, (0.7 + offset)[:, None] + rng.uniform(0, 0.01, (n_q, 3))], 1), 1)[:, ::-1]
    qi = np.repeat(np.arange(n_q), per_q)
    return cos.ravel(), grade.ravel(), qi, top


def test_query_dependent_form_removes_a_per_query_offset_the_global_form_cannot():
    rng = np.random.default_rng(0)
    cos, grade, qi, top = _synthetic_pairs(rng)
    g = fit_calibration(cos, grade, fingerprint="f", grade_range=(1, 3))
    q = fit_calibration(cos, grade, fingerprint="f", grade_range=(1, 3), method="query", top_cosines=top,
                        query_index=qi, top_n=4)
    err_g = np.mean([(g.relevance(cos[qi == i]) - grade[qi == i]) ** 2 for i in range(60)])
    err_q = np.mean([(q.relevance(cos[qi == i], top[i]) - grade[qi == i]) ** 2 for i in range(60)])
    assert err_q < 0.1 * err_g
    for i in range(5):  # monotone within a query: the ranking is kept
        order = np.argsort(cos[qi == i])
        assert np.all(np.diff(q.relevance(cos[qi == i], top[i])[order]) >= -1e-12)


def test_query_adapter_with_constant_features_is_the_global_form():
    rng = np.random.default_rng(1)
    cos = rng.uniform(0, 1, 200)
    grade = np.clip(np.round(1 + 2 * cos + rng.normal(scale=0.3, size=200)), 1, 3)
    top = np.full((1, 5), 0.9)
    q = fit_calibration(cos, grade, fingerprint="f", grade_range=(1, 3), method="query", top_cosines=top,
                        query_index=np.zeros(200, int), top_n=5)
    g = fit_calibration(cos, grade, fingerprint="f", grade_range=(1, 3))
    grid = np.linspace(0, 1, 50)
    np.testing.assert_allclose(q.relevance(grid, top[0]), g.relevance(grid), atol=1e-9)


def test_query_features_and_negative_slope_clamped():
    phi = query_features(np.array([[0.9, 0.5, 0.1]]), top_n=2)
    np.testing.assert_allclose(phi, [[1.0, 0.9, 0.7]])
    a = QueryAdapter(alpha=np.array([-1.0, 0.0, 0.0]), beta=np.array([2.0, 0.0, 0.0]))
    np.testing.assert_allclose(a.transform(np.array([0.1, 0.9]), phi[0]), [2.0, 2.0])


def test_ece_hand_computed():
    # bins of width 1 over [0, 2]: {0.5, 0.5} vs grades {0, 1} -> |0.5-0.5|; {1.5} vs {1} -> 0.5
    assert expected_calibration_error([0.5, 0.5, 1.5], [0, 1, 1], n_bins=2, grade_range=(0, 2)) == pytest.approx(0.5 / 3)


def test_cut_keeps_the_prefix_at_or_above_the_threshold():
    c = fit_calibration([0.1, 0.5, 0.9], [1.0, 2.0, 3.0], fingerprint="f", grade_range=(1, 3))
    hits = [SimpleNamespace(score=s) for s in (0.9, 0.7, 0.5, 0.3)]
    kept, rel = c.cut(hits, 2.0)
    assert [h.score for h in kept] == [0.9, 0.7, 0.5] and rel == [3.0, 2.5, 2.0]
    assert c.cut(hits, None)[1] == [3.0, 2.5, 2.0, 1.5]
    assert c.cut([], 2.0) == ([], [])
    with pytest.raises(ConfigError, match=r"grade range \[1, 3\]"):
        c.check_min_relevance(3.5, "--min-relevance")


class _FakeModel:
    def __init__(self, fp):
        self.fp = fp

    def fingerprint(self):
        return self.fp


def test_saved_file_round_trips_and_refuses_another_model(tmp_path):
    rng = np.random.default_rng(0)
    cos, grade, qi, top = _synthetic_pairs(rng)
    c = fit_calibration(cos, grade, fingerprint="aaa", grade_range=(1, 3), method="query", top_cosines=top,
                        query_index=qi, top_n=4, info={"split": "dev"})
    path = c.save(tmp_path / "cal.json")
    back = Calibration.load(path, model=_FakeModel("aaa"))
    np.testing.assert_allclose(back.relevance(cos[:8], top[0]), c.relevance(cos[:8], top[0]))
    assert json.loads(path.read_text())["fit"] == {"split": "dev"}
    with pytest.raises(ConfigError, match="fingerprint aaa.*model M has fingerprint bbb"):
        Calibration.load(path, model=_FakeModel("bbb"), model_name="model M")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a gcl calibration file"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        Calibration.load(tmp_path / "none.json")
