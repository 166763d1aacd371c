"""Metric names, their parser, and :func:`compute_metrics`, the one entry point the evaluator calls.

Grammar (lower case, no spaces; ``k`` an integer >= 1, ``P`` a number in (0, 1)):

==============  =====================================================  ==========================
name            metric                                                 trec_eval equivalent
==============  =====================================================  ==========================
``ndcg@k``      nDCG at k, gain = grade                                ``ndcg_cut.k``
``map@k``       average precision at k (mean over queries: MAP)        ``map_cut.k``
``mrr@k``       reciprocal rank of the first relevant doc in top k     ``recip_rank`` (k >= depth)
``recall@k``    recall at k                                            ``recall.k``
``p@k``         precision at k (divides by k)                          ``P.k``
``err``         ERR over the whole retrieved list                      --
``err@k``       ERR over the top k                                     --
``rbp@P``       graded RBP with persistence P, e.g. ``rbp@0.9``        --
==============  =====================================================  ==========================
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import gcl.metrics.cascade as cascade
import gcl.metrics.ranking as ranking
from gcl.metrics.judged import JudgedRun, check_relevance_level

__all__ = [
    "DEFAULT_METRICS",
    "REFERENCE_COLUMNS",
    "MetricSpec",
    "parse_metric",
    "compute_metrics",
]

DEFAULT_METRICS: tuple[str, ...] = (
    "ndcg@10",
    "map@1000",
    "mrr@1000",
    "recall@100",
    "p@10",
    "err",
    "rbp@0.7",
    "rbp@0.8",
    "rbp@0.9",
)

#: Summary columns of the Marqo-GS-10M reference evaluation -> our metric names, in its order.
REFERENCE_COLUMNS: dict[str, str] = {
    "mAP@1000": "map@1000",
    "mrr@1000": "mrr@1000",
    "NDCG@10": "ndcg@10",
    "mERR": "err",
    "mRBP7": "rbp@0.7",
    "mRBP8": "rbp@0.8",
    "mRBP9": "rbp@0.9",
}

_CUT_FAMILIES = ("ndcg", "map", "mrr", "recall", "p")
_GRAMMAR = (
    "ndcg@k, map@k, mrr@k, recall@k, p@k, err, err@k (k an integer >= 1) or rbp@P (0 < P < 1), "
    "e.g. 'ndcg@10', 'err', 'rbp@0.9'"
)
_NAME = re.compile(r"(?P<family>[a-z]+)(?:@(?P<arg>[^@]*))?")
_INT = re.compile(r"[1-9][0-9]*")
_FLOAT = re.compile(r"(?:0|[1-9][0-9]*)?\.[0-9]+|0|1")


@dataclass(frozen=True)
class MetricSpec:
    """A parsed metric name: ``family`` with its cut-off ``k`` or persistence ``p``."""

    name: str
    family: str
    k: int | None = None
    p: float | None = None


def parse_metric(name: str) -> MetricSpec:
    """Parse a metric name such as ``"ndcg@10"``, ``"err"`` or ``"rbp@0.8"``.

    Raises:
        ValueError: for an unknown family, a missing or malformed cut-off, or ``P`` outside (0, 1).
    """
    if not isinstance(name, str):
        raise ValueError(f"metric name must be a string; got {type(name).__name__} {name!r}")
    m = _NAME.fullmatch(name)
    family = m.group("family") if m else None
    if family not in (*_CUT_FAMILIES, "err", "rbp"):
        hint = " (metric names are lower case)" if name.lower() != name else ""
        raise ValueError(f"unknown metric {name!r}{hint}; expected one of {_GRAMMAR}")
    arg = m.group("arg")
    if family == "rbp":
        if arg is None or not _FLOAT.fullmatch(arg) or not 0.0 < float(arg) < 1.0:
            raise ValueError(
                f"metric {name!r}: RBP needs a persistence P with 0 < P < 1, e.g. 'rbp@0.9'"
            )
        return MetricSpec(name=name, family=family, p=float(arg))
    if arg is None:
        if family == "err":
            return MetricSpec(name=name, family=family)
        raise ValueError(f"metric {name!r}: needs a cut-off k, e.g. '{family}@10'")
    if not _INT.fullmatch(arg):
        raise ValueError(
            f"metric {name!r}: cut-off must be an integer >= 1 (no sign, no leading zero), "
            f"e.g. '{family}@10'"
        )
    return MetricSpec(name=name, family=family, k=int(arg))


def compute_metrics(
    judged: JudgedRun,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    relevance_level: float = 1,
) -> dict[str, np.ndarray]:
    """Per-query values of each metric: ``{name: (n_q,) float64}``, keys in the order given.

    ``relevance_level``: a document is relevant for MAP, MRR, recall and P when its grade is
    ``>= relevance_level`` (trec_eval's ``-l``; must be > 0 so unjudged documents never count).
    nDCG, ERR and RBP use the grades themselves and ignore it.

    All names are parsed before any work, so a bad name raises ``ValueError`` at once.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    specs = [parse_metric(name) for name in metrics]
    check_relevance_level(relevance_level)

    ranks, grades = judged.hits  # sparse: only retrieved documents with a grade > 0
    level = relevance_level
    n_rel: np.ndarray | None = None
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name in out:
            continue
        f, k = spec.family, spec.k
        if f in ("map", "recall") and n_rel is None:
            n_rel = judged.n_relevant(level)
        if f == "ndcg":
            value = ranking.ndcg(ranks, grades, judged.ideal, k)
        elif f == "map":
            value = ranking.average_precision(ranks, grades, n_rel, k, level)
        elif f == "mrr":
            value = ranking.reciprocal_rank(ranks, grades, k, level)
        elif f == "recall":
            value = ranking.recall(ranks, grades, n_rel, k, level)
        elif f == "p":
            value = ranking.precision(ranks, grades, k, level)
        elif f == "err":
            value = cascade.err(ranks, grades, judged.max_grade, k)
        else:  # rbp
            value = cascade.rbp(ranks, grades, judged.max_grade, spec.p)
        out[spec.name] = value
    return out
