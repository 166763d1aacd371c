"""Score-to-weight functions: hand-computed values, documented edge rules, errors."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.losses.weights import WEIGHT_FUNCTIONS, get_weight_fn

BUILTINS = sorted(WEIGHT_FUNCTIONS)


def judgments(rows: list[tuple[str, str, float]], index: list[int] | None = None) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score"], index=index)


# Two queries, rows interleaved. Dataset range: s_min = 0, s_max = 4 -> n = s / 4.
TABLE = judgments(
    [
        ("q1", "d1", 3.0),  # n = 0.75
        ("q2", "d1", 1.0),  # n = 0.25
        ("q1", "d2", 2.0),  # n = 0.5
        ("q1", "d3", 2.0),  # n = 0.5
        ("q2", "d5", 4.0),  # n = 1
        ("q1", "d4", 0.0),  # n = 0
    ],
    index=[10, 3, 7, 7, 0, 99],  # the index is ignored (duplicates included)
)


def check(name: str, expected: list[float], table: pd.DataFrame = TABLE, **params: float) -> None:
    out = get_weight_fn(name, **params)(table)
    assert out.dtype == np.float64 and out.shape == (len(table),)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- hand-computed values
def test_constant() -> None:
    check("constant", [1, 1, 1, 1, 1, 1])


def test_linear_default_floor() -> None:
    # 0.1 + 0.9 * n
    check("linear", [0.775, 0.325, 0.55, 0.55, 1.0, 0.1])


def test_linear_floor_param() -> None:
    # 0.5 + 0.5 * n
    check("linear", [0.875, 0.625, 0.75, 0.75, 1.0, 0.5], floor=0.5)
    check("linear", [1, 1, 1, 1, 1, 1], floor=1.0)


def test_linear_negative_scores_are_min_max_normalised() -> None:
    check("linear", [0.1, 0.55, 1.0], table=judgments([("a", "x", -2.0), ("a", "y", 0.0), ("b", "x", 2.0)]))


def test_power_default_p2() -> None:
    # 0.1 + 0.9 * n ** 2: n**2 = 0.5625, 0.0625, 0.25, 0.25, 1, 0
    check("power", [0.60625, 0.15625, 0.325, 0.325, 1.0, 0.1])


def test_power_p1_equals_linear_and_p3() -> None:
    check("power", [0.775, 0.325, 0.55, 0.55, 1.0, 0.1], p=1)
    # floor 0.2: 0.2 + 0.8 * n ** 3 ; 0.75**3 = 0.421875, 0.25**3 = 0.015625, 0.5**3 = 0.125
    check("power", [0.5375, 0.2125, 0.3, 0.3, 1.0, 0.2], p=3, floor=0.2)


def test_exponential_clean_values() -> None:
    # base 4, n = 0, 0.5, 1 -> (4**n - 1) / 3 = 0, 1/3, 1 -> 0.1 + 0.9 * that
    table = judgments([("a", "x", 0.0), ("a", "y", 1.0), ("a", "z", 2.0)])
    check("exponential", [0.1, 0.4, 1.0], table=table, base=4)


def test_exponential_default_base10() -> None:
    expected = [0.1 + 0.9 * (10**n - 1) / 9 for n in (0.75, 0.25, 0.5, 0.5, 1.0, 0.0)]
    out = get_weight_fn("exponential")(TABLE)
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    assert out[4] == 1.0 and out[5] == pytest.approx(0.1, abs=1e-15)


def test_reciprocal_rank_average_ties() -> None:
    # q1: 3, 2, 2, 0 -> ranks 1, 2.5, 2.5, 4 ; q2: 1, 4 -> ranks 2, 1
    check("reciprocal_rank", [1.0, 0.5, 0.4, 0.4, 1.0, 0.25])


def test_reciprocal_rank_all_tied_query() -> None:
    table = judgments([("a", "x", 1.0), ("a", "y", 1.0), ("a", "z", 1.0), ("b", "x", 5.0)])
    check("reciprocal_rank", [0.5, 0.5, 0.5, 1.0], table=table)


# --------------------------------------------------------------------------- documented edge rules
@pytest.mark.parametrize("name", ["linear", "power", "exponential"])
def test_constant_scores_give_all_ones(name: str) -> None:
    table = judgments([("a", "x", 2.0), ("b", "y", 2.0), ("b", "z", 2.0)])
    check(name, [1.0, 1.0, 1.0], table=table)
    check(name, [1.0], table=judgments([("a", "x", -7.0)]))


@pytest.mark.parametrize("name", BUILTINS)
def test_empty_table(name: str) -> None:
    out = get_weight_fn(name)(judgments([]))
    assert out.shape == (0,) and out.dtype == np.float64


def test_integer_scores_accepted() -> None:
    table = pd.DataFrame({"query_id": ["a", "a"], "doc_id": ["x", "y"], "score": [0, 2]})
    check("linear", [0.1, 1.0], table=table)


def test_repr_names_function_and_params() -> None:
    assert repr(get_weight_fn("power", p=3)) == "WeightFn(power, p=3)"


scores_st = st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 10.0]), min_size=1, max_size=15)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(scores=scores_st, qids=st.lists(st.sampled_from("abc"), min_size=15, max_size=15))
def test_builtin_contract(scores: list[float], qids: list[str]) -> None:
    table = judgments([(qids[i], f"d{i}", s) for i, s in enumerate(scores)])
    s = np.asarray(scores)
    for name in BUILTINS:
        w = get_weight_fn(name)(table)
        assert w.shape == s.shape and np.isfinite(w).all() and (w > 0).all() and (w <= 1).all()
        if name in ("linear", "power", "exponential"):  # monotone in the score over the table
            order = np.argsort(s, kind="stable")
            assert (np.diff(w[order]) >= -1e-15).all()
            assert np.isclose(w[np.argmax(s)], 1.0)
    # reciprocal rank does not depend on row order
    perm = np.random.default_rng(len(scores)).permutation(len(scores))
    w = get_weight_fn("reciprocal_rank")(table)
    np.testing.assert_array_equal(get_weight_fn("reciprocal_rank")(table.iloc[perm]), w[perm])


# --------------------------------------------------------------------------- errors
def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown weight function 'nope'.*constant.*exponential.*linear"):
        get_weight_fn("nope")


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("linear", {"floor": 0.0}, "floor must be in"),
        ("linear", {"floor": 1.5}, "floor must be in"),
        ("linear", {"floor": -0.1}, "floor must be in"),
        ("power", {"p": 0}, "p must be"),
        ("power", {"p": float("nan")}, "p must be"),
        ("exponential", {"base": 1.0}, "base must be"),
        ("exponential", {"base": 0.5}, "base must be"),
        ("linear", {"flor": 0.2}, "bad parameters"),
        ("constant", {"floor": 0.2}, "bad parameters"),
        ("reciprocal_rank", {"k": 1}, "bad parameters"),
    ],
)
def test_bad_params(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_weight_fn(name, **params)


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_raise(name: str, bad: float) -> None:
    table = judgments([("a", "x", 1.0), ("a", "y", bad)])
    with pytest.raises(ValueError, match=r"finite; row 1 \(query_id='a', doc_id='y'\)"):
        get_weight_fn(name)(table)


@pytest.mark.parametrize("name", BUILTINS)
def test_bad_tables_raise(name: str) -> None:
    fn = get_weight_fn(name)
    with pytest.raises(ValueError, match="lacks column"):
        fn(pd.DataFrame({"query_id": ["a"], "score": [1.0]}))
    with pytest.raises(ValueError, match="must be numbers"):
        fn(judgments([("a", "x", "high")]))
    with pytest.raises(ValueError, match="pandas DataFrame"):
        fn([("a", "x", 1.0)])


# --------------------------------------------------------------------------- user functions
@pytest.fixture
def user_module(monkeypatch: pytest.MonkeyPatch) -> str:
    mod = types.ModuleType("gcl_test_user_weights")

    def squared(df: pd.DataFrame, *, offset: float = 1.0) -> np.ndarray:
        return df["score"].to_numpy() ** 2 + offset

    class Holder:
        @staticmethod
        def as_list(df: pd.DataFrame) -> list[float]:
            return [1.0] * len(df)

    mod.squared = squared
    mod.Holder = Holder
    mod.wrong_shape = lambda df: np.ones((len(df), 1))
    mod.too_short = lambda df: np.ones(len(df) - 1)
    mod.with_nan = lambda df: np.full(len(df), np.nan)
    mod.with_inf = lambda df: np.full(len(df), np.inf)
    mod.negative = lambda df: -np.ones(len(df))
    mod.zero = lambda df: np.zeros(len(df))
    mod.strings = lambda df: ["a"] * len(df)
    mod.not_callable = 3
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod.__name__


def test_user_function(user_module: str) -> None:
    table = judgments([("a", "x", 1.0), ("a", "y", 3.0)])
    check(f"{user_module}:squared", [2.0, 10.0], table=table)
    check(f"{user_module}:squared", [1.5, 9.5], table=table, offset=0.5)
    check(f"{user_module}:Holder.as_list", [1.0, 1.0], table=table)
    spec = f"{user_module}:squared"
    assert repr(get_weight_fn(spec, offset=2)) == f"WeightFn({spec}, offset=2)"


@pytest.mark.parametrize(
    ("attr", "match"),
    [
        ("wrong_shape", r"shape \(2,\).*got shape \(2, 1\)"),
        ("too_short", r"shape \(2,\).*got shape \(1,\)"),
        ("with_nan", "non-finite"),
        ("with_inf", "non-finite"),
        ("negative", "<= 0"),
        ("zero", "<= 0"),
        ("strings", "non-numeric"),
    ],
)
def test_user_function_bad_output(user_module: str, attr: str, match: str) -> None:
    fn = get_weight_fn(f"{user_module}:{attr}")
    with pytest.raises(ValueError, match=match):
        fn(judgments([("a", "x", 1.0), ("a", "y", 3.0)]))


@pytest.mark.parametrize(
    ("spec", "params", "match"),
    [
        ("{m}:missing", {}, "has no attribute"),
        ("{m}:not_callable", {}, "not callable"),
        ("{m}:squared", {"scale": 2}, "bad parameters"),
        ("{m}:", {}, "package.module:function"),
        (":squared", {}, "package.module:function"),
        ("{m}:squared:x", {}, "package.module:function"),
        ("gcl_no_such_module_xyz:fn", {}, "cannot import module"),
    ],
)
def test_user_function_bad_spec(user_module: str, spec: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_weight_fn(spec.format(m=user_module), **params)


def test_user_output_is_a_copy(user_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = np.ones(2)
    monkeypatch.setattr(sys.modules[user_module], "shared", lambda df: shared, raising=False)
    out = get_weight_fn(f"{user_module}:shared")(judgments([("a", "x", 1.0), ("a", "y", 3.0)]))
    out[0] = 5.0
    assert shared[0] == 1.0 and math.isclose(out[0], 5.0)
