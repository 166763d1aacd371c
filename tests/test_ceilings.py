"""Ordering ceilings, judged re-rank and thresholded gains on tiny hand-built tasks.

Task: q0 judges d0 (grade 3), d1 (1), d2 (0); q1 judges d3 (2), d4 (2); d5 is never judged.
Hand values use the log2 discounts 1, 1/log2(3) = 0.6309, 1/2.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from gcl.data.schema import DOC_ID, QUERY_ID
from gcl.evaluation.ceilings import CeilingSettings, ordering_ceilings, rank_by_key
from gcl.evaluation.evaluator import EvalTask, Protocol
from gcl.evaluation.gains import score_ranking, thresholded_gains, thresholded_task
from gcl.evaluation.judged_rerank import evaluate_judged_rerank
from gcl.evaluation.protocol import GRADE

D2, D3 = 1 / np.log2(3), 0.5  # discounts of ranks 2 and 3
QRELS = [("q0", "d0", 3), ("q0", "d1", 1), ("q0", "d2", 0), ("q1", "d3", 2), ("q1", "d4", 2)]


def hand_task() -> EvalTask:
    queries = pd.DataFrame({"query": ["a", "b"]}, index=pd.Index(["q0", "q1"], name=QUERY_ID))
    documents = pd.DataFrame({"title": [f"t{i}" for i in range(6)]}, index=pd.Index([f"d{i}" for i in range(6)], name=DOC_ID))
    qrels = pd.DataFrame(QRELS, columns=[QUERY_ID, DOC_ID, GRADE])
    return EvalTask(
        name="hand", queries=queries, documents=documents, qrels=qrels,
        qrel_query=np.array([0, 0, 0, 1, 1]), qrel_doc=np.array([0, 1, 2, 3, 4]),
        qrel_grade=np.array([3.0, 1.0, 0.0, 2.0, 2.0]), query_keys=["q0", "q1"],
    )


def naive_ndcg(gains: list[float], grades: list[float], k: int = 10) -> float:
    dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains[:k]))
    ideal = sum(g / np.log2(r + 2) for r, g in enumerate(sorted(grades, reverse=True)[:k]))
    return dcg / ideal if ideal > 0 else 0.0


def test_rank_by_key_orders_each_querys_judged_documents_and_pads():
    task = hand_task()
    ranked = rank_by_key(task.qrel_query, task.qrel_doc, -task.qrel_grade, 2)
    assert ranked.tolist() == [[0, 1, 2], [3, 4, -1]]


def test_ideal_order_scores_one_and_random_order_is_the_mean_over_permutations():
    # q0 by enumeration of its 6 orders: E[DCG] = mean grade (4/3) x (1 + 0.6309 + 0.5),
    # ideal DCG = 3 + 0.6309; q1 (two equal grades) scores 1 in any order.
    hand_q0 = (4 / 3) * (1 + D2 + D3) / (3 + D2)
    enumerated = np.mean([naive_ndcg(list(p), [3, 1, 0]) for p in permutations([3, 1, 0])])
    assert hand_q0 == pytest.approx(enumerated, abs=1e-12)  # 0.782510...
    assert hand_q0 == pytest.approx(0.782510, abs=1e-6)
    rr_q0 = (4 * 1 + 2 * 0.5) / 6  # first relevant (grade >= 1) at rank 1 in 4 orders, rank 2 in 2

    c = ordering_ceilings(hand_task(), ("ndcg@10", "mrr@10"), CeilingSettings(n_shuffles=4000, seed=3))
    assert c.ideal == {"ndcg@10": 1.0, "mrr@10": 1.0}
    # 4,000 shuffles: standard error of q0's mean nDCG ~ 0.0024 (halved over two queries)
    assert c.random["ndcg@10"] == pytest.approx((hand_q0 + 1.0) / 2, abs=0.006)
    assert c.random["mrr@10"] == pytest.approx((rr_q0 + 1.0) / 2, abs=0.01)
    assert c.headroom["ndcg@10"] == pytest.approx(1.0 - c.random["ndcg@10"])
    d = c.to_dict()
    assert d["random_shuffles"] == 4000 and d["random_seed"] == 3 and set(d) >= {"ideal", "random", "headroom"}


def test_random_ceiling_is_seeded():
    a = ordering_ceilings(hand_task(), ("ndcg@10",), CeilingSettings(n_shuffles=5, seed=1))
    b = ordering_ceilings(hand_task(), ("ndcg@10",), CeilingSettings(n_shuffles=5, seed=1))
    c = ordering_ceilings(hand_task(), ("ndcg@10",), CeilingSettings(n_shuffles=5, seed=2))
    assert a.random == b.random
    assert a.random != c.random  # 6 orders of q0 and 5 draws: another seed draws other orders here
    with pytest.raises(ValueError, match="n_shuffles"):
        CeilingSettings(n_shuffles=0)


class TableRetriever:
    """Scores from a fixed {query: {doc: score}} table; unlisted documents are not returned."""

    def __init__(self, table):
        self.table = table

    def search(self, queries, documents, k):
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        for i, q in enumerate(queries.index):
            hits = sorted(((s, j) for j, d in enumerate(documents.index) if (s := self.table[q].get(d)) is not None),
                          key=lambda t: (-t[0], t[1]))[:k]
            for r, (s, j) in enumerate(hits):
                scores[i, r], idx[i, r] = s, j
        return scores, idx


def test_judged_rerank_ranks_only_the_judged_documents():
    # q0: d5 (unjudged) scores highest and is left out; then d2 (0), d0 (3), d1 (1).
    # q1: d4 before d3 (equal grades: any order is ideal).
    retriever = TableRetriever({"q0": {"d5": 9, "d2": 3, "d0": 2, "d1": 1}, "q1": {"d4": 5, "d3": 4, "d5": 9}})
    res = evaluate_judged_rerank(hand_task(), retriever, Protocol(name="all", metrics=("ndcg@10", "mrr@10", "map@10")))
    assert res.run_indices.tolist() == [[2, 0, 1], [4, 3, -1]]
    q0 = (3 * D2 + 1 * D3) / (3 + D2)  # gains 0, 3, 1
    assert res.per_query.loc["q0", "ndcg@10"] == pytest.approx(q0)
    assert res.per_query.loc["q0", "mrr@10"] == pytest.approx(0.5)
    assert res.per_query.loc["q0", "map@10"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res.per_query.loc["q1"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert res.summary["ndcg@10"] == pytest.approx((q0 + 1) / 2)
    assert res.extras["judged_rerank"] == {"judged_documents": 5, "appended_unretrieved": 0}


def test_judged_rerank_appends_unretrieved_judged_documents_by_corpus_index():
    # q0's retriever returns only d1: d0 and d2 follow, lower corpus index first (d0, then d2).
    retriever = TableRetriever({"q0": {"d1": 1.0}, "q1": {"d3": 1.0, "d4": 0.5}})
    res = evaluate_judged_rerank(hand_task(), retriever, Protocol(name="all", metrics=("ndcg@10",)))
    assert res.run_indices[0].tolist() == [1, 0, 2]
    assert res.per_query.loc["q0", "ndcg@10"] == pytest.approx((1 + 3 * D2) / (3 + D2))
    assert res.extras["judged_rerank"]["appended_unretrieved"] == 2


def test_thresholded_gains_make_low_grades_irrelevant():
    assert thresholded_gains(np.array([1, 2, 49, 50, 100]), 50).tolist() == [0, 0, 0, 50, 100]
    with pytest.raises(ValueError, match="relevance threshold"):
        thresholded_gains(np.array([1.0]), 1)
    task = hand_task()
    ranked = np.array([[1, 0, 2], [3, 4, -1]])  # q0: grade 1 first, then grade 3
    metrics = ("ndcg@10", "map@1000", "mrr@1000", "recall@1", "p@1")
    ref = score_ranking(task, ranked, metrics)
    thr = score_ranking(thresholded_task(task, 2), ranked, metrics)
    # reference: grades 3 and 1 both relevant -> AP 1, RR 1; nDCG (1 + 3 D2) / (3 + D2)
    assert ref["map@1000"][0] == 1.0 and ref["mrr@1000"][0] == 1.0 and ref["p@1"][0] == 1.0
    assert ref["ndcg@10"][0] == pytest.approx((1 + 3 * D2) / (3 + D2))
    # threshold 2: grade 1 has gain 0 -> only d0 relevant, at rank 2
    assert thr["map@1000"][0] == 0.5 and thr["mrr@1000"][0] == 0.5
    assert thr["recall@1"][0] == 0.0 and thr["p@1"][0] == 0.0
    assert thr["ndcg@10"][0] == pytest.approx(3 * D2 / 3)
    assert thresholded_task(task, 2).qrels[GRADE].tolist() == [3, 0, 0, 2, 2]
    assert task.qrel_grade.tolist() == [3, 1, 0, 2, 2]  # the original task is unchanged


def test_thresholded_metrics_equal_pytrec_eval_on_the_mapped_qrels():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    n_q, n_docs, threshold = 6, 40, 30
    qq, dd, gg = [], [], []
    for q in range(n_q):
        docs = rng.choice(n_docs, size=10, replace=False)
        grades = rng.choice([1, 10, 30, 60, 100], size=10)
        grades[0] = 100  # every query keeps a relevant document
        qq += [q] * 10
        dd += docs.tolist()
        gg += grades.tolist()
    queries = pd.DataFrame({"query": [f"q{i}" for i in range(n_q)]}, index=pd.Index([f"q{i}" for i in range(n_q)], name=QUERY_ID))
    documents = pd.DataFrame({"title": ["t"] * n_docs}, index=pd.Index([f"d{i}" for i in range(n_docs)], name=DOC_ID))
    qrels = pd.DataFrame({QUERY_ID: queries.index[qq], DOC_ID: documents.index[dd], GRADE: gg})
    task = EvalTask("r", queries, documents, qrels, np.array(qq), np.array(dd), np.array(gg, dtype=float))
    ranked = np.stack([rng.permutation(n_docs)[:30] for _ in range(n_q)])
    ours = score_ranking(thresholded_task(task, threshold), ranked, ("ndcg@10", "map@1000", "mrr@1000", "recall@20", "p@10"))
    run = {f"q{q}": {f"d{d}": float(100 - r) for r, d in enumerate(ranked[q])} for q in range(n_q)}
    mapped = {}
    for q, d, g in zip(qq, dd, gg):
        mapped.setdefault(f"q{q}", {})[f"d{d}"] = int(g) if g >= threshold else 0
    ev = pytrec_eval.RelevanceEvaluator(mapped, {"ndcg_cut.10", "map_cut.1000", "recip_rank", "recall.20", "P.10"})
    got = ev.evaluate(run)
    for name, key in (("ndcg@10", "ndcg_cut_10"), ("map@1000", "map_cut_1000"), ("mrr@1000", "recip_rank"),
                      ("recall@20", "recall_20"), ("p@10", "P_10")):
        assert ours[name] == pytest.approx([got[f"q{q}"][key] for q in range(n_q)], abs=1e-12), name
