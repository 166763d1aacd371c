"""The evaluator: tasks from a hand-built split, scores of ideal/reversed rankings, written files."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from gcl.data.errors import DataError
from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, GradedDataset
from gcl.evaluation.evaluator import (
    EvalTask,
    Protocol,
    evaluate_task,
    prepare_task,
    results_table,
    write_results,
)
from gcl.evaluation.protocol import reference_grades, sample_test_queries
from gcl.evaluation.search import exact_search

# q1: three grades; q2: two; q3: two (d0 is judged by q1 and q3); d6, d7 are never judged
JUDGMENTS = [
    ("q1", "d0", 3.0), ("q1", "d2", 1.0), ("q1", "d1", 2.0),
    ("q2", "d4", 1.5), ("q2", "d3", 3.0),
    ("q3", "d5", 1.0), ("q3", "d0", 2.0),
]  # fmt: skip
# reference grades: int((s - 1) / 2 * 99 + 1): 3 -> 100, 2 -> 50, 1.5 -> 25, 1 -> 1
GRADES = {3.0: 100, 2.0: 50, 1.5: 25, 1.0: 1}


def hand_split() -> GradedDataset:
    queries = pd.DataFrame({"query": ["red shirt", "steel lamp", "oak"]}, index=pd.Index(["q1", "q2", "q3"], name=QUERY_ID))
    documents = pd.DataFrame({"title": [f"title {i}" for i in range(8)]}, index=pd.Index([f"d{i}" for i in range(8)], name=DOC_ID))
    judgments = pd.DataFrame(JUDGMENTS, columns=[QUERY_ID, DOC_ID, SCORE])
    return GradedDataset(queries=queries, documents=documents, judgments=judgments, name="hand").validate()


def test_reference_grades_of_the_hand_split():
    scores = np.array([s for *_, s in JUDGMENTS])
    assert reference_grades(scores).tolist() == [GRADES[s] for s in scores]


def test_prepare_task_all_protocol_gives_the_graded_qrels():
    task = prepare_task(hand_split(), Protocol(name="all"))
    assert task.name == "hand"
    assert list(task.queries.index) == ["q1", "q2", "q3"]
    assert len(task.documents) == 8  # the whole corpus, judged or not
    expected = [  # per query (sorted), grades descending
        ("q1", "d0", 100), ("q1", "d1", 50), ("q1", "d2", 1),
        ("q2", "d3", 100), ("q2", "d4", 25),
        ("q3", "d0", 50), ("q3", "d5", 1),
    ]  # fmt: skip
    assert [tuple(r) for r in task.qrels.itertuples(index=False)] == expected
    # index arrays point at rows of queries / documents
    assert task.queries.index[task.qrel_query].tolist() == [q for q, _, _ in expected]
    assert task.documents.index[task.qrel_doc].tolist() == [d for _, d, _ in expected]
    assert task.qrel_grade.tolist() == [g for *_, g in expected]
    assert task.ground_truth() == {"q1": {"d0": 100, "d1": 50, "d2": 1}, "q2": {"d3": 100, "d4": 25}, "q3": {"d0": 50, "d5": 1}}


def test_prepare_task_keeps_the_top_gt_documents():
    task = prepare_task(hand_split(), Protocol(name="all", gt_top=1), name="cut")
    assert task.name == "cut"
    assert task.ground_truth() == {"q1": {"d0": 100}, "q2": {"d3": 100}, "q3": {"d0": 50}}


def test_prepare_task_on_an_empty_split():
    empty = hand_split()
    empty.judgments = empty.judgments.iloc[:0]
    with pytest.raises(DataError, match="split 'zero_shot' has no judgments"):  # nothing to sample
        prepare_task(empty, Protocol(name="reference"), name="zero_shot")
    task = prepare_task(empty, Protocol(name="all"), name="zero_shot")  # no test query (dev evaluation)
    assert len(task.queries) == 0 and len(task.qrels) == 0


def test_unknown_protocol():
    with pytest.raises(ValueError, match="unknown protocol"):
        Protocol(name="bogus")


# ------------------------------------------------------------------------------ fake retrievers
class OrderedRetriever:
    """Returns each query's judged documents by grade (ideal) or reversed, then -1 padding."""

    def __init__(self, task: EvalTask, *, reverse: bool = False):
        self.task, self.reverse, self.name = task, reverse, "fake"

    def search(self, queries, documents, k):
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for qi in range(len(queries)):
            mine = self.task.qrel_query == qi
            docs, grades = self.task.qrel_doc[mine], self.task.qrel_grade[mine]
            order = np.lexsort((docs, -grades))
            if self.reverse:
                order = order[::-1]
            n = min(k, len(order))
            idx[qi, :n] = docs[order][:n]
            scores[qi, :n] = np.arange(n, 0, -1)
        return scores, idx


class RandomDenseRetriever:
    """Cosine search over fixed random vectors: distinct scores, a realistic mix of hits and misses."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def search(self, queries, documents, k):
        q = self.rng.standard_normal((len(queries), 16)).astype(np.float32)
        d = self.rng.standard_normal((len(documents), 16)).astype(np.float32)
        s, i = exact_search(q, d, k)
        pad = k - i.shape[1]
        return np.pad(s, ((0, 0), (0, pad)), constant_values=-np.inf), np.pad(i, ((0, 0), (0, pad)), constant_values=-1)


def naive_err(grades: list[float], max_rel: float) -> float:
    """The reference loop, over the whole retrieved list."""
    err, p_stop = 0.0, 1.0
    for rank, rel in enumerate(grades, start=1):
        r = (2**rel - 1) / 2**max_rel
        err += p_stop * r / rank
        p_stop *= 1 - r
    return err


def test_ideal_ranking_scores_one_and_err_matches_the_naive_formula():
    task = prepare_task(hand_split(), Protocol(name="all"))
    protocol = Protocol(name="all", depth=10)
    res = evaluate_task(task, OrderedRetriever(task), protocol)
    assert res.n_queries == 3 and res.n_documents == 8
    np.testing.assert_allclose(res.per_query["ndcg@10"], 1.0)
    np.testing.assert_allclose(res.per_query["recall@100"], 1.0)
    np.testing.assert_allclose(res.per_query["mrr@1000"], 1.0)
    gt = task.ground_truth()
    for q in task.queries.index:
        grades = sorted(gt[q].values(), reverse=True)
        assert res.per_query.loc[q, "err"] == pytest.approx(naive_err(grades, max(grades)), rel=1e-12)
    assert res.summary["ndcg@10"] == pytest.approx(1.0)
    assert set(res.summary) == set(protocol.metrics)
    assert res.run_indices.shape == (3, 10)


def test_reversed_ranking_scores_lower():
    task = prepare_task(hand_split(), Protocol(name="all"))
    protocol = Protocol(name="all", depth=10)
    best = evaluate_task(task, OrderedRetriever(task), protocol)
    worst = evaluate_task(task, OrderedRetriever(task, reverse=True), protocol)
    for m in ("ndcg@10", "err", "rbp@0.9"):  # (every judged grade is >= 1: MRR stays 1)
        assert worst.summary[m] < best.summary[m], m
        assert (worst.per_query[m] <= best.per_query[m] + 1e-12).all(), m
    gt = task.ground_truth()
    for q in task.queries.index:
        grades = sorted(gt[q].values())  # ascending: the reversed order
        assert worst.per_query.loc[q, "err"] == pytest.approx(naive_err(grades, max(grades)), rel=1e-12)


def test_reference_protocol_samples_min_n_queries_deterministically(tiny_dataset):
    n_all = len(tiny_dataset.queries)
    few = prepare_task(tiny_dataset, Protocol(name="reference", n_queries=10))
    again = prepare_task(tiny_dataset, Protocol(name="reference", n_queries=10))
    assert len(few.queries) == 10
    assert list(few.queries.index) == list(again.queries.index)
    # the same draw as the protocol helper with seed 1 over per-query grade sums
    grades = reference_grades(tiny_dataset.judgments[SCORE].to_numpy())
    sums = pd.Series(grades).groupby(tiny_dataset.judgments[QUERY_ID].to_numpy()).sum()
    expected = sample_test_queries(sums.index.to_numpy(), sums.to_numpy(), n=10, seed=1)
    assert list(few.queries.index) == list(expected)
    other_seed = prepare_task(tiny_dataset, Protocol(name="reference", n_queries=10, seed=2))
    assert set(other_seed.queries.index) != set(few.queries.index)
    everything = prepare_task(tiny_dataset, Protocol(name="reference", n_queries=10 * n_all))
    assert sorted(everything.queries.index) == sorted(tiny_dataset.queries.index)
    assert set(few.qrels[QUERY_ID]) == set(few.queries.index)


# --------------------------------------------------------------------------------- written files
def test_write_results_files_and_trec_runs_agree_with_pytrec_eval(tiny_dataset, tmp_path):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    protocol = Protocol(name="all", depth=50)
    task = prepare_task(tiny_dataset, protocol, name="novel_query")
    res = evaluate_task(task, RandomDenseRetriever(), protocol)
    out = write_results(tmp_path / "out", [res], [task], meta={"model": "random"}, trec=True)

    payload = json.loads((out / "results.json").read_text())
    assert payload["meta"] == {"model": "random"}
    split = payload["splits"]["novel_query"]
    assert split["queries"] == len(tiny_dataset.queries) and split["documents"] == len(tiny_dataset.documents)
    assert split["summary"]["ndcg@10"] == pytest.approx(res.summary["ndcg@10"])
    assert split["reference"]["NDCG@10"] == pytest.approx(res.summary["ndcg@10"])
    assert set(split["reference"]) == {"mAP@1000", "mrr@1000", "NDCG@10", "mERR", "mRBP7", "mRBP8", "mRBP9"}
    table = pd.read_csv(out / "results.csv")
    assert table["split"].tolist() == ["novel_query"]
    assert table.loc[0, "NDCG@10"] == pytest.approx(res.summary["ndcg@10"])
    per_query = pd.read_csv(out / "novel_query_per_query.csv", index_col=QUERY_ID)
    assert sorted(per_query.index) == sorted(task.queries.index)
    np.testing.assert_allclose(per_query.loc[res.per_query.index, "err"], res.per_query["err"])
    gt = json.loads((out / "novel_query_gt_test.json").read_text())
    assert gt == task.ground_truth()

    with open(out / "novel_query.qrels") as fq, open(out / "novel_query.run") as fr:
        qrels, run = pytrec_eval.parse_qrel(fq), pytrec_eval.parse_run(fr)
    assert all(len(docs) == protocol.depth for docs in run.values())  # 120 docs >= depth: no padding
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank"}).evaluate(run)
    assert set(theirs) == set(task.queries.index)
    for q, values in theirs.items():
        assert res.per_query.loc[q, "ndcg@10"] == pytest.approx(values["ndcg_cut_10"], abs=1e-12)
        assert res.per_query.loc[q, "mrr@1000"] == pytest.approx(values["recip_rank"], abs=1e-12)


def test_write_results_leaves_out_padding_in_runs(tmp_path):
    task = prepare_task(hand_split(), Protocol(name="all"), name="hand")
    res = evaluate_task(task, OrderedRetriever(task), Protocol(name="all", depth=6))
    out = write_results(tmp_path, [res], [task], trec=True)
    lines = (out / "hand.run").read_text().splitlines()
    assert len(lines) == 7  # the seven judged documents; the -1 padding is not written
    assert lines[0].split() == ["q1", "Q0", "d0", "1", "3.0", "gcl"]
    assert not (out / "hand.run.tmp").exists()


def test_results_table_lists_every_split():
    task = prepare_task(hand_split(), Protocol(name="all"))
    res = evaluate_task(task, OrderedRetriever(task), Protocol(name="all", depth=5))
    res.name = "novel_corpus"
    text = results_table([res])
    assert "novel_corpus" in text and "ndcg@10" in text.splitlines()[0]
    assert "1.0000" in text.splitlines()[2]


# ------------------------------------------------------------------------------------ real data
def test_bm25_on_homedepot_novel_query_reference_protocol(data_dir):
    from gcl.data.homedepot import read_homedepot
    from gcl.data.splits import build_splits
    from gcl.evaluation.retrievers import BM25Retriever

    path = data_dir / "homedepot" / "train.csv.xz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    t0 = time.perf_counter()
    split = build_splits(read_homedepot(path), seed=0).novel_query
    protocol = Protocol()  # reference: 2,000 sampled queries, top 1,000, seed 1
    task = prepare_task(split, protocol, name="novel_query")
    res = evaluate_task(task, BM25Retriever(), protocol)
    elapsed = time.perf_counter() - t0
    assert res.n_queries == min(2000, split.judgments[QUERY_ID].nunique())
    assert res.n_documents == len(split.documents)
    assert 0.15 <= res.summary["ndcg@10"] <= 0.6, res.summary
    assert elapsed < 180, f"BM25 over the novel_query split took {elapsed:.0f}s"
