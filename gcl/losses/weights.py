"""Score-to-weight functions: turn graded judgments into the per-pair weights the loss receives.

A weight function maps a judgments table (a :class:`pandas.DataFrame` with columns ``query_id``,
``doc_id``, ``score``; one row per graded pair) to a float64 array of shape ``(n,)``, one strictly
positive, finite weight per row, in row order (the index is ignored). It runs once over the whole
table, because some functions need context beyond one row (the dataset's score range, the other
documents of the same query). The loss never sees scores-to-weights logic; see ``docs/losses.md``.

Built-ins (``s`` is a score, ``s_min``/``s_max`` the smallest/largest score in the table)::

    constant          w = 1                                      (binary baseline)
    linear            w = floor + (1 - floor) * n                n = (s - s_min) / (s_max - s_min)
    power             w = floor + (1 - floor) * n ** p           p > 0, default 2
    exponential       w = floor + (1 - floor) * (base ** n - 1) / (base - 1)   base > 1, default 10
    reciprocal_rank   w = 1 / rank of the document among its query's documents, scores descending;
                      tied documents share the average of the ranks they span (3, 2, 2, 1 -> 1, 2.5,
                      2.5, 4)

Rules that keep every weight finite and > 0:

* ``floor`` (default 0.1, must be in (0, 1]) is the weight of the lowest grade in the table, so every
  judged pair still pulls its query a little; the highest grade gets weight 1.
* If every score in the table is equal, ``n`` is undefined (0/0); it is then taken as 1 for every
  row, so all weights are 1 (no grade is lower than another) instead of dividing by zero.
* Scores must be finite numbers (NaN or +-inf raise ``ValueError``). Negative scores are accepted:
  every built-in depends on scores only through min-max normalisation or per-query ranks.

A user function is named ``"package.module:function"``; it is imported when
:func:`get_weight_fn` is called (never at import of :mod:`gcl`), called as
``function(judgments, **params)``, and its output is checked like a built-in's (shape ``(n,)``,
finite, > 0), raising ``ValueError`` otherwise.

Example::

    >>> fn = get_weight_fn("linear", floor=0.1)
    >>> fn(judgments)            # judgments: DataFrame[query_id, doc_id, score]
    array([1. , 0.55, 0.1 ])
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - pandas is imported where a table is weighted
    import pandas as pd

WeightFn = Callable[["pd.DataFrame"], np.ndarray]

QUERY_ID = "query_id"
DOC_ID = "doc_id"
SCORE = "score"
_COLUMNS = (QUERY_ID, DOC_ID, SCORE)


# --------------------------------------------------------------------------- input helpers
def _scores(judgments: pd.DataFrame) -> np.ndarray:
    """The ``score`` column as float64, after checking the table's shape and the scores' values."""
    import pandas as pd

    if not isinstance(judgments, pd.DataFrame):
        raise ValueError(f"weight functions take a pandas DataFrame, got {type(judgments).__name__}")
    missing = [c for c in _COLUMNS if c not in judgments.columns]
    if missing:
        raise ValueError(
            f"judgments table lacks column(s) {missing}; expected columns {list(_COLUMNS)}, "
            f"got {list(judgments.columns)}"
        )
    try:
        scores = judgments[SCORE].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"judgment scores must be numbers: {exc}") from None
    bad = ~np.isfinite(scores)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"judgment scores must be finite; row {row} (query_id={judgments[QUERY_ID].iloc[row]!r}, "
            f"doc_id={judgments[DOC_ID].iloc[row]!r}) has score {scores[row]!r} "
            f"({int(bad.sum())} bad row(s) in all)"
        )
    return scores


def _normalised(scores: np.ndarray) -> np.ndarray:
    """Min-max normalisation into [0, 1]; all ones when every score is equal (documented rule)."""
    if scores.size == 0:
        return scores.copy()
    lo, hi = scores.min(), scores.max()
    if hi == lo:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


def _check_floor(floor: float) -> float:
    floor = float(floor)
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1] so that every weight is > 0, got {floor}")
    return floor


def _lift(n: np.ndarray, floor: float) -> np.ndarray:
    """Map a [0, 1] value into [floor, 1]."""
    return floor + (1.0 - floor) * n


# --------------------------------------------------------------------------- built-ins
def constant() -> WeightFn:
    """Every pair weighs 1: the binary-relevance baseline (the loss reduces to InfoNCE)."""

    def weights(judgments: pd.DataFrame) -> np.ndarray:
        return np.ones(len(_scores(judgments)), dtype=np.float64)

    return weights


def linear(*, floor: float = 0.1) -> WeightFn:
    """``floor + (1 - floor) * (s - s_min) / (s_max - s_min)`` over the whole table."""
    floor = _check_floor(floor)

    def weights(judgments: pd.DataFrame) -> np.ndarray:
        return _lift(_normalised(_scores(judgments)), floor)

    return weights


def power(*, p: float = 2.0, floor: float = 0.1) -> WeightFn:
    """``floor + (1 - floor) * n ** p`` with ``n`` the min-max normalised score; ``p > 0``."""
    p = float(p)
    if not (np.isfinite(p) and p > 0):
        raise ValueError(f"power: p must be a finite number > 0, got {p}")
    floor = _check_floor(floor)

    def weights(judgments: pd.DataFrame) -> np.ndarray:
        return _lift(_normalised(_scores(judgments)) ** p, floor)

    return weights


def exponential(*, base: float = 10.0, floor: float = 0.1) -> WeightFn:
    """``floor + (1 - floor) * (base ** n - 1) / (base - 1)`` with ``n`` normalised; ``base > 1``."""
    base = float(base)
    if not (np.isfinite(base) and base > 1):
        raise ValueError(f"exponential: base must be a finite number > 1, got {base}")
    floor = _check_floor(floor)

    def weights(judgments: pd.DataFrame) -> np.ndarray:
        n = _normalised(_scores(judgments))
        return _lift((np.power(base, n) - 1.0) / (base - 1.0), floor)  # n = 1 gives exactly 1

    return weights


def reciprocal_rank() -> WeightFn:
    """``1 / rank`` of each document among its query's documents by score, descending.

    Ties share the average of the ranks they span (pandas ``rank(method="average")``), so tied
    documents get equal weight and a query's weights do not depend on row order.
    """

    def weights(judgments: pd.DataFrame) -> np.ndarray:
        import pandas as pd

        scores = _scores(judgments)
        frame = pd.DataFrame({QUERY_ID: judgments[QUERY_ID].to_numpy(), SCORE: scores})
        ranks = frame.groupby(QUERY_ID, sort=False)[SCORE].rank(method="average", ascending=False)
        return 1.0 / ranks.to_numpy(dtype=np.float64)

    return weights


WEIGHT_FUNCTIONS: dict[str, Callable[..., WeightFn]] = {
    "constant": constant,
    "linear": linear,
    "reciprocal_rank": reciprocal_rank,
    "power": power,
    "exponential": exponential,
}


# --------------------------------------------------------------------------- lookup
class _CheckedWeightFn:
    """A weight function whose output is checked: float64, shape ``(n,)``, finite, > 0."""

    def __init__(self, name: str, fn: Callable[[pd.DataFrame], Any], params: dict[str, Any]) -> None:
        self.name = name
        self.params = dict(params)
        self._fn = fn

    def __call__(self, judgments: pd.DataFrame) -> np.ndarray:
        n = len(_scores(judgments))
        out = self._fn(judgments)
        try:
            arr = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"weight function {self.name!r} returned non-numeric output: {exc}") from None
        if arr.shape != (n,):
            raise ValueError(
                f"weight function {self.name!r} must return shape ({n},) (one weight per judgment), "
                f"got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"weight function {self.name!r} returned non-finite weights")
        if (arr <= 0).any():
            raise ValueError(
                f"weight function {self.name!r} returned weights <= 0 (min {arr.min()!r}); "
                "every judged pair must weigh > 0"
            )
        return arr.copy() if arr is out else arr

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"WeightFn({self.name}{', ' + args if args else ''})"


def _bind_check(name: str, fn: Callable[..., Any], params: dict[str, Any], *, user: bool) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: let the call decide
        return
    try:
        if user:
            sig.bind(None, **params)
        else:
            sig.bind(**params)
    except TypeError as exc:
        raise ValueError(f"weight function {name!r}{sig}: bad parameters {params}: {exc}") from None


def _import_user_fn(spec: str) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path or ":" in attr_path:
        raise ValueError(f"user weight function must be written 'package.module:function', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for weight function {spec!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr_path!r} ({spec!r})") from None
    if not callable(obj):
        raise ValueError(f"weight function {spec!r} is not callable")
    return obj


def get_weight_fn(name: str, **params: Any) -> WeightFn:
    """The weight function called ``name`` with ``params``, its output checked.

    ``name`` is a key of :data:`WEIGHT_FUNCTIONS` or ``"package.module:function"`` (a user function,
    imported now and called as ``function(judgments, **params)``). Unknown names, bad parameters
    and failed imports raise ``ValueError``.
    """
    if not isinstance(name, str):
        raise ValueError(f"weight function name must be a string, got {type(name).__name__}")
    if ":" in name:
        fn = _import_user_fn(name)
        _bind_check(name, fn, params, user=True)
        return _CheckedWeightFn(name, lambda judgments: fn(judgments, **params), params)
    if name not in WEIGHT_FUNCTIONS:
        raise ValueError(
            f"unknown weight function {name!r}; valid: {sorted(WEIGHT_FUNCTIONS)} "
            "or 'package.module:function'"
        )
    factory = WEIGHT_FUNCTIONS[name]
    _bind_check(name, factory, params, user=False)
    return _CheckedWeightFn(name, factory(**params), params)
