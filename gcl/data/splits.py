"""Benchmark splits in the Marqo-GS-10M design: training queries/corpus versus novel ones.

Queries are split at random into Q0 (training, ``query_frac_train``) and Q1 (novel), documents
into D0 (training corpus, ``doc_frac_train``) and D1 (novel corpus). A fraction ``dev_frac`` of
Q0 is withheld from training as a development set (early stopping); it is carved from training
queries only, never from test queries. Every judgment of the source falls in exactly one of::

    train         (Q0 - dev) x D0      what the trainer sees
    dev           dev x D0             early stopping, evaluated against corpus_1
    novel_query   Q1 x D0              query_1_product_id_0, against corpus_1
    novel_corpus  Q0 x D1              query_0_product_id_1, against corpus_2
    zero_shot     Q1 x D1              query_1_product_id_1, against corpus_2

and ``in_domain`` = Q0 x D0 = train + dev (``query_0_product_id_0``: the training queries on the
training corpus; the reference protocol samples its test queries from it). ``corpus_1`` holds all
of D0 (judged or not), ``corpus_2`` all of D1; each split's ``documents`` is its whole corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gcl.errors import ConfigError
from gcl.data.marqo import write_marqo_layout
from gcl.data.schema import DOC_ID, QUERY_ID, GradedDataset, isin, positions

SPLIT_FILES = {
    "in_domain": "query_0_product_id_0",
    "novel_query": "query_1_product_id_0",
    "novel_corpus": "query_0_product_id_1",
    "zero_shot": "query_1_product_id_1",
}
#: the share of training queries withheld as the dev split, unless told otherwise
DEFAULT_DEV_FRAC = 0.05
EVAL_SPLITS = tuple(SPLIT_FILES)
ALL_SPLITS = ("train", "dev", *EVAL_SPLITS)
MANIFEST = "splits.json"


@dataclass
class BenchmarkSplits:
    """The datasets of a benchmark plus the id partitions they come from."""

    train: GradedDataset
    dev: GradedDataset
    in_domain: GradedDataset
    novel_query: GradedDataset
    novel_corpus: GradedDataset
    zero_shot: GradedDataset
    corpus_1: pd.DataFrame
    corpus_2: pd.DataFrame
    q0: pd.Index
    q1: pd.Index
    dev_queries: pd.Index
    d0: pd.Index
    d1: pd.Index
    seed: int
    fractions: dict[str, float] = field(default_factory=dict)
    source: str = "dataset"
    source_judgments: int = 0
    # per split: (row of each judgment's document in the split's corpus, an integer per query id),
    # known from build_splits' integer codes, so write() needs no second lookup of the string ids
    row_hints: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def sizes(self) -> dict[str, dict[str, int]]:
        """Per split: queries, judged documents, corpus documents and judgments."""
        out = {}
        for name in ALL_SPLITS:
            ds: GradedDataset = getattr(self, name)
            doc_rows, query_rows = self.row_hints.get(name, (ds.judgments[DOC_ID], ds.judgments[QUERY_ID]))
            out[name] = {
                "queries": len(pd.unique(query_rows)),  # the integer rows when known (no string hashing)
                "judged_docs": len(pd.unique(doc_rows)),
                "corpus_docs": len(ds.documents),
                "judgments": len(ds.judgments),
            }
        return out

    def accounting(self) -> dict[str, int]:
        """Where the source's judgments went; the five parts sum to ``source``."""
        names = ("train", "dev", "novel_query", "novel_corpus", "zero_shot")
        parts = {name: len(getattr(self, name).judgments) for name in names}
        parts["source"] = self.source_judgments
        return parts

    def manifest(self) -> dict:
        return {
            "source": self.source,
            "seed": self.seed,
            "fractions": dict(self.fractions),
            "partition": {
                "q0_train_queries": len(self.q0),
                "q1_novel_queries": len(self.q1),
                "dev_queries": len(self.dev_queries),
                "d0_corpus_1_docs": len(self.d0),
                "d1_corpus_2_docs": len(self.d1),
            },
            "files": {name: f"{SPLIT_FILES.get(name, name)}.csv" for name in ALL_SPLITS}
            | {"corpus_1": "corpus_1.json", "corpus_2": "corpus_2.json"},
            "sizes": self.sizes(),
            "judgments": self.accounting(),
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write the Marqo layout (split CSVs, ``train.csv``, ``dev.csv``, corpora) and ``splits.json``."""
        out = Path(out_dir)
        splits = {SPLIT_FILES.get(name, name): getattr(self, name) for name in ALL_SPLITS}
        hints = {SPLIT_FILES.get(name, name): self.row_hints[name] for name in ALL_SPLITS if name in self.row_hints}
        write_marqo_layout(out, splits, {"corpus_1": self.corpus_1, "corpus_2": self.corpus_2}, row_hints=hints)
        manifest = out / MANIFEST
        manifest.write_text(json.dumps(self.manifest(), indent=2) + "\n", encoding="utf-8")
        return manifest


def build_splits(
    ds: GradedDataset,
    *,
    query_frac_train: float = 0.8,
    doc_frac_train: float = 0.5,
    dev_frac: float = DEFAULT_DEV_FRAC,
    seed: int = 0,
) -> BenchmarkSplits:
    """Split ``ds`` into train/dev and the four evaluation splits (see the module docstring).

    Ids are sorted, then permuted by ``numpy.random.default_rng(seed)``: the same dataset and seed
    give the same splits whatever the row order. ``|Q0| = round(query_frac_train * |Q|)``,
    ``|dev| = round(dev_frac * |Q0|)`` (at least 1 when ``dev_frac > 0`` and ``|Q0| > 1``),
    ``|D0| = round(doc_frac_train * |D|)``, over all documents (judged or not).
    """
    for label, value in (("query_frac_train", query_frac_train), ("doc_frac_train", doc_frac_train)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{label} must be in (0, 1), got {value}")
    if not 0.0 <= dev_frac < 1.0:
        raise ConfigError(f"dev_frac must be in [0, 1), got {dev_frac}")
    rng = np.random.default_rng(seed)
    queries = ds.queries.index.sort_values()
    docs = ds.documents.index.sort_values()
    q_perm = queries[rng.permutation(len(queries))]
    d_perm = docs[rng.permutation(len(docs))]
    n_q0 = int(round(query_frac_train * len(queries)))
    n_dev = int(round(dev_frac * n_q0))
    if dev_frac > 0 and n_q0 > 1:
        n_dev = max(1, n_dev)
    n_d0 = int(round(doc_frac_train * len(docs)))
    q0, q1 = q_perm[:n_q0], q_perm[n_q0:]
    dev_queries = q0[:n_dev]
    d0, d1 = d_perm[:n_d0], d_perm[n_d0:]

    j = ds.judgments
    # each judgment's query and document as its row in ds.queries / ds.documents (-1: not there),
    # hashed once; membership and corpus rows are then integer lookups
    row_type = np.int32 if max(len(ds.queries), len(ds.documents)) < 2**31 else np.int64
    q_rows = positions(j[QUERY_ID], ds.queries.index).astype(row_type)
    d_rows = positions(j[DOC_ID], ds.documents.index).astype(row_type)
    in_q0 = _member(q_rows, isin(ds.queries.index, q0))
    in_dev = _member(q_rows, isin(ds.queries.index, dev_queries))
    # keep the source's document order inside each corpus
    in_corpus_1 = isin(ds.documents.index, d0)
    in_d0 = _member(d_rows, in_corpus_1)
    corpus_1 = ds.documents.loc[in_corpus_1]
    corpus_2 = ds.documents.loc[~in_corpus_1]
    corpus_row = np.where(in_corpus_1, np.cumsum(in_corpus_1) - 1, np.cumsum(~in_corpus_1) - 1)
    known = bool(len(j)) and q_rows.min() >= 0 and d_rows.min() >= 0  # validated datasets: always
    hints: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def part(mask: np.ndarray, corpus: pd.DataFrame, label: str) -> GradedDataset:
        judgments = j.loc[mask].reset_index(drop=True)
        if known:  # int32 when the tables allow (half the memory of int64 at 10M judgments)
            hints[label] = (corpus_row[d_rows[mask]].astype(row_type), q_rows[mask])
            judged = np.zeros(len(ds.queries), dtype=bool)
            judged[q_rows[mask]] = True
        else:
            judged = isin(ds.queries.index, judgments[QUERY_ID].unique())
        queries_kept = ds.queries.loc[judged]
        return GradedDataset(
            queries=queries_kept,
            documents=corpus,
            judgments=judgments,
            query_fields=ds.query_fields,
            doc_fields=ds.doc_fields,
            name=f"{ds.name}/{label}",
            notes=[*ds.notes, f"split {label!r} of {ds.name!r} (seed {seed})"],
        )

    return BenchmarkSplits(
        train=part(in_q0 & ~in_dev & in_d0, corpus_1, "train"),
        dev=part(in_dev & in_d0, corpus_1, "dev"),
        in_domain=part(in_q0 & in_d0, corpus_1, "in_domain"),
        novel_query=part(~in_q0 & in_d0, corpus_1, "novel_query"),
        novel_corpus=part(in_q0 & ~in_d0, corpus_2, "novel_corpus"),
        zero_shot=part(~in_q0 & ~in_d0, corpus_2, "zero_shot"),
        corpus_1=corpus_1,
        corpus_2=corpus_2,
        q0=q0,
        q1=q1,
        dev_queries=dev_queries,
        d0=d0,
        d1=d1,
        seed=seed,
        fractions={"query_frac_train": query_frac_train, "doc_frac_train": doc_frac_train, "dev_frac": dev_frac},
        source=ds.name,
        source_judgments=len(j),
        row_hints=hints,
    )


def _member(rows: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``flags[rows]``, False where ``rows`` is -1 (an id not in the table)."""
    if not len(flags):
        return np.zeros(len(rows), dtype=bool)
    return flags[rows] & (rows >= 0)
