"""gcl: Generalized Contrastive Learning for retrieval and ranking from graded relevance.

What the docs teach is importable from here (``from gcl import load_model, GCLLoss, Trainer``):

* models: :func:`load_model`, :class:`EmbeddingModel` (the protocol), :func:`query_table`, :class:`BiEncoder`,
  :class:`MultiFieldModel`, their specs :class:`BiEncoderConfig`, :class:`MultiFieldConfig`;
* loss: :class:`GCLLoss`, :func:`get_weight_fn`, :data:`WEIGHT_FUNCTIONS`;
* training: :class:`Trainer`, :class:`TrainConfig`, :func:`load_config`;
* data: :func:`read_table`, :func:`build_splits`, :func:`make_synthetic`, :class:`GradedDataset`;
* metrics: :func:`compute_metrics`, :func:`judge_indices`, :func:`judge_run`, :data:`DEFAULT_METRICS`;
* evaluation: :class:`Protocol`, :func:`prepare_task`, :func:`evaluate_task`, :func:`exact_search`;
* index: :class:`VectorIndex`, :func:`open_index`, :func:`build_index`, :class:`SearchHit`;
* service: :class:`ServiceSettings`, :func:`create_app`;
* errors: :class:`GCLError`, :class:`ConfigError`, :class:`DataError` (see ``docs/errors.md``).

Importing the package is cheap and has no side effects: every name but the errors is imported
on first access (PEP 562), and heavy dependencies (torch, pandas, faiss, FastAPI) only then.
"""

from gcl.errors import ConfigError, DataError, GCLError
from gcl.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(["load_model", "EmbeddingModel", "query_table"], "gcl.encoders.base"),
    "BiEncoder": "gcl.encoders.model",
    "MultiFieldModel": "gcl.encoders.multifield",
    **dict.fromkeys(["BiEncoderConfig", "MultiFieldConfig", "FieldConfig", "TowerConfig"], "gcl.encoders.config"),
    "GCLLoss": "gcl.losses.gcl_loss",
    **dict.fromkeys(["get_weight_fn", "WEIGHT_FUNCTIONS"], "gcl.losses.weights"),
    **dict.fromkeys(["Trainer", "TrainResult"], "gcl.training.trainer"),
    "TrainConfig": "gcl.training.config",
    "load_config": "gcl.config",
    "read_table": "gcl.data.readers",
    "build_splits": "gcl.data.splits",
    "make_synthetic": "gcl.data.synthetic",
    "GradedDataset": "gcl.data.schema",
    **dict.fromkeys(["compute_metrics", "DEFAULT_METRICS"], "gcl.metrics.registry"),
    "judge_indices": "gcl.metrics.judged",
    "judge_run": "gcl.metrics.runs",
    **dict.fromkeys(["Protocol", "prepare_task", "evaluate_task", "results_table"], "gcl.evaluation.evaluator"),
    "exact_search": "gcl.evaluation.search",
    **dict.fromkeys(["VectorIndex", "SearchHit"], "gcl.index.store"),
    "open_index": "gcl.index.factory",
    "build_index": "gcl.index.build",
    "ServiceSettings": "gcl.service.settings",
    "create_app": "gcl.service.app",
}

__all__ = ["ConfigError", "DataError", "GCLError", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
