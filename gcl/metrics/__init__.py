"""Graded ranking metrics: nDCG, MAP, MRR, recall, P (as trec_eval), ERR and RBP (as Marqo-GS).

Usage::

    from gcl.metrics import judge_indices, compute_metrics

    judged = judge_indices(ranked, qrel_query, qrel_doc, qrel_grade)  # order of `ranked` = ranking
    per_query = compute_metrics(judged, ["ndcg@10", "err", "rbp@0.9"])  # {name: (n_q,) float64}

``judge_run`` takes pytrec_eval-style dicts and breaks score ties by document id, descending, as
trec_eval does. Definitions, formulas and citations: ``docs/metrics.md``.
"""

from gcl.metrics.judged import JudgedRun, judge_indices
from gcl.metrics.runs import judge_run
from gcl.metrics.registry import (
    DEFAULT_METRICS,
    REFERENCE_COLUMNS,
    MetricSpec,
    compute_metrics,
    parse_metric,
)

__all__ = [
    "DEFAULT_METRICS",
    "REFERENCE_COLUMNS",
    "JudgedRun",
    "MetricSpec",
    "compute_metrics",
    "judge_indices",
    "judge_run",
    "parse_metric",
]
