"""User-model metrics with graded stopping: ERR and RBP, as the Marqo-GS-10M protocol defines them.

Both normalise a document's grade by ``max_rel``, the query's largest judged grade (not a fixed
scale maximum), so every value lies in ``[0, 1]`` whatever the grade range. Kernels take the
ranking in the form of :mod:`gcl.metrics.ranking` (``ranks``, ``grades``: ``(n_q, m)``, ranks
1-based and increasing along each row; only grades > 0 matter, dense or sparse alike) plus

* ``max_grade``: ``(n_q,)`` float64, the query's largest judged grade (0 if it has none),

and are vectorised over all queries: a cumulative product along the rank axis, no query loop.

References:
    O. Chapelle, D. Metzler, Y. Zhang and P. Grinspan. Expected reciprocal rank for graded
    relevance. CIKM 2009.
    A. Moffat and J. Zobel. Rank-biased precision for measurement of retrieval effectiveness.
    ACM TOIS 27(1), article 2, 2008.
    T. Zhu, M. C. Jung and J. Clark. Generalized contrastive learning for multi-modal retrieval
    and ranking. arXiv:2404.08535, 2024 (the Marqo-GS-10M evaluation: ERR over the whole
    retrieved list, RBP with p = 0.7, 0.8, 0.9).
"""

from __future__ import annotations

import numpy as np

from gcl.errors import check_k

__all__ = ["stop_probability", "err", "rbp"]

_LN2 = np.log(2.0)


def stop_probability(grades: np.ndarray, max_grade: np.ndarray) -> np.ndarray:
    r"""``R = (2^{rel} - 1) / 2^{max\_rel}`` elementwise, without ever forming ``2^{rel}``.

    Evaluated as ``R = (1 - 2^{-rel}) 2^{rel - max\_rel}`` with ``expm1`` for the first factor:
    no overflow for grades of 100 or far above (``2^{1100}`` is not a float64), full relative
    precision for small and fractional grades, and ``R = 0`` exactly for ``rel = 0``.
    """
    g = np.asarray(grades, dtype=np.float64)
    m = np.asarray(max_grade, dtype=np.float64)[:, None]
    return -np.expm1(-g * _LN2) * np.exp2(g - m)


def err(
    ranks: np.ndarray, grades: np.ndarray, max_grade: np.ndarray, k: int | None = None
) -> np.ndarray:
    r"""Expected reciprocal rank over the whole retrieved list (``k=None``) or its top ``k``.

    .. math::
        \mathrm{ERR} = \sum_{r=1}^{n} \frac{R_r}{r} \prod_{i<r} (1 - R_i), \qquad
        R_r = \frac{2^{\mathrm{rel}_r} - 1}{2^{\mathrm{max\_rel}}}

    This is the reference loop ``ERR += p_stop * R / rank; p_stop *= (1 - R)`` (``p_stop = 1``
    at rank 1). A document of grade 0 has ``R = 0`` and multiplies ``p_stop`` by exactly 1, so
    leaving it out (the sparse form) changes nothing. ``max_rel`` is the query's largest judged
    grade; a query without one scores 0. (Chapelle et al. normalise by the largest grade of the
    scale; the protocol uses the query's.)
    """
    stop = stop_probability(grades, max_grade)
    if k is not None:
        stop = np.where(ranks <= check_k(k, error=ValueError), stop, 0.0)
    if stop.shape[1] == 0:
        return np.zeros(stop.shape[0])
    # p_stop before each entry = prod of (1 - R) over the earlier entries: an exclusive cumprod.
    reach = np.empty_like(stop)
    reach[:, 0] = 1.0
    np.cumprod(1.0 - stop[:, :-1], axis=1, out=reach[:, 1:])
    return (reach * stop / ranks).sum(axis=1)


def rbp(ranks: np.ndarray, grades: np.ndarray, max_grade: np.ndarray, p: float) -> np.ndarray:
    r"""Graded rank-biased precision with persistence ``p`` over the whole retrieved list.

    .. math::
        \mathrm{RBP}(p) = (1 - p) \sum_{r=1}^{n} \frac{\mathrm{rel}_r}{\mathrm{max\_rel}}\,
        p^{\,r-1}

    At most 1 (each grade is divided by the query's largest grade ``max_rel``); 0 for a query
    without a judged grade > 0. No residual is reported.
    """
    if not (0.0 < float(p) < 1.0):
        raise ValueError(f"RBP persistence p must lie in (0, 1); got {p!r}")
    p = float(p)
    total = (grades * np.power(p, ranks - 1.0)).sum(axis=1)
    out = np.zeros(len(total))
    m = np.asarray(max_grade, dtype=np.float64)
    np.divide(total, m, out=out, where=m > 0)
    return (1.0 - p) * out
