"""Rank-cut metrics as trec_eval defines them: nDCG@k, AP@k (MAP@k), RR@k (MRR@k), recall@k, P@k.

Every function is a pure kernel over all queries at once (numpy, no loop over queries). A ranking
enters as the ranks and grades of its retrieved documents, row per query:

* ``ranks``: ``(n_q, m)`` int, 1-based ranks, increasing along each row;
* ``grades``: ``(n_q, m)`` float64, the grade of the document at that rank.

Only documents with a grade > 0 change any value, so ``m`` may be just those (the sparse form,
:attr:`gcl.metrics.JudgedRun.hits`, a few dozen columns for a 1,000-deep run) or every rank (the
dense form: ``ranks = [[1, 2, ..., depth]]`` broadcast, ``grades = JudgedRun.gains``). Padding
entries carry grade 0 and any rank >= 1. Further inputs:

* ``ideal``: ``(n_q, n)`` float64, each query's judged grades in descending order, 0-padded;
* ``n_relevant``: ``(n_q,)`` judged documents with ``grade >= relevance_level``, retrieved or not;
* ``relevance_level`` (> 0): a document is relevant when ``grade >= relevance_level``.

Each returns the per-query values, ``(n_q,)`` float64. In the formulas ``g_r`` is the grade at
rank ``r`` (0 if unjudged) and ``rel_r = [g_r >= relevance_level]``; a run shorter than ``k``
counts as padded with non-relevant documents. Ties in score were broken upstream (see
:func:`gcl.metrics.judge_run`); here the rank is the rank.

References:
    K. Järvelin and J. Kekäläinen. Cumulated gain-based evaluation of IR techniques.
    ACM TOIS 20(4):422-446, 2002 (nDCG).
    E. M. Voorhees. The TREC-8 question answering track report. TREC-8, 1999 (mean reciprocal
    rank).
    NIST trec_eval 9.0 (``ndcg_cut``, ``map_cut``, ``recip_rank``, ``recall``, ``P``) and
    C. Van Gysel and M. de Rijke. Pytrec_eval: an extremely fast Python interface to trec_eval.
    SIGIR 2018.
"""

from __future__ import annotations

import numpy as np

from gcl.errors import check_k

__all__ = [
    "log2_discount",
    "dcg",
    "ndcg",
    "average_precision",
    "reciprocal_rank",
    "recall",
    "precision",
]


def log2_discount(ranks: np.ndarray) -> np.ndarray:
    """``1 / log2(rank + 1)`` elementwise (rank 1 -> 1, rank 3 -> 0.5)."""
    return 1.0 / np.log2(np.asarray(ranks, dtype=np.float64) + 1.0)


def dcg(ranks: np.ndarray, grades: np.ndarray, k: int) -> np.ndarray:
    r"""Discounted cumulated gain at ``k``, gain = grade (linear, trec_eval's default).

    .. math:: \mathrm{DCG@}k = \sum_{r=1}^{k} \frac{g_r}{\log_2(r + 1)}
    """
    k = check_k(k, error=ValueError)
    return np.where(ranks <= k, grades * log2_discount(ranks), 0.0).sum(axis=1)


def ideal_dcg(ideal: np.ndarray, k: int) -> np.ndarray:
    """DCG@k of the ideal ranking: the judged grades in descending order."""
    k = check_k(k, error=ValueError)
    cut = ideal[:, :k]
    return cut @ log2_discount(np.arange(1, cut.shape[1] + 1))


def ndcg(ranks: np.ndarray, grades: np.ndarray, ideal: np.ndarray, k: int) -> np.ndarray:
    r"""nDCG@k exactly as trec_eval's ``ndcg_cut.k``.

    .. math::
        \mathrm{nDCG@}k = \frac{\mathrm{DCG@}k(g)}{\mathrm{DCG@}k(g^*)}, \qquad
        \mathrm{DCG@}k(g) = \sum_{r=1}^{k} \frac{g_r}{\log_2(r + 1)}

    ``g*`` is the query's judged grades sorted in descending order: the ideal ranking over all
    judged documents, retrieved or not. 0 when the ideal DCG is 0 (no judged grade > 0).
    Does not depend on ``relevance_level`` (neither does trec_eval's).
    """
    actual = dcg(ranks, grades, k)
    best = ideal_dcg(ideal, k)
    out = np.zeros(len(best))
    np.divide(actual, best, out=out, where=best > 0)
    return out


def _relevant(ranks: np.ndarray, grades: np.ndarray, k: int, relevance_level: float) -> np.ndarray:
    return (grades >= relevance_level) & (ranks <= check_k(k, error=ValueError))


def average_precision(
    ranks: np.ndarray, grades: np.ndarray, n_relevant: np.ndarray, k: int, relevance_level: float
) -> np.ndarray:
    r"""AP@k, as trec_eval's ``map_cut.k`` (its mean over queries is MAP@k).

    .. math::
        \mathrm{AP@}k = \frac{1}{R} \sum_{r=1}^{k} \mathrm{rel}_r \,
        \frac{\sum_{i \le r} \mathrm{rel}_i}{r}

    ``R`` = ``n_relevant``, the query's judged documents with ``grade >= relevance_level``,
    retrieved or not (an unretrieved relevant document adds precision 0). 0 when ``R = 0``.
    """
    rel = _relevant(ranks, grades, k, relevance_level)
    hits = np.cumsum(rel, axis=1)  # relevant documents up to and including this one
    precision_sum = np.where(rel, hits / ranks, 0.0).sum(axis=1)
    return _safe_divide(precision_sum, n_relevant)


def reciprocal_rank(
    ranks: np.ndarray, grades: np.ndarray, k: int, relevance_level: float
) -> np.ndarray:
    r"""RR@k: the reciprocal rank of the first relevant document within the top ``k``, else 0.

    .. math:: \mathrm{RR@}k = \max_{r \le k} \frac{\mathrm{rel}_r}{r}

    Equals trec_eval's ``recip_rank`` when ``k >= depth``. Its mean over queries is MRR@k.
    """
    rel = _relevant(ranks, grades, k, relevance_level)
    return np.where(rel, 1.0 / ranks, 0.0).max(axis=1, initial=0.0)


def recall(
    ranks: np.ndarray, grades: np.ndarray, n_relevant: np.ndarray, k: int, relevance_level: float
) -> np.ndarray:
    r"""Recall@k, as trec_eval's ``recall.k``.

    .. math:: \mathrm{Recall@}k = \frac{1}{R} \sum_{r=1}^{k} \mathrm{rel}_r

    ``R`` = ``n_relevant``, judged documents with ``grade >= relevance_level``. 0 when ``R = 0``.
    """
    hits = np.count_nonzero(_relevant(ranks, grades, k, relevance_level), axis=1)
    return _safe_divide(hits.astype(np.float64), n_relevant)


def precision(ranks: np.ndarray, grades: np.ndarray, k: int, relevance_level: float) -> np.ndarray:
    r"""P@k, as trec_eval's ``P.k``: divides by ``k`` even when fewer documents were retrieved.

    .. math:: \mathrm{P@}k = \frac{1}{k} \sum_{r=1}^{k} \mathrm{rel}_r
    """
    hits = np.count_nonzero(_relevant(ranks, grades, k, relevance_level), axis=1)
    return hits / float(check_k(k, error=ValueError))


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(len(num))
    np.divide(num, den, out=out, where=den > 0)
    return out
