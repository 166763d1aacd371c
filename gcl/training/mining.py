"""Hard negatives for the GCL loss.

Besides the lower-graded documents of a batch query (:func:`gcl.training.batching.hard_negative_rows`),
negatives can be mined with the model being trained. :class:`NegativeMiner` returns document
*codes* (indices into ``TrainPairs.doc_texts``): documents the *current* model ranks high for a
training query but that are not judged for it. Every ``refresh`` steps the training documents
are re-encoded and each training query's top ``depth`` is searched exactly; judged documents of
the query are removed (their grade is handled by the loss), and ``skip`` top results are dropped
to reduce false negatives (unjudged but relevant documents tend to rank first).

Encoding goes through the model protocol (:class:`gcl.encoders.base.EmbeddingModel`:
``encode_queries`` / ``encode_documents``), so any model kind mines: ``queries`` / ``documents``
are the training queries and documents in code order, with every field the model reads (default:
one column per side holding the pairs' texts, named after the model's first field).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gcl.evaluation.search import exact_search
from gcl.training.batching import TrainPairs


class NegativeMiner:
    """Model-mined negatives, refreshed from an exact index of the training documents."""

    def __init__(self, pairs: TrainPairs, *, depth: int = 30, skip: int = 3, refresh: int = 100,
                 queries: pd.DataFrame | None = None, documents: pd.DataFrame | None = None) -> None:
        self.pairs = pairs
        self.queries, self.documents = queries, documents
        self.depth, self.skip, self.refresh = depth, skip, refresh
        judged: dict[int, set[int]] = {}
        for q, d in zip(pairs.query_code.tolist(), pairs.doc_code.tolist()):
            judged.setdefault(q, set()).add(d)
        self._judged = judged
        self._pool: dict[int, np.ndarray] = {}
        self.last_refresh: int | None = None

    def maybe_refresh(self, model, step: int) -> None:
        if self.last_refresh is not None and step - self.last_refresh < self.refresh:
            return
        was_training = model.training
        model.eval()
        q_table = self.queries if self.queries is not None else \
            pd.DataFrame({model.query_field_names[0]: self.pairs.query_texts})
        d_table = self.documents if self.documents is not None else \
            pd.DataFrame({model.doc_field_names[0]: self.pairs.doc_texts})
        with torch.inference_mode():
            docs = model.encode_documents(d_table)
            queries = model.encode_queries(q_table)
        model.train(was_training)
        _, idx = exact_search(queries, docs, self.depth + self.skip)
        self._pool = {}
        for q in range(len(self.pairs.query_texts)):
            ranked = [d for d in idx[q, self.skip :].tolist() if d >= 0 and d not in self._judged.get(q, ())]
            self._pool[q] = np.asarray(ranked, dtype=np.int64)
        self.last_refresh = step

    def state_dict(self) -> dict:
        width = max((len(v) for v in self._pool.values()), default=0)
        pool = np.full((len(self.pairs.query_texts), width), -1, dtype=np.int64)
        for q, v in self._pool.items():
            pool[q, : len(v)] = v
        return {"pool": torch.from_numpy(pool), "last_refresh": self.last_refresh, "filled": bool(self._pool)}

    def load_state_dict(self, state: dict) -> None:
        self.last_refresh = state["last_refresh"]
        pool = np.asarray(state["pool"])
        self._pool = {q: row[row >= 0] for q, row in enumerate(pool)} if state["filled"] else {}

    def sample(self, batch_query_codes: np.ndarray, per_query: int, rng: np.random.Generator) -> np.ndarray:
        out: list[int] = []
        for q in np.unique(batch_query_codes):
            pool = self._pool.get(int(q))
            if pool is not None and len(pool):
                out.extend(rng.choice(pool, size=min(per_query, len(pool)), replace=False).tolist())
        return np.asarray(out, dtype=np.int64)
