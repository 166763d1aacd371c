"""Ranked-retrieval evaluation of one split or all four benchmark splits.

Per split the evaluator (1) turns scores into integer grades, (2) picks the test queries,
(3) builds the ground truth, (4) retrieves the top ``depth`` documents of the split's whole corpus
for every test query, and (5) scores the ranking with graded metrics.

Protocols (:class:`Protocol`):

* ``reference`` reproduces the Marqo-GS-10M evaluation: grades 1..100 from the split's scores,
  a weighted sample (by per-query grade sum) of 2,000 test queries with seed 1, each query's
  top-1,000 documents by grade as ground truth, cosine top-1,000 over the corpus, and the summary
  columns mAP@1000, mrr@1000, NDCG@10, mERR, mRBP7, mRBP8, mRBP9.
* ``all`` is the same with every query of the split as a test query.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gcl.errors import DataError
from gcl.data.schema import DOC_ID, QUERY_ID, GradedDataset
from gcl.data.marqo import query_key
from gcl.evaluation.protocol import GRADE, graded_judgments, ground_truth, sample_test_queries
from gcl.metrics import DEFAULT_METRICS, REFERENCE_COLUMNS, compute_metrics, judge_indices



@dataclass
class Protocol:
    """How test queries, grades and the ground truth are derived from a split."""

    name: str = "reference"  # "reference" | "all"
    n_queries: int = 2000
    seed: int = 1
    gt_top: int = 1000
    depth: int = 1000
    metrics: tuple[str, ...] = DEFAULT_METRICS

    def __post_init__(self) -> None:
        if self.name not in ("reference", "all"):
            raise ValueError(f"unknown protocol {self.name!r}; use 'reference' or 'all'")
        self.metrics = tuple(self.metrics)


@dataclass
class EvalTask:
    """One split, ready to score: test queries, the whole corpus and graded qrels as index arrays."""

    name: str
    queries: pd.DataFrame
    documents: pd.DataFrame
    qrels: pd.DataFrame  # query_id, doc_id, grade (the ground truth)
    qrel_query: np.ndarray
    qrel_doc: np.ndarray
    qrel_grade: np.ndarray
    query_keys: list[str] = field(default_factory=list)  # protocol keys (text + suffix), aligned with queries

    def ground_truth(self, *, by_key: bool = False) -> dict[str, dict[str, int]]:
        """``{query: {doc_id: grade}}``; with ``by_key`` keyed like the reference ground-truth JSON."""
        rename = dict(zip(self.queries.index, self.query_keys)) if by_key else {}
        out: dict[str, dict[str, int]] = {}
        for q, d, g in self.qrels[[QUERY_ID, DOC_ID, GRADE]].itertuples(index=False):
            out.setdefault(rename.get(q, q), {})[d] = int(g)
        return out


@dataclass
class SplitResult:
    name: str
    summary: dict[str, float]
    per_query: pd.DataFrame
    n_queries: int
    n_documents: int
    seconds: float
    run_indices: np.ndarray = field(repr=False, default=None)
    run_scores: np.ndarray = field(repr=False, default=None)
    extras: dict = field(default_factory=dict)  # written beside the summary in results.json (ceilings, ...)


def prepare_task(split: GradedDataset, protocol: Protocol, *, name: str | None = None) -> EvalTask:
    """Grades, test queries and ground truth of ``split`` (its ``documents`` are the whole corpus).

    Uses the reference helpers step by step (:mod:`gcl.evaluation.protocol`) with the reference's
    query keys (query text + ``_{!@#~}_`` when query ids are the query text), so the sampled test
    queries and the ground truth equal the published evaluation's for the same split.
    """
    if protocol.name == "reference" and len(split.judgments) == 0:  # nothing to sample from
        raise DataError(f"split {name or split.name!r} has no judgments to evaluate (too few queries or documents to split?)")
    text = split.queries[split.query_fields[0].name].astype(str)
    keys = "query_key" if bool((text.to_numpy() == split.queries.index.to_numpy()).all()) else "query_id"
    j = graded_judgments(split, keys=keys)
    key_to_id = dict(zip(query_key_array(split, keys), split.queries.index))
    sums = j.groupby(QUERY_ID, sort=False)[GRADE].sum()
    if protocol.name == "reference":
        test = sample_test_queries(sums.index.to_numpy(), sums.to_numpy(), n=protocol.n_queries, seed=protocol.seed)
    else:
        test = sorted(sums.index)
    gt = ground_truth(j, test, top=protocol.gt_top)
    test_ids = [key_to_id[k] for k in test]
    rows = [(key_to_id[k], d, g) for k in test for d, g in gt[k].items()]
    qrels = pd.DataFrame(rows, columns=[QUERY_ID, DOC_ID, GRADE])
    queries = split.queries.loc[test_ids]
    q_pos = pd.Series(np.arange(len(queries)), index=queries.index)
    d_pos = pd.Series(np.arange(len(split.documents)), index=split.documents.index)
    return EvalTask(
        name=name or split.name,
        queries=queries,
        documents=split.documents,
        qrels=qrels,
        qrel_query=q_pos.loc[qrels[QUERY_ID]].to_numpy(),
        qrel_doc=d_pos.loc[qrels[DOC_ID]].to_numpy(),
        qrel_grade=qrels[GRADE].to_numpy(dtype=np.float64),
        query_keys=list(test),
    )


def query_key_array(split: GradedDataset, keys: str) -> np.ndarray:
    """The protocol key of every query of ``split``, in ``queries`` order."""
    if keys == "query_key":
        return np.array([query_key(t) for t in split.queries[split.query_fields[0].name].astype(str)], dtype=object)
    return split.queries.index.to_numpy(dtype=object)


def evaluate_task(task: EvalTask, retriever, protocol: Protocol) -> SplitResult:
    """Retrieve with ``retriever`` and score; summary keys are metric names (``ndcg@10``, ...)."""
    t0 = time.perf_counter()
    scores, idx = retriever.search(task.queries, task.documents, protocol.depth)
    judged = judge_indices(idx, task.qrel_query, task.qrel_doc, task.qrel_grade, query_ids=task.queries.index.to_numpy())
    per_query = compute_metrics(judged, protocol.metrics)
    frame = pd.DataFrame(per_query, index=task.queries.index)
    summary = {m: float(np.mean(v)) if len(v) else float("nan") for m, v in per_query.items()}
    return SplitResult(
        name=task.name,
        summary=summary,
        per_query=frame,
        n_queries=len(task.queries),
        n_documents=len(task.documents),
        seconds=time.perf_counter() - t0,
        run_indices=idx,
        run_scores=scores,
    )


def reference_summary(summary: dict[str, float]) -> dict[str, float]:
    """The reference protocol's column names (mAP@1000, mrr@1000, NDCG@10, mERR, mRBP7..9)."""
    return {col: summary[m] for col, m in REFERENCE_COLUMNS.items() if m in summary}


def results_table(results: list[SplitResult], columns: tuple[str, ...] = ("ndcg@10", "err", "rbp@0.9", "map@1000", "mrr@1000")) -> str:
    """A fixed-width text table: one row per split."""
    head = f"{'split':<14}{'queries':>8}{'docs':>8}" + "".join(f"{c:>10}" for c in columns)
    lines = [head, "-" * len(head)]
    for r in results:
        vals = "".join(f"{r.summary.get(c, float('nan')):>10.4f}" for c in columns)
        lines.append(f"{r.name:<14}{r.n_queries:>8}{r.n_documents:>8}{vals}")
    return "\n".join(lines)


def write_results(
    out_dir: str | Path,
    results: list[SplitResult],
    tasks: list[EvalTask] | None = None,
    *,
    meta: dict | None = None,
    trec: bool = False,
) -> Path:
    """Write ``results.json`` (summary, reference columns, meta), ``results.csv`` (one row per
    split), ``<split>_per_query.csv``, and with ``trec`` the run/qrels files and ground-truth JSON."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta or {},
        "splits": {
            r.name: {
                "summary": r.summary,
                "reference": reference_summary(r.summary),
                "queries": r.n_queries,
                "documents": r.n_documents,
                "seconds": round(r.seconds, 2),
                **r.extras,
            }
            for r in results
        },
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    rows = [{"split": r.name, **reference_summary(r.summary), **r.summary, "queries": r.n_queries} for r in results]
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    for r in results:
        r.per_query.to_csv(out / f"{r.name}_per_query.csv", index_label=QUERY_ID)
    if trec and tasks:
        from gcl.data.marqo import write_ground_truth
        from gcl.evaluation.trec import write_trec_files

        for r, t in zip(results, tasks):
            doc_ids = t.documents.index.to_numpy()
            run = {}
            for qi, q in enumerate(t.queries.index):
                keep = r.run_indices[qi] >= 0
                run[q] = dict(zip(doc_ids[r.run_indices[qi][keep]], r.run_scores[qi][keep].astype(float)))
            write_trec_files(out, r.name, run, t.ground_truth(), tag=meta.get("model", "gcl") if meta else "gcl")
            write_ground_truth(out / f"{r.name}_gt_test.json", t.ground_truth(by_key=True))
    return out
