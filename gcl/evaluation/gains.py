"""A gain mapping that knows "irrelevant": grades below a threshold have gain 0.

The reference protocol maps scores to grades 1..100, so its lowest grade (Home Depot relevance
1.0, "irrelevant") still has gain 1 and counts as relevant for MAP, MRR, recall and P@k: a model
that correctly ranks such a document low loses MAP. The thresholded mapping, reported *beside*
the reference numbers (which stay exact), is

.. math:: \\mathrm{gain}_T(g) = \\begin{cases} g & g \\ge T \\\\ 0 & g < T \\end{cases}

on the reference grades ``g`` (1..100). A document with gain 0 is judged but not relevant: it adds
nothing to nDCG (neither to the run's DCG nor to the ideal DCG), ERR or RBP, and does not count
for MAP, MRR, recall or P@k (relevance level 1 on the mapped gains, trec_eval's ``-l 1``).
``T = 2`` makes exactly the lowest grade irrelevant. A raw score ``s`` of a split whose scores
span ``[s_min, s_max]`` has grade ``int((s - s_min) / (s_max - s_min) * 99 + 1)``: on Home Depot
(1..3) relevance 2.0 is grade 50, so ``T = 50`` keeps "relevant or better" (score >= 2).

The retrieved ranking is the same; only the grades it is judged against change, so these
numbers come from the same retrieval as the reference ones (:func:`score_ranking`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gcl.metrics import compute_metrics, judge_indices


def thresholded_gains(grades: np.ndarray, threshold: float) -> np.ndarray:
    """``grades`` with every value below ``threshold`` set to 0 (float64)."""
    threshold = check_threshold(threshold)
    g = np.asarray(grades, dtype=np.float64)
    return np.where(g >= threshold, g, 0.0)


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t) or t <= 1:
        raise ValueError(
            f"relevance threshold must be a finite grade > 1 (grades are 1..100; 2 makes only the "
            f"lowest grade irrelevant); got {threshold!r}"
        )
    return t


def thresholded_task(task, threshold: float):
    """A copy of ``task`` (an :class:`~gcl.evaluation.evaluator.EvalTask`) judged with
    :func:`thresholded_gains`; queries, documents and the judged pairs are unchanged."""
    from gcl.evaluation.protocol import GRADE

    qrels = task.qrels.copy()
    qrels[GRADE] = thresholded_gains(qrels[GRADE].to_numpy(), threshold)
    return replace(task, qrels=qrels, qrel_grade=thresholded_gains(task.qrel_grade, threshold))


def score_ranking(task, ranked: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """Per-query metrics of ``ranked`` (``(n_q, depth)`` corpus indices, ``-1`` padding)
    judged against ``task``'s qrels."""
    judged = judge_indices(ranked, task.qrel_query, task.qrel_doc, task.qrel_grade,
                           query_ids=task.queries.index.to_numpy())
    return compute_metrics(judged, metrics)
