"""Training data for ``SentenceTransformerTrainer`` with the GCL loss: the dataset layout it
expects, a gcl dataset converted to it, and gcl's query-grouped batch sampler.

The loss is :class:`gcl.sentence_transformers.GCLLoss`, which re-exports everything here; see
``docs/sentence_transformers.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

from gcl.errors import DataError
from gcl.training.batching import QueryGroupedSampler, TrainPairs
from gcl.training.config import BatchConfig

__all__ = ["LABEL_COLUMNS", "DatasetLayout", "check_dataset", "to_st_dataset", "GCLBatchSampler"]

#: sentence-transformers' label column names, in the order its collator looks for them.
LABEL_COLUMNS = ("label", "labels", "score", "scores")
EXACT_FLOAT32_INT = 2**24  # the collator turns labels into float32: integer ids are exact below this

MISSING_SCORE = (
    "GCLLoss needs a graded score per row: add a column named 'score' (float) after the query and "
    "document columns, or 'label' holding [score, query_id]"
)


# --------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class DatasetLayout:
    """Which columns of a training dataset hold what (see :func:`check_dataset`)."""

    query: str
    document: str
    label: str
    query_ids: bool  # the label holds [score, query_id]


def check_dataset(dataset: Any, label_columns: Iterable[str] | None = None) -> DatasetLayout:
    """The dataset's layout, or a :class:`DataError` naming the offending column.

    Expects, in order, two text columns (query, document) and one label column (the first present
    of ``label_columns``, default sentence-transformers' ``label``, ``labels``, ``score``,
    ``scores``) holding finite scores, or ``[score, query_id]`` pairs with integer ids in
    ``[0, 2**24)`` (the collator turns labels into float32, exact for such integers).
    """
    names = [c for c in getattr(dataset, "column_names", None) or [] if c != "dataset_name"]
    if not names:
        raise DataError("the training dataset has no columns (expected query, document, score)")
    label = next((c for c in (label_columns or LABEL_COLUMNS) if c in names), None)
    if label is None:
        raise DataError(f"{MISSING_SCORE}; the dataset has columns {names}", field="score")
    texts = [c for c in names if c != label]
    features = getattr(dataset, "features", None) or {}
    for col in texts:
        dtype = getattr(features.get(col), "dtype", None)
        if dtype not in ("string", "large_string"):
            raise DataError(
                f"column {col!r} holds {dtype or type(features.get(col)).__name__}, not text: every column but "
                f"the label {label!r} is tokenised as text (put a query id in 'label' as [score, query_id])",
                field=col,
            )
    if len(texts) != 2:
        raise DataError(f"expected 2 text columns (query, then document) besides {label!r}, got {texts}",
                        field=texts[-1] if texts else label)
    values = label_array(dataset[label], label)
    return DatasetLayout(query=texts[0], document=texts[1], label=label, query_ids=values.ndim == 2)


def label_array(values: Any, column: str) -> np.ndarray:
    try:
        arr = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"column {column!r} must hold numbers (or [score, query_id] pairs)", field=column) from None
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 2)):
        raise DataError(f"column {column!r} must hold one score or a [score, query_id] pair per row", field=column)
    bad = ~np.isfinite(arr).all(axis=-1) if arr.ndim == 2 else ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"column {column!r} holds a non-finite value", field=column, row=int(np.flatnonzero(bad)[0]))
    if arr.ndim == 2:
        ids = arr[:, 1]
        bad = (ids != np.round(ids)) | (ids < 0) | (ids >= EXACT_FLOAT32_INT)
        if bad.any():
            raise DataError(
                f"column {column!r}: query ids must be integers in [0, 2**24), got {ids[bad][0]!r}",
                field=column, row=int(np.flatnonzero(bad)[0]),
            )
    return arr


def to_st_dataset(ds: Any, *, query_field: str | None = None, doc_field: str | None = None,
                  query_ids: bool = False) -> Any:
    """A gcl :class:`~gcl.data.schema.GradedDataset` as a ``datasets.Dataset``, one row per judgment.

    Columns ``query``, ``document``, ``score`` (judgment order, the first query / document text
    field unless named); with ``query_ids=True`` the last is ``label = [score, query_code]``
    (query codes 0..n-1 in order of first appearance, as ``gcl train`` numbers them).
    """
    from datasets import Dataset

    pairs = TrainPairs.from_dataset(ds, np.ones(len(ds.judgments)), query_field=query_field, doc_field=doc_field)
    data = {
        "query": [pairs.query_texts[c] for c in pairs.query_code],
        "document": [pairs.doc_texts[c] for c in pairs.doc_code],
    }
    if query_ids:
        data["label"] = np.stack([pairs.score, pairs.query_code.astype(np.float64)], axis=1).tolist()
    else:
        data["score"] = pairs.score.tolist()
    return Dataset.from_dict(data)


# --------------------------------------------------------------------------- sampler
class GCLBatchSampler(DefaultBatchSampler):
    """Query-grouped batches for ``SentenceTransformerTrainingArguments(batch_sampler=GCLBatchSampler)``.

    Each batch is drawn by gcl's :class:`~gcl.training.batching.QueryGroupedSampler` (the sampler of
    ``gcl train`` with ``batch.sampler: query_grouped``): ``group_fraction * batch_size / docs_per_query`` queries
    with >= 2 judged documents, up to ``docs_per_query`` graded documents each, free slots filled
    with other queries' pairs. Then duplicates that could be false negatives are replaced: a row
    whose document text is already in the batch, or whose query text already stands for another
    query id, gives way to a random row that fits. Every batch has exactly ``batch_size`` rows;
    an epoch is ``len(dataset) // batch_size`` batches (``drop_last`` has no effect).

    Deterministic: epoch ``e`` draws from ``numpy.random.default_rng(seed + e)`` (``seed`` is the
    trainer's ``args.seed``; ``generator`` is not used). ``docs_per_query`` (default
    ``BatchConfig.docs_per_query``) and ``group_fraction`` (the share of the batch drawn as query groups, the
    rest random pairs; default 1): ``functools.partial(GCLBatchSampler, docs_per_query=8)``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool = False,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        docs_per_query: int = BatchConfig.docs_per_query,
        group_fraction: float = BatchConfig.group_fraction,
    ) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        layout = check_dataset(dataset, valid_label_columns)
        labels = label_array(dataset[layout.label], layout.label)
        q_text, q_uniques = pd.factorize(pd.Series(list(dataset[layout.query]), dtype=object))
        d_text, d_uniques = pd.factorize(pd.Series(list(dataset[layout.document]), dtype=object))
        key = pd.factorize(labels[:, 1])[0] if layout.query_ids else q_text
        scores = labels[:, 0] if layout.query_ids else labels
        self.pairs = TrainPairs(
            query_code=np.asarray(key, dtype=np.int64), doc_code=np.asarray(d_text, dtype=np.int64),
            score=scores, weight=np.ones(len(scores)),
            query_texts=[str(t) for t in q_uniques], doc_texts=[str(t) for t in d_uniques],
        )
        self._query_text = np.asarray(q_text, dtype=np.int64)
        self.docs_per_query = int(docs_per_query)
        self.group_fraction = float(group_fraction)
        self._sampler(seed)  # checks sizes now

    def __len__(self) -> int:
        return len(self.pairs) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        sampler = self._sampler(self.seed + self.epoch)
        for _ in range(len(self)):
            yield self._without_duplicates(sampler.next_batch(), sampler.rng).tolist()

    def _sampler(self, seed: int) -> QueryGroupedSampler:
        return QueryGroupedSampler(self.pairs, self.batch_size, seed, self.docs_per_query, self.group_fraction)

    def _without_duplicates(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        doc, key, text = self.pairs.doc_code, self.pairs.query_code, self._query_text
        docs: set[int] = set()
        owner: dict[int, int] = {}  # query text -> the query id it stands for in this batch
        keep: list[int] = []

        def take(r: int) -> None:
            if doc[r] not in docs and owner.get(text[r], key[r]) == key[r]:
                keep.append(int(r))
                docs.add(doc[r])
                owner[text[r]] = key[r]

        for r in rows:
            take(r)
        if len(keep) < self.batch_size:
            for r in rng.permutation(len(self.pairs)):
                take(r)
                if len(keep) == self.batch_size:
                    break
            else:
                raise DataError(
                    f"cannot fill a batch of {self.batch_size} rows without repeating a document text "
                    f"(the dataset has {len(self.pairs.doc_texts)} distinct documents); lower the batch size",
                    field="document",
                )
        return np.asarray(keep, dtype=np.int64)
