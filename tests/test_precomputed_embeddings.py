"""``gcl evaluate --embeddings``: vectors gathered from the .npy files in windows, not loaded.

Equal, bit for bit, to the previous way (load, convert to float32, normalise, index) for every
dtype and window size; memory stays near the gathered rows (tracemalloc sees numpy's buffers),
not the file; a corpus shared by splits is gathered once; broken files are named.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

import gcl.evaluation.vector_file as vector_file
from gcl.data.errors import DataError
from gcl.evaluation.retrievers import PrecomputedRetriever
from gcl.evaluation.search import exact_search
from gcl.evaluation.vector_file import VectorFile


def previous_way(path, rows):
    vecs = np.load(path).astype(np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return (vecs / np.maximum(norms, 1e-12))[rows]


def write_dir(root, q_vecs, d_vecs):
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "queries.npy", q_vecs)
    np.save(root / "documents.npy", d_vecs)
    (root / "query_ids.txt").write_text("".join(f"q{i}\n" for i in range(len(q_vecs))), encoding="utf-8")
    (root / "doc_ids.txt").write_text("".join(f"d{i}\n" for i in range(len(d_vecs))), encoding="utf-8")
    return root


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", ">f4", "int8"])
@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("window", [1, 5, 64, 10_000])
def test_gather_equals_load_convert_normalise_index(tmp_path, dtype, fortran, window):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((300, 9)) * 20).astype(dtype)
    x[7] = 0  # a zero vector stays zero
    np.save(tmp_path / "v.npy", np.asfortranarray(x) if fortran else x)
    rows = np.concatenate([rng.integers(0, 300, 500), [299, 0, 7, 7]])  # repeats, ends, any order
    got = VectorFile(tmp_path / "v.npy").gather(rows, window=window)
    assert got.dtype == np.float32 and got.shape == (len(rows), 9)
    if fortran:  # the norm's summation order follows the memory layout: equal to the last bit or so
        np.testing.assert_allclose(got, previous_way(tmp_path / "v.npy", rows), rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, previous_way(tmp_path / "v.npy", rows))


def test_retriever_results_equal_the_previous_way(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_file, "WINDOW_ROWS", 16)
    rng = np.random.default_rng(0)
    root = write_dir(tmp_path / "e", rng.standard_normal((12, 8)), rng.standard_normal((500, 8)) * 3)
    d_order = rng.permutation(500)[:400]
    qs = pd.DataFrame({"query": "x"}, index=pd.Index([f"q{i}" for i in (3, 1, 11)], name="query_id"))
    ds = pd.DataFrame({"title": "y"}, index=pd.Index([f"d{i}" for i in d_order], name="doc_id"))
    scores, idx = PrecomputedRetriever(root).search(qs, ds, 20)
    want_s, want_i = exact_search(previous_way(root / "queries.npy", [3, 1, 11]),
                                  previous_way(root / "documents.npy", d_order), 20)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_array_equal(scores, want_s)


def test_memory_is_the_gathered_rows_not_the_file(tmp_path, monkeypatch):
    """A 10 MB float64 file, 2,000 of its 20,000 rows searched: the old loader allocated the file
    (10 MB) and a float32 copy (5 MB) before gathering; now one window and the rows (0.5 MB) plus
    the 20,000 ids (about 2.5 MB of Python strings and dict)."""
    monkeypatch.setattr(vector_file, "WINDOW_ROWS", 1024)
    rng = np.random.default_rng(1)
    root = write_dir(tmp_path / "e", rng.standard_normal((4, 64)), rng.standard_normal((20_000, 64)))
    ds = pd.DataFrame({"title": "y"}, index=pd.Index([f"d{i}" for i in rng.permutation(20_000)[:2000]]))
    qs = pd.DataFrame({"query": "x"}, index=pd.Index(["q0", "q1"]))
    tracemalloc.start()
    try:
        PrecomputedRetriever(root).search(qs, ds, 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_a_corpus_shared_by_splits_is_gathered_once(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = write_dir(tmp_path / "e", rng.standard_normal((6, 4)), rng.standard_normal((30, 4)))
    calls = []
    real = VectorFile.gather
    monkeypatch.setattr(VectorFile, "gather", lambda self, rows, **kw: calls.append(len(rows)) or real(self, rows, **kw))
    retriever = PrecomputedRetriever(root)
    corpus = pd.DataFrame({"title": "y"}, index=pd.Index([f"d{i}" for i in range(30)]))
    other = pd.DataFrame({"title": "y"}, index=pd.Index([f"d{i}" for i in range(10)]))
    for queries in (["q0", "q1"], ["q2"], ["q3", "q4", "q5"]):
        retriever.search(pd.DataFrame({"query": "x"}, index=pd.Index(queries)), corpus, 3)
    assert calls == [2, 30, 1, 3]  # queries each time; the corpus once
    retriever.search(pd.DataFrame({"query": "x"}, index=pd.Index(["q0"])), other, 3)
    assert calls[-2:] == [1, 10]  # a different corpus table is gathered (and replaces the first)


def test_broken_files_are_named(tmp_path):
    root = write_dir(tmp_path / "e", np.ones((2, 4)), np.ones((3, 4)))
    raw = (root / "documents.npy").read_bytes()
    (root / "documents.npy").write_bytes(raw[:-8])
    with pytest.raises(DataError, match="documents.npy"):
        PrecomputedRetriever(root)
    np.save(root / "documents.npy", np.ones((3, 4, 2)))
    with pytest.raises(DataError, match=r"documents.npy.*2-D numeric array|2-D numeric array.*documents.npy"):
        PrecomputedRetriever(root)
    (root / "documents.npy").write_text("not an npy file")
    with pytest.raises(DataError, match="documents.npy"):
        PrecomputedRetriever(root)
