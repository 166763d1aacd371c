"""``VectorIndex``: exact search equals ``exact_search``, HNSW recall, writes, filters, persistence, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gcl.data.errors import ConfigError, DataError, GCLError
from gcl.evaluation.search import exact_search
from gcl.index import SearchHit, VectorIndex
from gcl.index import store_files

pytest.importorskip("faiss")

KINDS = ("exact", "hnsw")


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, dim: int, *, n_clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """Gaussian blobs around random unit centres: structured like real embeddings, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_clusters, dim)))
    which = rng.integers(n_clusters, size=n)
    return unit(centres[which] + spread / np.sqrt(dim) * rng.standard_normal((n, dim)) * 3)


def make_index(kind: str, vectors: np.ndarray, *, fields=None, **kw) -> tuple[VectorIndex, list[str]]:
    ids = [f"doc{i:05d}" for i in range(len(vectors))]
    index = VectorIndex(dim=vectors.shape[1], kind=kind, **kw)
    index.add(ids, vectors, fields)
    return index, ids


def stored_matrix(index: VectorIndex, ids: list[str]) -> np.ndarray:
    return np.stack([index.get(d).vector for d in ids])


# ---------------------------------------------------------------------- exact path
@pytest.mark.parametrize("k", [1, 10, 2000])
def test_exact_index_equals_exact_search(k):
    rng = np.random.default_rng(0)
    docs, queries = rng.standard_normal((2000, 32)), rng.standard_normal((50, 32))
    index, ids = make_index("exact", docs)
    corpus = stored_matrix(index, ids)  # exactly the vectors faiss holds, in write order
    want_s, want_i = exact_search(unit(queries), corpus, k)
    got = index.search(queries, k)
    assert len(got) == len(queries)
    for hits, ws, wi in zip(got, want_s, want_i):
        assert_same_ranking(hits, ws, [ids[i] for i in wi])


def assert_same_ranking(hits: list[SearchHit], want_scores: np.ndarray, want_ids: list[str], tol: float = 1e-5) -> None:
    """Same ids in the same order, except that documents whose scores differ by less than ``tol`` may swap.

    faiss and torch multiply in different orders, so scores can differ in the last float32 bits, and
    two documents a few 1e-8 apart can come out in either order (exact ties are tested separately).
    """
    np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=0, atol=tol)
    got_ids = [h.doc_id for h in hits]
    assert len(got_ids) == len(want_ids) and len(set(got_ids)) == len(got_ids)
    position = {d: j for j, d in enumerate(want_ids)}
    for pos, (g, w) in enumerate(zip(got_ids, want_ids)):
        if g != w:  # allowed only inside a group of near-equal scores
            assert g in position and abs(want_scores[position[g]] - want_scores[pos]) < tol, (pos, g, w)


def test_exact_index_breaks_ties_like_exact_search():
    """One-hot vectors give exactly tied scores (1 and 0); ties go to the earlier-written document."""
    dim = 8
    docs = np.eye(dim, dtype=np.float32)[np.arange(300) % dim]  # 300 docs, ~37 per direction
    queries = np.eye(dim, dtype=np.float32)[[0, 3, 7]]
    index, ids = make_index("exact", docs)
    for k in (5, 37, 40, 100, 300):  # cut inside the 1-group, at its end, inside the 0-group
        want_s, want_i = exact_search(queries, docs, k)
        got = index.search(queries, k)
        for hits, ws, wi in zip(got, want_s, want_i):
            assert [h.doc_id for h in hits] == [ids[i] for i in wi], k
            assert [h.score for h in hits] == ws.tolist()


def test_plain_search_asks_faiss_once():
    """Over-fetching is for ties, tombstones and filters: an ordinary search is one faiss call."""
    index, _ = make_index("exact", np.random.default_rng(1).standard_normal((500, 8)))
    calls = []
    inner_search = index._faiss_index.search

    class Spy:
        ntotal = index._faiss_index.ntotal

        def search(self, *args, **kwargs):
            calls.append(args[1])
            return inner_search(*args, **kwargs)

    index._faiss_index = Spy()
    index.search(np.random.default_rng(2).standard_normal((20, 8)), 10)
    assert calls == [11]


def test_hnsw_recall_at_10_vs_exact():
    docs = clustered(5000, 48, n_clusters=50, seed=1)
    queries = clustered(200, 48, n_clusters=50, seed=2)
    exact, ids = make_index("exact", docs)
    hnsw, _ = make_index("hnsw", docs)  # the defaults: M=32, ef_construction=200, ef_search=128
    truth = [{h.doc_id for h in hits} for hits in exact.search(queries, 10)]
    found = [{h.doc_id for h in hits} for hits in hnsw.search(queries, 10)]
    recall = np.mean([len(t & f) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95, recall


# ---------------------------------------------------------------------- writes
@pytest.mark.parametrize("kind", KINDS)
def test_add_get_upsert_replaces_vector_and_fields(kind):
    index = VectorIndex(dim=4, kind=kind)
    index.add(["a", "b", "c"], [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], [{"title": "A"}, {"title": "B"}, None])
    assert len(index) == 3 and "a" in index and "z" not in index
    got = index.get("a")
    np.testing.assert_array_equal(got.vector, [1, 0, 0, 0])  # normalised on the way in
    assert got.fields == {"title": "A"} and index.get("c").fields == {} and index.get("z") is None
    index.upsert(["a", "d"], [[0, 0, 0, 3], [1, 1, 0, 0]], [{"title": "A2"}, {"title": "D"}])
    assert len(index) == 4
    np.testing.assert_array_equal(index.get("a").vector, [0, 0, 0, 1])
    assert index.get("a").fields == {"title": "A2"}
    top = index.search([0, 0, 0, 1], 4)[0]
    assert top[0] == SearchHit("a", 1.0, {"title": "A2"})
    assert [h.doc_id for h in index.search([1, 0, 0, 0], 4)[0]][0] == "d"  # old "a" vector is gone
    assert sorted(h.doc_id for h in index.search([1, 0, 0, 0], 10)[0]) == ["a", "b", "c", "d"]  # each once
    index.upsert(["b"], [[0, 1, 0, 0]])  # fields=None replaces them with {}
    assert index.get("b").fields == {}


@pytest.mark.parametrize("kind", KINDS)
def test_delete_and_compact(kind):
    docs = clustered(400, 16, n_clusters=8, seed=3)
    index, ids = make_index(kind, docs)
    query = docs[:1]
    before = [h.doc_id for h in index.search(query, 20)[0]]
    assert index.delete(before[:5]) == 5
    assert len(index) == 395 and all(d not in index for d in before[:5])
    after = index.search(query, 15)[0]
    assert len(after) == 15 and not {h.doc_id for h in after} & set(before[:5])
    assert [h.doc_id for h in after] == before[5:20]
    assert index.n_tombstones == (5 if kind == "hnsw" else 0)
    assert index.delete(["doc00000", "nope"], missing_ok=True) == 0  # doc00000 was before[0]: already gone
    assert index.compact() == (5 if kind == "hnsw" else 0)
    assert index.n_tombstones == 0 and len(index) == 395
    assert [h.doc_id for h in index.search(query, 15)[0]] == before[5:20]


def test_hnsw_search_skips_tombstones_even_when_most_are_deleted():
    docs = clustered(300, 16, n_clusters=4, seed=4)
    index, ids = make_index("hnsw", docs, ef_search=16)
    index.delete(ids[:290])
    hits = index.search(docs[0], 10)[0]
    assert sorted(h.doc_id for h in hits) == ids[290:]


# ---------------------------------------------------------------------- filters
def test_exact_filters_equal_search_over_the_matching_subset():
    rng = np.random.default_rng(5)
    docs, queries = clustered(1500, 16, n_clusters=10, seed=5), clustered(20, 16, n_clusters=10, seed=6)
    colours = rng.choice(["red", "blue", "green"], size=len(docs), p=[0.02, 0.49, 0.49])
    sizes = rng.integers(3, size=len(docs))
    fields = [{"colour": c, "size": int(s)} for c, s in zip(colours, sizes)]
    index, ids = make_index("exact", docs, fields=fields)
    corpus = stored_matrix(index, ids)
    for flt in ({"colour": "red"}, {"colour": "blue", "size": "2"}, {"colour": "purple"}, {"missing": "x"}):
        keep = np.array([all(str(f.get(n)) == v for n, v in flt.items()) for f in fields])
        got = index.search(queries, 10, filters=flt)
        if not keep.any():
            assert got == [[] for _ in queries]
            continue
        want_s, want_i = exact_search(unit(queries), corpus[keep], 10)
        sub_ids = np.asarray(ids)[keep]
        for hits, wi in zip(got, want_i):
            assert [h.doc_id for h in hits] == sub_ids[wi].tolist()
            assert all(all(str(h.fields[n]) == v for n, v in flt.items()) for h in hits)


def test_hnsw_filters_keep_only_matching_documents_and_find_most_of_them():
    rng = np.random.default_rng(9)
    docs, queries = clustered(3000, 16, n_clusters=20, seed=9), clustered(50, 16, n_clusters=20, seed=10)
    fields = [{"colour": c} for c in rng.choice(["red", "blue"], size=len(docs), p=[0.1, 0.9])]
    exact, _ = make_index("exact", docs, fields=fields)
    hnsw, _ = make_index("hnsw", docs, fields=fields, hnsw_m=16, ef_search=32)
    want = exact.search(queries, 10, filters={"colour": "red"})
    got = hnsw.search(queries, 10, filters={"colour": "red"})
    assert all(len(hits) == 10 and all(h.fields["colour"] == "red" for h in hits) for hits in got)
    recall = np.mean([len({h.doc_id for h in g} & {h.doc_id for h in w}) / 10 for g, w in zip(got, want)])
    assert recall >= 0.9, recall


def test_hits_carry_copies_of_fields():
    index = VectorIndex(dim=2)
    index.add(["a"], [[1, 0]], [{"title": "A", "price": np.float64(2.5), "n": np.int64(3), "x": float("nan")}])
    hit = index.search([1, 0], 1)[0][0]
    assert hit.fields == {"title": "A", "price": 2.5, "n": 3, "x": None}
    hit.fields["title"] = "changed"
    assert index.get("a").fields["title"] == "A"
    with pytest.raises(AttributeError):
        hit.score = 0.0  # frozen


def test_empty_index_and_single_query_vector():
    index = VectorIndex(dim=3, kind="hnsw")
    assert len(index) == 0 and index.search(np.ones((2, 3)), 5) == [[], []]
    index.add(["a"], [1, 2, 3])  # one 1-D vector is one row
    assert [[h.doc_id for h in hits] for hits in index.search([1, 2, 3], 5)] == [["a"]]


# ---------------------------------------------------------------------- persistence
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path, kind):
    docs = clustered(500, 16, n_clusters=5, seed=7)
    fields = [{"title": f"product {i}", "rank": i} for i in range(len(docs))]
    index, ids = make_index(kind, docs, fields=fields, hnsw_m=8, ef_search=40, model="/models/m")
    index.delete(ids[:3])
    index.upsert([ids[10]], docs[11], [{"title": "moved"}])
    out = index.save(tmp_path / "idx")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dim"] == 16 and manifest["kind"] == kind and manifest["model"] == "/models/m"
    assert manifest["params"] == {"hnsw_m": 8, "ef_construction": 200, "ef_search": 40}
    assert manifest["count"] == 497
    loaded = VectorIndex.load(out)
    assert (loaded.kind, loaded.dim, loaded.params, loaded.model, len(loaded)) == (
        kind, 16, index.params, "/models/m", 497)
    assert loaded.n_tombstones == index.n_tombstones
    queries = clustered(30, 16, n_clusters=5, seed=8)
    assert loaded.search(queries, 10) == index.search(queries, 10)
    assert loaded.get(ids[10]).fields == {"title": "moved"} and loaded.get(ids[0]) is None
    loaded.add(["new"], docs[0])  # labels continue after the saved ones: nothing collides
    assert loaded.search(docs[0], 1)[0][0] == SearchHit("new", pytest.approx(1.0, abs=1e-6), {})
    assert json.loads((loaded.save(out) / "manifest.json").read_text())["next_label"] == manifest["next_label"] + 1
    assert len(VectorIndex.load(out)) == 498


def test_save_replaces_an_index_atomically_and_refuses_other_directories(tmp_path, monkeypatch):
    a = VectorIndex(dim=2)
    a.add(["a"], [[1, 0]])
    target = a.save(tmp_path / "idx")
    b = VectorIndex(dim=2)
    b.add(["b1", "b2"], [[1, 0], [0, 1]])

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_files.json, "dump", broken_dump)  # the manifest write fails
    with pytest.raises(OSError, match="disk full"):
        b.save(target)
    monkeypatch.undo()
    assert len(VectorIndex.load(target)) == 1  # the old index is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp directory left behind
    b.save(target)
    assert len(VectorIndex.load(target)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]

    other = tmp_path / "not_an_index"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing"):
        b.save(other)
    assert (other / "precious.txt").read_text() == "keep me"


def test_load_rejects_missing_and_inconsistent_indexes(tmp_path):
    with pytest.raises(DataError, match="manifest.json not found"):
        VectorIndex.load(tmp_path / "nowhere")
    index = VectorIndex(dim=2)
    index.add(["a", "b"], [[1, 0], [0, 1]])
    out = index.save(tmp_path / "idx")
    lines = (out / "documents.jsonl").read_text().splitlines()
    (out / "documents.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(DataError, match="disagree"):
        VectorIndex.load(out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ConfigError, match="version 99"):
        VectorIndex.load(out)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda ix: ix.add(["x"], [[1, 0]]), r"shape \(n, 3\)"),
        (lambda ix: ix.add(["x", "x"], [[1, 0, 0], [0, 1, 0]]), "appears twice"),
        (lambda ix: ix.add(["a"], [[1, 0, 0]]), "already in the index"),
        (lambda ix: ix.add(["x"], [[0, 0, 0]]), "all zeros"),
        (lambda ix: ix.add(["x"], [[np.nan, 0, 1]]), "NaN"),
        (lambda ix: ix.add([1], [[1, 0, 0]]), "must be strings"),
        (lambda ix: ix.add(["x", "y"], [[1, 0, 0]]), "2 ids for 1 vectors"),
        (lambda ix: ix.add(["x"], [[1, 0, 0]], [{"img": b"\x00"}]), "cannot be stored"),
        (lambda ix: ix.delete(["zz"]), "not in the index"),
        (lambda ix: ix.search([[1, 0, 0]], 0), "k must be"),
        (lambda ix: ix.search([[1, 0, 0]], 3, filters={"title": 3}), "filters"),
    ],
)
def test_bad_input_raises_gcl_errors(call, match):
    index = VectorIndex(dim=3)
    index.add(["a"], [[1, 0, 0]])
    with pytest.raises(GCLError, match=match):
        call(index)
    assert len(index) == 1  # nothing half-applied


@pytest.mark.parametrize("kw", [{"dim": 0}, {"dim": 4, "kind": "ivf"}, {"dim": 4, "hnsw_m": 1}, {"dim": 4, "ef_search": 0}])
def test_bad_constructor_arguments(kw):
    with pytest.raises(ConfigError):
        VectorIndex(**kw)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        VectorIndex(4)  # type: ignore[misc]
