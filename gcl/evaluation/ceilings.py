"""What ordering can buy: each query's judged documents in ideal order and in random order.

A retrieval metric mixes two abilities: finding the judged documents in a large corpus and
ordering them by grade. With perfect retrieval (the ranking holds exactly the query's judged
documents, nothing else), the metric still depends on their order:

* **ideal** -- judged documents by grade, descending: the most any ranker can score
  (nDCG@k = 1 for every query with a grade > 0);
* **random** -- judged documents in a uniformly random order: what a model that retrieves
  perfectly but cannot tell grades apart scores (a binary model, at best). Its expectation is
  estimated by the mean over ``n_shuffles`` seeded shuffles:

  .. math:: \\widehat{M}_{\\mathrm{random}} = \\frac{1}{S} \\sum_{s=1}^{S} \\frac{1}{|Q|}
            \\sum_{q \\in Q} M\\big(\\pi_{q,s}(J_q)\\big)

  with ``J_q`` the judged documents of query ``q`` and ``pi_{q,s}`` the s-th permutation;
* **headroom** = ideal - random: what ordering alone can add over perfect binary retrieval
  (``headroom / random`` is the relative gain, e.g. +5.8 % nDCG@10 on Home Depot).

The ceilings read only the ground truth (grades), never a model, so they are the same for every
run of a split and protocol. Judged documents outside the ground truth (below the protocol's
``gt_top``) are not in it and so not ranked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gcl.evaluation.settings import CeilingSettings
from gcl.metrics import compute_metrics, judge_indices

__all__ = ["CeilingSettings", "Ceilings", "ceilings_table", "ordering_ceilings", "rank_by_key"]


@dataclass
class Ceilings:
    """Mean metrics of the judged documents in ideal and in random order (one split)."""

    ideal: dict[str, float]
    random: dict[str, float]
    settings: CeilingSettings = field(default_factory=CeilingSettings)

    @property
    def headroom(self) -> dict[str, float]:
        """``ideal - random`` per metric."""
        return {m: self.ideal[m] - self.random[m] for m in self.ideal}

    def to_dict(self) -> dict:
        return {
            "ideal": self.ideal,
            "random": self.random,
            "headroom": self.headroom,
            "random_shuffles": self.settings.n_shuffles,
            "random_seed": self.settings.seed,
        }


def rank_by_key(qrel_query: np.ndarray, qrel_doc: np.ndarray, key: np.ndarray, n_queries: int) -> np.ndarray:
    """``(n_queries, max_judged)`` document indices, each query's judged documents by ``key``
    ascending (stable: equal keys keep qrel order), ``-1``-padded on the right."""
    qrel_query = np.asarray(qrel_query, dtype=np.int64)
    order = np.lexsort((np.asarray(key), qrel_query))
    counts = np.bincount(qrel_query, minlength=n_queries)
    q = qrel_query[order]
    slot = np.arange(len(order)) - (np.cumsum(counts) - counts)[q]
    ranked = np.full((n_queries, int(counts.max(initial=0))), -1, dtype=np.int64)
    ranked[q, slot] = np.asarray(qrel_doc, dtype=np.int64)[order]
    return ranked


def judged_order_metrics(
    qrel_query: np.ndarray,
    qrel_doc: np.ndarray,
    qrel_grade: np.ndarray,
    n_queries: int,
    metrics,
    key: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-query metrics of the ranking that holds only the judged documents, ordered by ``key``."""
    ranked = rank_by_key(qrel_query, qrel_doc, key, n_queries)
    judged = judge_indices(ranked, qrel_query, qrel_doc, qrel_grade)
    return compute_metrics(judged, metrics)


def ordering_ceilings(task, metrics, settings: CeilingSettings | None = None) -> Ceilings:
    """Ideal-order and random-order (mean of seeded shuffles) metrics of ``task``'s ground truth.

    ``task`` is an :class:`~gcl.evaluation.evaluator.EvalTask` (its ``qrel_*`` arrays); the
    mean is over the task's queries, as in the evaluation itself. Shuffle ``s`` draws one uniform
    key per judgment from ``numpy.random.default_rng(seed)`` (the s-th draw of one generator),
    so the same task, metrics and settings always give the same numbers.
    """
    settings = settings or CeilingSettings()
    args = (task.qrel_query, task.qrel_doc, task.qrel_grade, len(task.queries), metrics)
    ideal = judged_order_metrics(*args, key=-np.asarray(task.qrel_grade, dtype=np.float64))
    rng = np.random.default_rng(settings.seed)
    total = {m: np.zeros(len(task.queries)) for m in ideal}
    for _ in range(settings.n_shuffles):
        values = judged_order_metrics(*args, key=rng.random(len(task.qrel_grade)))
        for m, v in values.items():
            total[m] += v
    return Ceilings(
        ideal=_mean(ideal),
        random=_mean({m: v / settings.n_shuffles for m, v in total.items()}),
        settings=settings,
    )


def ceilings_table(rows: list[tuple[str, Ceilings]], columns: tuple[str, ...]) -> str:
    """Text table: per split the ideal, random and headroom rows of ``columns``."""
    head = f"{'split':<14}{'order':<10}" + "".join(f"{c:>10}" for c in columns)
    lines = [head, "-" * len(head)]
    for name, c in rows:
        for label, values in (("ideal", c.ideal), ("random", c.random), ("headroom", c.headroom)):
            cells = "".join(f"{values.get(m, float('nan')):>10.4f}" for m in columns)
            lines.append(f"{name:<14}{label:<10}{cells}")
    return "\n".join(lines)


def _mean(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {m: float(np.mean(v)) if len(v) else float("nan") for m, v in per_query.items()}
