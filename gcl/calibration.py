"""Calibrated relevance: a monotone map from cosine similarity to the expected judged grade.

A GCL model is trained so that similarity follows the graded score, so a map fitted on held-out
judgments turns a cosine into "the grade a rater would give" and one cut-off on that scale keeps
"only results a rater would call relevant". Two forms, both fitted on judged (query, document,
grade) pairs of the **dev** split (training-pool queries withheld from training, never a test
split; see :mod:`gcl.data.splits`):

**Global isotonic** (``method="isotonic"``). Isotonic regression of the grade ``g`` on the cosine
``c``::

    f* = argmin_{f non-decreasing} sum_i w_i (g_i - f(c_i))^2

solved exactly by pool-adjacent-violators (:func:`isotonic_fit`): sort by ``c`` (equal cosines
pooled into their weighted mean first), then repeatedly merge adjacent blocks whose means
decrease, each block taking the weighted mean of its grades. A new cosine is mapped by linear
interpolation between the fitted knots (the first and last cosine of every block), held
constant beyond the end knots (:func:`isotonic_predict`). The fitted values lie in the grade
range, so the relevance does too.

**Query-dependent** (``method="query"``), after the "Cosine Adapter" of Rossi et al.,
*Relevance Filtering for Embedding-based Retrieval* (CIKM 2024): a per-query monotone transform
of the cosine, then one global map and threshold. Here the transform is affine with parameters
linear in query features ``phi(q) = [1, t_1(q), tbar(q)]`` -- the query's top-1 cosine and the
mean of its top-``top_n`` cosines over the corpus (its score distribution)::

    z(q, d) = a(q) c + b(q),   a(q) = max(0, alpha . phi(q)),   b(q) = beta . phi(q)
    r(q, d) = f*(z(q, d))      (an isotonic map fitted on z, as above)

``alpha, beta`` are fitted by ridge least squares of ``g`` on ``phi(q) (x) [c, 1]`` (6 numbers;
:class:`QueryAdapter`). ``a(q) >= 0`` keeps the ranking of a query unchanged, and constant
features reduce it to the global form. Differences from the paper: its adapter is a neural
network on the query *embedding* that outputs the parameters of a chosen transform (linear,
square root, power, ...), trained with a binary relevance loss; here the parameters come from
three score-distribution features by closed-form least squares on graded labels, and the output
is an expected grade, not a probability.

A fitted :class:`Calibration` is saved as JSON (:data:`CALIBRATION_FILE`, by default inside the
model directory) with the model's :meth:`~gcl.encoders.base.EmbeddingModel.fingerprint`; loading
it for another model is a :class:`~gcl.errors.ConfigError` naming both fingerprints.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from gcl.errors import ConfigError

CALIBRATION_FILE = "gcl_calibration.json"
FORMAT = "gcl-calibration/1"
METHODS = ("isotonic", "query")
Method = Literal["isotonic", "query"]


@dataclass(frozen=True)
class CalibrationParams:
    """Fitting defaults, read by :func:`fit_calibration`, ``gcl calibrate`` and the experiment."""

    method: Method = "isotonic"
    top_n: int = 10  # top cosines of a query that the query-dependent features read
    ridge: float = 1e-3  # ridge strength per judged pair of the adapter's least squares


# ---------------------------------------------------------------------- isotonic regression
def isotonic_fit(x, y, w=None) -> tuple[np.ndarray, np.ndarray]:
    """Pool-adjacent-violators (see the module docstring): knots ``(kx, ky)``, ``kx`` increasing."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64).ravel()
    if len(x) == 0 or len(x) != len(y) or len(w) != len(y):
        raise ValueError(f"isotonic_fit needs equal, non-empty x, y, w (got {len(x)}, {len(y)}, {len(w)})")
    ux, inv = np.unique(x, return_inverse=True)  # equal x pooled first: f is a function of x
    sw = np.bincount(inv, weights=w)
    sy = np.bincount(inv, weights=w * y)
    # blocks as stacks of (weight, weighted sum, first unique index, last unique index)
    bw, bs, lo, hi = [], [], [], []
    for i in range(len(ux)):
        bw.append(sw[i]); bs.append(sy[i]); lo.append(i); hi.append(i)
        while len(bw) > 1 and bs[-2] / bw[-2] > bs[-1] / bw[-1]:  # a violator: merge the last two
            w_last, s_last, h_last = bw.pop(), bs.pop(), hi.pop()
            lo.pop()
            bw[-1] += w_last
            bs[-1] += s_last
            hi[-1] = h_last
    kx, ky = [], []
    for wt, s, a, b in zip(bw, bs, lo, hi):
        for j in ((a,) if a == b else (a, b)):
            kx.append(ux[j])
            ky.append(s / wt)
    return np.asarray(kx), np.asarray(ky)


def isotonic_predict(kx: np.ndarray, ky: np.ndarray, x) -> np.ndarray:
    """Linear interpolation between knots, constant beyond the first and last knot."""
    return np.interp(np.asarray(x, np.float64), kx, ky)


# ---------------------------------------------------------------------- query-dependent adapter
def query_features(top_cosines: np.ndarray, top_n: int) -> np.ndarray:
    """``phi(q) = [1, t_1, mean of the top top_n]`` per row of descending cosines ``(n_q, >=1)``."""
    t = np.asarray(top_cosines, np.float64)
    if t.ndim == 1:
        t = t[None, :]
    if t.shape[1] == 0:
        raise ValueError("query features need at least one retrieved cosine per query")
    t = t[:, :top_n]
    return np.stack([np.ones(len(t)), t[:, 0], t.mean(axis=1)], axis=1)


@dataclass
class QueryAdapter:
    """``z = a(q) c + b(q)`` with ``a = max(0, alpha . phi)``, ``b = beta . phi`` (module docstring)."""

    alpha: np.ndarray
    beta: np.ndarray
    top_n: int

    @classmethod
    def fit(cls, cos, phi, grade, *, top_n: int = CalibrationParams.top_n,
            ridge: float = CalibrationParams.ridge) -> "QueryAdapter":
        """Ridge least squares of ``grade`` on ``[phi * c, phi]`` (the intercept is not shrunk)."""
        cos, phi, g = np.asarray(cos, np.float64), np.asarray(phi, np.float64), np.asarray(grade, np.float64)
        X = np.concatenate([phi * cos[:, None], phi], axis=1)
        reg = ridge * len(g) * np.eye(X.shape[1])
        reg[phi.shape[1], phi.shape[1]] = 0.0  # column of the constant feature times 1: the intercept
        theta = np.linalg.solve(X.T @ X + reg, X.T @ g)
        k = phi.shape[1]
        return cls(alpha=theta[:k], beta=theta[k:], top_n=top_n)

    def transform(self, cos, phi) -> np.ndarray:
        a = np.maximum(np.asarray(phi) @ self.alpha, 0.0)
        b = np.asarray(phi) @ self.beta
        return a * np.asarray(cos, np.float64) + b


# ---------------------------------------------------------------------- the saved calibration
@dataclass
class Calibration:
    """A fitted cosine -> expected-grade map for one model (see the module docstring)."""

    fingerprint: str
    grade_min: float
    grade_max: float
    knots_x: np.ndarray
    knots_y: np.ndarray
    method: Method = "isotonic"
    adapter: QueryAdapter | None = None
    info: dict = field(default_factory=dict)  # what it was fitted on (data, split, sizes)

    @property
    def depth(self) -> int:
        """Hits of the ranking the query-dependent form reads (its top cosines); 0 for the global form."""
        return self.adapter.top_n if self.method == "query" and self.adapter is not None else 0

    def relevance(self, cos, top_cosines=None) -> np.ndarray:
        """Calibrated relevance of cosines ``cos`` of one query (``top_cosines``: its ranking's first scores)."""
        cos = np.asarray(cos, np.float64)
        if self.method == "query":
            if top_cosines is None or len(top_cosines) == 0:
                return np.full(cos.shape, self.grade_min)
            phi = query_features(np.asarray(top_cosines, np.float64)[None, :], self.adapter.top_n)[0]
            cos = self.adapter.transform(cos, phi)
        return np.clip(isotonic_predict(self.knots_x, self.knots_y, cos), self.grade_min, self.grade_max)

    def check_min_relevance(self, value: float, option: str = "min_relevance") -> None:
        if not (math.isfinite(value) and self.grade_min <= value <= self.grade_max):
            raise ConfigError(f"{option} must lie in the grade range [{self.grade_min:g}, {self.grade_max:g}] "
                              f"of the calibration, got {value!r}")

    def cut(self, hits: Sequence, min_relevance: float | None = None) -> tuple[list, list[float]]:
        """``(kept hits, their relevance)``: hits (each with ``.score``, a cosine, best first) whose
        relevance is at least ``min_relevance``. The map is monotone, so the kept hits are a prefix."""
        hits = list(hits)
        scores = np.array([h.score for h in hits], np.float64)
        rel = self.relevance(scores, scores[: self.depth] if self.depth else None) if hits else np.zeros(0)
        if min_relevance is not None:
            ok = rel >= min_relevance
            keep = len(hits) if ok.all() else int(np.argmin(ok))  # the first hit below the cut-off
            hits, rel = hits[:keep], rel[:keep]
        return hits, [round(float(r), 6) for r in rel]

    # ------------------------------------------------------------------ file format
    def to_json(self) -> dict:
        out = {"format": FORMAT, "model_fingerprint": self.fingerprint, "method": self.method,
               "grade_min": self.grade_min, "grade_max": self.grade_max,
               "knots": {"cosine" if self.method == "isotonic" else "z": self.knots_x.tolist(),
                         "grade": self.knots_y.tolist()}, "fit": self.info}
        if self.adapter is not None:
            out["adapter"] = {"top_n": self.adapter.top_n, "alpha": self.adapter.alpha.tolist(),
                              "beta": self.adapter.beta.tolist()}
        return out

    def save(self, path: str | Path) -> Path:
        from gcl.atomic import write_atomic

        data = (json.dumps(self.to_json(), indent=1) + "\n").encode("utf-8")
        return write_atomic(path, lambda fh: fh.write(data))

    @classmethod
    def load(cls, path: str | Path, *, model=None, model_name: str | None = None) -> "Calibration":
        """Read a calibration file; with ``model``, refuse one fitted for another model."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            knots = raw["knots"]
            kx = np.asarray(knots.get("cosine", knots.get("z")), np.float64)
            calib = cls(fingerprint=str(raw["model_fingerprint"]), grade_min=float(raw["grade_min"]),
                        grade_max=float(raw["grade_max"]), knots_x=kx,
                        knots_y=np.asarray(knots["grade"], np.float64), method=raw.get("method", "isotonic"),
                        info=dict(raw.get("fit") or {}))
            if raw.get("adapter"):
                a = raw["adapter"]
                calib.adapter = QueryAdapter(alpha=np.asarray(a["alpha"], np.float64),
                                             beta=np.asarray(a["beta"], np.float64), top_n=int(a["top_n"]))
        except FileNotFoundError:
            raise ConfigError(f"calibration file {path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path} is not a gcl calibration file ({type(exc).__name__}: {exc})") from None
        if raw.get("format") != FORMAT or calib.method not in METHODS or len(kx) == 0 or len(kx) != len(calib.knots_y) \
                or (calib.method == "query" and calib.adapter is None):
            raise ConfigError(f"{path} is not a {FORMAT} calibration file")
        if model is not None:
            mine = model.fingerprint()
            if mine != calib.fingerprint:
                raise ConfigError(f"calibration {path} was fitted for the model with fingerprint {calib.fingerprint}, "
                                  f"but {model_name or 'the model'} has fingerprint {mine}; "
                                  "run 'gcl calibrate' for this model")
        return calib


def default_path(model_ref: str | Path | None) -> Path | None:
    """``MODEL_DIR/gcl_calibration.json`` when ``model_ref`` is a local directory, else None."""
    if model_ref is None or not Path(model_ref).is_dir():
        return None
    return Path(model_ref) / CALIBRATION_FILE


def find_calibration(model, model_ref: str | Path | None, override: str | Path | None = None) -> Calibration | None:
    """The calibration named by ``override``, else the one saved in the model directory, else None;
    checked against ``model``'s fingerprint."""
    path = Path(override) if override else default_path(model_ref)
    if path is None or (not override and not path.is_file()):
        return None
    return Calibration.load(path, model=model, model_name=str(model_ref or "the model"))


# ---------------------------------------------------------------------- fitting
def fit_calibration(cos, grade, *, fingerprint: str, grade_range: tuple[float, float],
                    method: Method = CalibrationParams.method, top_cosines=None, query_index=None,
                    top_n: int = CalibrationParams.top_n, info: dict | None = None) -> Calibration:
    """Fit on judged pairs: cosines ``cos`` and grades ``grade``; for ``method="query"`` also
    ``query_index`` (row of ``top_cosines`` per pair) and ``top_cosines`` ``(n_queries, >=1)``."""
    cos, grade = np.asarray(cos, np.float64), np.asarray(grade, np.float64)
    if len(cos) == 0:
        raise ConfigError("no judged pairs to fit a calibration on")
    adapter = None
    z = cos
    if method == "query":
        phi = query_features(top_cosines, top_n)[np.asarray(query_index)]
        adapter = QueryAdapter.fit(cos, phi, grade, top_n=top_n)
        z = adapter.transform(cos, phi)
    elif method != "isotonic":
        raise ConfigError(f"unknown calibration method {method!r}; choose from {list(METHODS)}")
    kx, ky = isotonic_fit(z, grade)
    return Calibration(fingerprint=fingerprint, grade_min=float(grade_range[0]), grade_max=float(grade_range[1]),
                       knots_x=kx, knots_y=ky, method=method, adapter=adapter, info=dict(info or {}))


def expected_calibration_error(pred, grade, *, n_bins: int = 10, grade_range: tuple[float, float] | None = None) -> float:
    """Binned ECE on the grade scale: ``sum_b (n_b / n) |mean(pred_b) - mean(grade_b)|``, with
    ``n_bins`` equal-width bins of the prediction over the grade range (empty bins skipped)."""
    pred, grade = np.asarray(pred, np.float64), np.asarray(grade, np.float64)
    lo, hi = grade_range if grade_range is not None else (float(grade.min()), float(grade.max()))
    edges = np.linspace(lo, hi, n_bins + 1)
    b = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, n_bins - 1)
    total = 0.0
    for k in range(n_bins):
        m = b == k
        if m.any():
            total += m.sum() / len(pred) * abs(pred[m].mean() - grade[m].mean())
    return float(total)


def judged_pairs(model, ds, *, top_n: int = 0, batch_size: int = 256, show_progress: bool = False) -> dict:
    """Cosines of every judged pair of a split ``ds`` (a :class:`~gcl.data.schema.GradedDataset`).

    Returns ``cos``, ``grade``, ``query_index`` (row of the pair's query in ``ds.queries``) and,
    when ``top_n > 0``, ``top`` ``(n_queries, top_n)``: each query's best cosines over the split's
    whole corpus ``ds.documents`` (which then is encoded whole; otherwise only judged documents are).
    """
    from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, positions
    from gcl.evaluation.search import exact_search

    j = ds.judgments
    q = model.encode_queries(ds.queries, batch_size=batch_size, show_progress=False)
    if top_n > 0:
        docs = ds.documents
    else:
        docs = ds.documents.loc[j[DOC_ID].unique()]
    d = model.encode_documents(docs, batch_size=batch_size, show_progress=show_progress)
    qi, di = positions(j[QUERY_ID], ds.queries.index), positions(j[DOC_ID], docs.index)
    out = {"cos": np.einsum("ij,ij->i", q[qi], d[di]).astype(np.float64),
           "grade": j[SCORE].to_numpy(np.float64), "query_index": qi}
    if top_n > 0:
        out["top"] = exact_search(q, d, min(top_n, len(docs)))[0].astype(np.float64)
    return out
