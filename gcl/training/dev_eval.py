"""Evaluation on the dev split during training (for keep-best and early stopping).

The dev split holds training-pool queries withheld from training (never test queries). To keep
periodic evaluation cheap, its corpus is every document judged for a dev query plus a fixed
random sample of other training-corpus documents, ``dev_corpus_size`` in all. Scores use the
``all`` protocol (every dev query) with graded metrics over the top 100.
"""

from __future__ import annotations

import numpy as np

from gcl.evaluation.evaluator import Protocol, evaluate_task, prepare_task
from gcl.evaluation.retrievers import DenseRetriever
from gcl.training.config import DEV_METRICS


class DevEvaluator:
    def __init__(self, splits, eval_cfg, *, seed: int = 0) -> None:
        dev = splits.dev
        corpus = splits.corpus_1 if getattr(splits, "corpus_1", None) is not None else dev.documents
        judged = dev.judgments["doc_id"].unique()
        others = corpus.index.difference(judged)
        n_fill = max(0, min(len(others), eval_cfg.dev_corpus_size - len(judged)))
        rng = np.random.default_rng(seed)
        fill = others[np.sort(rng.choice(len(others), size=n_fill, replace=False))] if n_fill else others[:0]
        docs = corpus.loc[list(judged) + list(fill)]
        sub = dev.subset(doc_ids=docs.index, name="dev")
        sub.documents = docs
        self.protocol = Protocol(name="all", depth=100, metrics=DEV_METRICS)
        self.task = prepare_task(sub, self.protocol, name="dev")

    def __call__(self, model) -> dict[str, float]:
        retriever = DenseRetriever(model, show_progress=False)
        return evaluate_task(self.task, retriever, self.protocol).summary
