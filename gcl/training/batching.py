"""Training pairs, batch samplers and pre-tokenised, dynamically padded text batches.

Batch composition decides what the loss can learn. With random batches two documents of one
query rarely meet, so a graded loss sees almost no within-query ranking signal. The
query-grouped sampler draws ``batch_size / docs_per_query`` queries and several graded
documents of each, so documents of different grades for the same query meet in one batch
(used with ``same_query="lower"`` in :class:`gcl.losses.GCLLoss`).

Samplers are deterministic given their seed and expose ``state_dict`` / ``load_state_dict``
so a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from gcl.errors import DataError
from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, GradedDataset


@dataclass
class TrainPairs:
    """Judged pairs as integer codes into unique query / document texts."""

    query_code: np.ndarray  # (n,) int64 index into query_texts
    doc_code: np.ndarray  # (n,) int64 index into doc_texts
    score: np.ndarray  # (n,) float64
    weight: np.ndarray  # (n,) float64, from the score-to-weight function
    query_texts: list[str]
    doc_texts: list[str]

    def __len__(self) -> int:
        return len(self.query_code)

    @classmethod
    def from_dataset(
        cls, ds: GradedDataset, weights: np.ndarray, *, query_field: str | None = None, doc_field: str | None = None
    ) -> "TrainPairs":
        j = ds.judgments
        if len(weights) != len(j):
            raise ValueError(f"{len(weights)} weights for {len(j)} judgments")
        q_codes, q_uniques = pd.factorize(j[QUERY_ID])
        d_codes, d_uniques = pd.factorize(j[DOC_ID])
        qf = query_field or ds.query_fields[0].name
        df = doc_field or ds.doc_fields[0].name
        q_texts = ds.queries.loc[q_uniques, qf].fillna("").astype(str).tolist()
        d_texts = ds.documents.loc[d_uniques, df].fillna("").astype(str).tolist()
        empty_q = [t for t in q_texts if not t.strip()]
        if empty_q:
            raise DataError(f"{len(empty_q)} training queries have empty text in field {qf!r}", source=ds.name, field=qf)
        return cls(
            query_code=q_codes.astype(np.int64),
            doc_code=d_codes.astype(np.int64),
            score=j[SCORE].to_numpy(dtype=np.float64),
            weight=np.asarray(weights, dtype=np.float64),
            query_texts=q_texts,
            doc_texts=d_texts,
        )


class _Sampler:
    def __init__(self, pairs: TrainPairs, batch_size: int, seed: int) -> None:
        if len(pairs) < batch_size:
            raise DataError(
                f"the training set has {len(pairs)} pairs, fewer than one batch of {batch_size}; "
                "lower batch.batch_size or add data"
            )
        self.pairs = pairs
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class RandomPairSampler(_Sampler):
    """Uniformly shuffled pairs, epoch after epoch (each epoch a fresh permutation)."""

    def __init__(self, pairs: TrainPairs, batch_size: int, seed: int) -> None:
        super().__init__(pairs, batch_size, seed)
        self._perm = np.empty(0, dtype=np.int64)
        self._pos = 0

    def next_batch(self) -> np.ndarray:
        if self._pos + self.batch_size > len(self._perm):
            self._perm = self.rng.permutation(len(self.pairs))
            self._pos = 0
        out = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "perm": self._perm.copy(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._perm = np.asarray(state["perm"], dtype=np.int64)
        self._pos = int(state["pos"])


class QueryGroupedSampler(_Sampler):
    """``floor(group_fraction * batch_size / docs_per_query)`` queries per batch, up to
    ``docs_per_query`` documents each; the rest of the batch is random pairs of other queries.

    Queries with at least two judged documents are drawn without replacement (epoch-wise); each
    contributes a uniform sample of its documents. Slots left free (by ``group_fraction < 1``, or
    by queries with fewer than ``docs_per_query`` documents) are filled with pairs drawn uniformly
    from the other queries' pairs. ``group_fraction`` trades the within-query order signal
    (documents of one query in one batch) against the number of distinct queries, whose
    documents are the in-batch negatives: 1 is all groups, values near 0 approach random batches.
    """

    def __init__(self, pairs: TrainPairs, batch_size: int, seed: int, docs_per_query: int = 4,
                 group_fraction: float = 1.0) -> None:
        super().__init__(pairs, batch_size, seed)
        if docs_per_query < 1 or docs_per_query > batch_size:
            raise ValueError("docs_per_query must be in [1, batch_size]")
        if not 0.0 < group_fraction <= 1.0:
            raise ValueError(f"group_fraction must be in (0, 1], got {group_fraction}")
        self.docs_per_query = docs_per_query
        self.n_groups = max(1, int(group_fraction * batch_size / docs_per_query + 1e-9))  # floor
        order = np.argsort(pairs.query_code, kind="stable")
        counts = np.bincount(pairs.query_code)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._by_query = [order[s : s + c] for s, c in zip(starts, counts)]
        self._eligible = np.flatnonzero(counts >= 2)
        if len(self._eligible) == 0:
            self._eligible = np.flatnonzero(counts >= 1)
        self._perm = np.empty(0, dtype=np.int64)
        self._pos = 0

    def _next_query(self) -> int:
        if self._pos >= len(self._perm):
            self._perm = self.rng.permutation(self._eligible)
            self._pos = 0
        q = int(self._perm[self._pos])
        self._pos += 1
        return q

    def next_batch(self) -> np.ndarray:
        chosen: list[np.ndarray] = []
        used_queries: set[int] = set()
        for _ in range(self.n_groups):
            q = self._next_query()
            if q in used_queries:
                continue
            used_queries.add(q)
            rows = self._by_query[q]
            take = min(self.docs_per_query, len(rows))
            chosen.append(self.rng.choice(rows, size=take, replace=False))
        batch = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
        missing = self.batch_size - len(batch)
        if missing > 0:
            pool = np.flatnonzero(~np.isin(self.pairs.query_code, list(used_queries)))
            if len(pool) < missing:
                pool = np.setdiff1d(np.arange(len(self.pairs)), batch)
            batch = np.concatenate([batch, self.rng.choice(pool, size=missing, replace=False)])
        return batch[: self.batch_size].astype(np.int64)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "perm": self._perm.copy(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._perm = np.asarray(state["perm"], dtype=np.int64)
        self._pos = int(state["pos"])


def make_sampler(pairs: TrainPairs, bc, seed: int) -> RandomPairSampler | QueryGroupedSampler:
    """The sampler a :class:`~gcl.training.config.BatchConfig` names (the trainer and the replay of
    :mod:`gcl.evaluation.seen` both build it here, so they draw the same batches)."""
    if bc.sampler == "query_grouped":
        return QueryGroupedSampler(pairs, bc.batch_size, seed, bc.docs_per_query, bc.group_fraction)
    return RandomPairSampler(pairs, bc.batch_size, seed)


def hard_negative_rows(pairs: TrainPairs, batch: np.ndarray, per_query: int, rng: np.random.Generator) -> np.ndarray:
    """For each query in ``batch``, up to ``per_query`` of its judged pairs whose score is strictly
    below every score of that query in the batch (documents known to rank lower), not in the batch."""
    if per_query <= 0:
        return np.empty(0, dtype=np.int64)
    in_batch = set(batch.tolist())
    out = []
    for q in np.unique(pairs.query_code[batch]):
        rows = np.flatnonzero(pairs.query_code == q)
        floor = pairs.score[batch[pairs.query_code[batch] == q]].min()
        cand = [r for r in rows if pairs.score[r] < floor and r not in in_batch]
        if cand:
            out.extend(rng.choice(cand, size=min(per_query, len(cand)), replace=False).tolist())
    return np.asarray(out, dtype=np.int64)


class TokenCache:
    """Texts tokenised once (no padding); batches are padded to their own longest sequence."""

    def __init__(self, tokenizer, texts: list[str], max_length: int) -> None:
        enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)
        self.ids: list[list[int]] = enc["input_ids"]
        self.lengths = np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))
        self.pad_id = tokenizer.pad_token_id or 0
        self.with_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])

    def collate(self, codes: np.ndarray) -> dict[str, torch.Tensor]:
        width = int(self.lengths[codes].max()) if len(codes) else 1
        ids = torch.full((len(codes), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(codes), width), dtype=torch.long)
        for row, c in enumerate(codes):
            seq = self.ids[c]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if self.with_token_types:
            out["token_type_ids"] = torch.zeros_like(ids)
        return out

    def chunks(self, codes: np.ndarray, chunk: int | None) -> list[np.ndarray]:
        return length_chunks(self.lengths, codes, chunk)

    def embed(self, model, codes: np.ndarray) -> torch.Tensor:
        """(n, d) embeddings of the texts ``codes`` through the whole tower, with a graph."""
        return model.embed_tokens(self.collate(codes))


def length_chunks(lengths: np.ndarray, codes: np.ndarray, chunk: int | None) -> list[np.ndarray]:
    """Positions of ``codes`` split into chunks of similar length (length-bucketed padding)."""
    if chunk is None or chunk >= len(codes):
        return [np.arange(len(codes))]
    order = np.argsort(lengths[codes], kind="stable")
    return [order[i : i + chunk] for i in range(0, len(order), chunk)]


def keep_positives(ds: GradedDataset, threshold: float | None) -> GradedDataset:
    """``ds`` with only the judged pairs of ``score >= threshold`` (the training positives).

    The thresholded binary baseline (``loss.positive_threshold``): a user with binary labels keeps
    the pairs raters called relevant and drops the rest from training (they are then neither
    positives nor weighted). ``None`` keeps every pair. Queries left without a pair are dropped;
    the documents table is kept whole. Raises :class:`DataError` when no pair is left.
    """
    if threshold is None:
        return ds
    keep = ds.judgments[SCORE].to_numpy(dtype=np.float64) >= float(threshold)
    if not keep.any():
        raise DataError(
            f"loss.positive_threshold={threshold}: no training pair has score >= {threshold} "
            f"(scores range {ds.judgments[SCORE].min()}..{ds.judgments[SCORE].max()})",
            source=ds.name,
        )
    judgments = ds.judgments[keep]
    queries = ds.queries.loc[ds.queries.index.isin(judgments[QUERY_ID].unique())]
    return replace(ds, queries=queries, judgments=judgments.reset_index(drop=True),
                   notes=[*ds.notes, f"positive_threshold {threshold}: kept {int(keep.sum())} of {len(keep)} pairs"])
