"""Evaluation of a retriever on graded splits (``docs/evaluation.md``).

``task = prepare_task(split, Protocol())`` derives grades, test queries and ground truth;
``evaluate_task(task, DenseRetriever(model), protocol)`` retrieves and scores it
(:class:`SplitResult`); :func:`results_table` prints several. :func:`exact_search` is the exact
top-k with the documented tie rule. Names are imported on first access (cheap package import).
"""

from gcl.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Protocol", "EvalTask", "SplitResult", "prepare_task", "evaluate_task", "results_table",
                     "write_results"], "gcl.evaluation.evaluator"),
    **dict.fromkeys(["DenseRetriever", "HybridRetriever"], "gcl.evaluation.retrievers"),
    "exact_search": "gcl.evaluation.search",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
