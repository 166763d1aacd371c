"""Fusion (RRF, convex) against naive loops; the lexical index kept in step with writes and persisted;
the BM25 and hybrid retrievers of the evaluator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gcl.errors import ConfigError
from gcl.index.hybrid import HybridParams, check_mode, convex, fuse_hits, rrf
from gcl.index.lexical import LEXICAL_DIR, LexicalIndex, document_text, table_texts

pytest.importorskip("bm25s")


# ---------------------------------------------------------------------------- naive references
def naive_order(lists, fused):
    """Sort by fused score desc, ties by first appearance reading rank by rank, list by list."""
    first = {}
    for r in range(max((len(k) for k in lists), default=0)):
        for keys in lists:
            if r < len(keys):
                first.setdefault(int(keys[r]), len(first))
    return sorted(fused, key=lambda d: (-fused[d], first[d]))


def naive_rrf(lists, k_rrf):
    fused = {}
    for keys in lists:
        for rank, d in enumerate(keys, start=1):
            fused[int(d)] = fused.get(int(d), 0.0) + 1.0 / (k_rrf + rank)
    return naive_order(lists, fused), fused


def naive_convex(lists, scores, weights):
    fused = {}
    for keys, s, w in zip(lists, scores, weights):
        lo, hi = min(s, default=0), max(s, default=0)
        for d, x in zip(keys, s):
            norm = 1.0 if hi == lo else (x - lo) / (hi - lo)
            fused[int(d)] = fused.get(int(d), 0.0) + w * norm
        for d in set(int(k) for other in lists for k in other) - set(int(k) for k in keys):
            fused.setdefault(d, 0.0)
    return naive_order(lists, fused), fused


def random_lists(rng, n_lists=2):
    """Ranked lists over a small key space (many shared keys) with tied scores."""
    lists, scores = [], []
    for _ in range(n_lists):
        n = int(rng.integers(0, 12))
        keys = rng.choice(20, size=n, replace=False)
        s = np.sort(rng.integers(0, 4, size=n).astype(np.float64) / 3)[::-1]  # few values: ties
        lists.append(keys)
        scores.append(s)
    return lists, scores


@pytest.mark.parametrize("seed", range(40))
def test_rrf_equals_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    lists, _ = random_lists(rng, n_lists=int(rng.integers(1, 4)))
    k_rrf = float(rng.choice([0, 1, 60]))
    keys, fused = rrf(lists, k_rrf=k_rrf)
    order, ref = naive_rrf(lists, k_rrf)
    assert keys.tolist() == order
    np.testing.assert_allclose(fused, [ref[d] for d in order], rtol=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_convex_equals_a_naive_loop(seed):
    rng = np.random.default_rng(seed)
    lists, scores = random_lists(rng)
    alpha = float(rng.choice([0.0, 0.3, 0.5, 1.0]))
    keys, fused = convex(lists, scores, weights=[alpha, 1 - alpha])
    order, ref = naive_convex(lists, scores, [alpha, 1 - alpha])
    assert keys.tolist() == order
    np.testing.assert_allclose(fused, [ref[d] for d in order], rtol=1e-12, atol=1e-15)


def test_fusion_hand_example_and_tie_rule():
    dense, lexical = np.array([3, 1, 2]), np.array([2, 5])
    keys, fused = rrf([dense, lexical], k_rrf=60)
    # 2: 1/63 + 1/61; 3: 1/61 (dense rank 1); 1: 1/62; 5: 1/62 (tied with 1; 1 is seen first: dense rank 2)
    assert keys.tolist() == [2, 3, 1, 5]
    np.testing.assert_allclose(fused, [1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    # convex, alpha 0.5: 3 -> 0.5 (dense best), 2 -> 0 + 0.5 (lexical best): tie, dense rank 1 first
    keys, fused = convex([dense, lexical], [np.array([0.9, 0.5, 0.1]), np.array([7.0, 2.0])], weights=[0.5, 0.5])
    assert keys.tolist() == [3, 2, 1, 5] and fused.tolist() == [0.5, 0.5, 0.25, 0.0]
    # a one-candidate list normalises to 1; empty lists fuse to nothing
    assert convex([np.array([4]), np.array([], dtype=np.int64)], [np.array([0.2]), np.array([])],
                  weights=[0.7, 0.3])[1].tolist() == [0.7]
    assert rrf([np.array([], dtype=np.int64)])[0].tolist() == []


def test_fusion_refuses_repeated_keys_and_bad_params():
    with pytest.raises(ValueError, match="distinct"):
        rrf([np.array([1, 1])])
    for bad in (dict(fusion="max"), dict(alpha=1.5), dict(k_rrf=-1), dict(depth=0)):
        with pytest.raises(ConfigError):
            HybridParams(**bad)
    with pytest.raises(ConfigError, match="unknown search mode 'fuzzy'"):
        check_mode("fuzzy")


def test_fuse_hits_keeps_fields_and_cuts_to_k():
    from gcl.index.store import SearchHit

    dense = [SearchHit("a", 0.9, {"title": "A"}), SearchHit("b", 0.8, {"title": "B"})]
    lexical = [SearchHit("c", 7.0, {"title": "C"}), SearchHit("a", 3.0, {"title": "A"})]
    hits = fuse_hits(dense, lexical, HybridParams(), k=2)
    assert [h.doc_id for h in hits] == ["a", "c"] and hits[0].fields == {"title": "A"}
    assert hits[0].score == pytest.approx(1 / 61 + 1 / 62)


# ---------------------------------------------------------------------------- lexical index
@pytest.fixture
def small_index():
    pytest.importorskip("faiss")
    from gcl.index.store import VectorIndex

    vi = VectorIndex(dim=2)
    vi.add(["a", "b", "c", "d"], [[1, 0], [0, 1], [1, 1], [1, 2]],
           [{"title": "cordless drill", "brand": "Acme"}, {"title": "paint brush", "brand": "Acme"},
            {"title": "drill bits", "image": "drill.png"}, {"title": "cordless drill", "brand": "Bolt"}])
    return vi


def ids(hits):
    return [h.doc_id for h in hits]


def test_lexical_search_finds_shared_terms_ties_in_write_order_and_filters(small_index):
    lex = LexicalIndex(small_index)
    hits = lex.search(["cordless drill"], k=10)[0]
    assert ids(hits) == ["a", "d", "c"]  # a and d have the same text: write order breaks the tie
    assert hits[0].score == hits[1].score > hits[2].score > 0
    assert ids(lex.search(["drill"], k=10, filters={"brand": "Bolt"})[0]) == ["d"]
    assert ids(lex.search(["drill"], k=1)[0]) == ["c"]  # shorter document, same tf: higher BM25
    assert lex.search(["png"], k=5)[0] == []  # image paths are not text
    assert lex.search(["the of"], k=5)[0] == [] and lex.search(["zebra"], k=5)[0] == []


def test_lexical_index_follows_deletes_adds_and_upserts(small_index):
    lex = LexicalIndex(small_index)
    assert "a" in ids(lex.search(["drill"], k=10)[0])
    small_index.delete(["a"])
    assert "a" not in ids(lex.search(["drill"], k=10)[0])  # a deleted document never comes back
    small_index.add(["e"], [[2, 1]], [{"title": "hammer drill"}])
    assert ids(lex.search(["hammer"], k=10)[0]) == ["e"]  # an added one is found by the next search
    small_index.upsert(["e"], [[2, 1]], [{"title": "garden hose"}])
    assert lex.search(["hammer"], k=10)[0] == [] and ids(lex.search(["hose"], k=10)[0]) == ["e"]
    rebuilds = lex.rebuilds
    lex.search(["hose"], k=10)
    assert lex.rebuilds == rebuilds  # no write, no rebuild


def test_lexical_index_persists_and_is_rebuilt_when_stale(small_index, tmp_path):
    from gcl.index.store import VectorIndex

    small_index.save(tmp_path / "ix")
    LexicalIndex(small_index).save(tmp_path / "ix")
    assert (tmp_path / "ix" / LEXICAL_DIR / "labels.npy").is_file()
    loaded = VectorIndex.load(tmp_path / "ix")
    lex = LexicalIndex.open(loaded, tmp_path / "ix")
    assert ids(lex.search(["cordless drill"], k=10)[0]) == ["a", "d", "c"] and lex.rebuilds == 0  # read, not built
    # the saved BM25 belongs to other documents: not used
    loaded.delete(["a"])
    loaded.save(tmp_path / "other")
    (tmp_path / "other" / LEXICAL_DIR).symlink_to(tmp_path / "ix" / LEXICAL_DIR)
    stale = LexicalIndex.open(VectorIndex.load(tmp_path / "other"), tmp_path / "other")
    assert ids(stale.search(["cordless drill"], k=10)[0]) == ["d", "c"] and stale.rebuilds == 1
    # a damaged one is rebuilt too, not an error
    (tmp_path / "ix" / LEXICAL_DIR / "labels.npy").write_bytes(b"not numpy")
    damaged = LexicalIndex.open(VectorIndex.load(tmp_path / "ix"), tmp_path / "ix")
    assert ids(damaged.search(["cordless drill"], k=10)[0]) == ["a", "d", "c"] and damaged.rebuilds == 1


def test_lexical_index_of_no_text_and_milvus_like_indexes():
    pytest.importorskip("faiss")
    from gcl.index.store import VectorIndex

    vi = VectorIndex(dim=2)
    assert LexicalIndex(vi).search(["drill"], k=3) == [[]]
    vi.add(["x"], [[1, 0]], [{"n": 3}])
    assert LexicalIndex(vi).search(["drill"], k=3) == [[]]
    with pytest.raises(ConfigError, match="directory"):
        LexicalIndex(object())


def test_table_and_stored_fields_give_the_same_text():
    table = pd.DataFrame({"title": ["cordless drill", None], "brand": ["Acme", "Bolt"], "image": ["a.png", "b.png"],
                          "price": [1.0, 2.0]})
    assert table_texts(table) == ["cordless drill Acme", " Bolt"]
    assert [document_text(r) for r in table.to_dict("records")] == ["cordless drill Acme", "Bolt"]


# ---------------------------------------------------------------------------- evaluator retrievers
class FixedRetriever:
    def __init__(self, scores, idx):
        self.scores, self.idx, self.name = scores, idx, "fixed"

    def search(self, queries, documents, k):
        return self.scores[:, :k], self.idx[:, :k]


def test_hybrid_retriever_fuses_each_query_and_pads():
    from gcl.evaluation.retrievers import HybridRetriever

    dense = FixedRetriever(np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]], dtype=np.float32),
                           np.array([[3, 1, 2], [0, 1, 2]]))
    lexical = FixedRetriever(np.array([[7.0, 2.0, -np.inf], [-np.inf] * 3], dtype=np.float32),
                             np.array([[2, 5, -1], [-1, -1, -1]]))
    queries = pd.DataFrame({"query": ["q1", "q2"]})
    for params in (HybridParams(), HybridParams(fusion="convex", alpha=0.3)):
        scores, idx = HybridRetriever(dense, lexical, params).search(queries, pd.DataFrame(), 3)
        for row in range(2):
            d, lx = dense.idx[row] >= 0, lexical.idx[row] >= 0
            if params.fusion == "rrf":
                order, ref = naive_rrf([dense.idx[row][d], lexical.idx[row][lx]], params.k_rrf)
            else:
                order, ref = naive_convex([dense.idx[row][d], lexical.idx[row][lx]],
                                          [dense.scores[row][d].astype(float), lexical.scores[row][lx].astype(float)],
                                          [params.alpha, 1 - params.alpha])
            assert idx[row].tolist() == order[:3]
            np.testing.assert_allclose(scores[row], [ref[x] for x in order[:3]], rtol=1e-6)


def test_bm25_retriever_uses_the_shared_settings():
    from gcl.evaluation.retrievers import BM25Retriever
    from gcl.index.lexical import BM25Params

    docs = pd.DataFrame({"title": ["cordless drill", "paint brush", "drill bits"]}, index=["a", "b", "c"])
    queries = pd.DataFrame({"query": ["drill", "zebra"]})
    scores, idx = BM25Retriever().search(queries, docs, 3)
    assert idx[0].tolist()[:2] == [2, 0] and idx[0, 2] == -1 and (idx[1] == -1).all()
    s2, _ = BM25Retriever(params=BM25Params(k1=0.5)).search(queries, docs, 3)
    assert s2[0, 0] != scores[0, 0]  # the settings reach bm25s
