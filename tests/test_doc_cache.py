"""Document embeddings cached on disk: a second evaluation of the same model encodes nothing.

A counting model (the EmbeddingModel protocol, deterministic vectors from the text) goes through
the evaluator twice with fresh retrievers, as two ``gcl evaluate`` runs would; then a real tiny
model through the CLI. Changed text, another fingerprint, corrupt cache files, ``--no-cache``.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from gcl.cli.main import main
from gcl.embedding_cache import EmbeddingCache
from gcl.evaluation.doc_cache import document_keys, encode_documents_cached
from gcl.evaluation.evaluator import Protocol, evaluate_task, prepare_task
from gcl.evaluation.retrievers import DenseRetriever


class CountingModel:
    """Vectors from a hash of the text (salted by ``version``); counts the documents encoded."""

    dim = 16
    query_field_names = ["query"]
    doc_field_names = ["title"]

    def __init__(self, version: str = "v1") -> None:
        self.version = version
        self.encoded = 0
        self.encoded_queries = 0

    def field_kinds(self, side):
        return {"query": "text"} if side == "query" else {"title": "text"}

    def fingerprint(self) -> str:
        return hashlib.sha1(self.version.encode()).hexdigest()

    def query_fingerprint(self) -> str:  # its queries are encoded by the fingerprinted weights too
        return self.fingerprint()

    def _vec(self, texts) -> np.ndarray:
        out = np.stack([np.random.default_rng(int(hashlib.sha1(f"{self.version}|{t}".encode()).hexdigest()[:12], 16))
                        .standard_normal(self.dim) for t in texts]).astype(np.float32) if len(texts) else \
            np.zeros((0, self.dim), np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def encode_documents(self, documents, *, batch_size=256, show_progress=False):
        self.encoded += len(documents)
        return self._vec(documents["title"].astype(str).tolist())

    def encode_queries(self, queries, *, batch_size=256, show_progress=False):
        self.encoded_queries += len(queries)
        return self._vec(queries["query"].astype(str).tolist())


def evaluate_all(dataset, model, cache_dir):
    """Every split of ``dataset`` with one fresh retriever (one ``gcl evaluate`` run)."""
    from gcl.data.sources import Benchmark
    from gcl.data.splits import build_splits

    retriever = DenseRetriever(model, show_progress=False, cache_dir=cache_dir)
    protocol = Protocol(name="all")
    bench = Benchmark.from_splits(build_splits(dataset, seed=0), "tiny")
    out = {}
    for name in ("in_domain", "novel_query", "novel_corpus", "zero_shot"):
        split = bench.eval_split(name)
        if len(split.judgments):
            out[name] = evaluate_task(prepare_task(split, protocol, name=name), retriever, protocol).summary
    return out, retriever.encoded_documents


def test_second_evaluation_encodes_nothing_and_scores_the_same(tiny_dataset, tmp_path):
    model = CountingModel()
    first, n_first = evaluate_all(tiny_dataset, model, tmp_path / "cache")
    assert n_first == model.encoded > 0
    assert model.encoded_queries > 0
    model.encoded = model.encoded_queries = 0
    second, n_second = evaluate_all(tiny_dataset, model, tmp_path / "cache")
    assert model.encoded == 0 and n_second == 0
    assert model.encoded_queries == 0  # the test queries come from the cache too
    assert second == first
    uncached, _ = evaluate_all(tiny_dataset, CountingModel(), None)
    assert uncached == first  # the cache changes nothing but the work


def test_changed_text_or_another_model_is_encoded_again(tmp_path):
    docs = pd.DataFrame({"title": [f"product {i}" for i in range(50)]}, index=[f"d{i}" for i in range(50)])
    model = CountingModel()
    emb, n = encode_documents_cached(model, docs, cache_dir=tmp_path)
    assert n == 50
    changed = docs.copy()
    changed.loc["d7", "title"] = "product 7, new edition"
    emb2, n = encode_documents_cached(model, changed, cache_dir=tmp_path)
    assert n == 1  # only the changed document
    np.testing.assert_array_equal(np.delete(emb2, 7, axis=0), np.delete(emb, 7, axis=0))
    np.testing.assert_array_equal(emb2[7], model._vec(["product 7, new edition"])[0])
    other = CountingModel("v2")  # another fingerprint (e.g. one more training step)
    emb3, n = encode_documents_cached(other, docs, cache_dir=tmp_path)
    assert n == 50 and not np.allclose(emb3, emb)
    np.testing.assert_array_equal(emb3, other._vec(docs["title"].tolist()))


def test_duplicate_texts_are_encoded_once_and_missing_values_differ_from_empty():
    docs = pd.DataFrame({"title": ["a", "b", "a", None, "", "a"]})
    keys = document_keys(docs, ["title"])
    assert keys[0] == keys[2] == keys[5] and len({keys[1], keys[3], keys[4], keys[0]}) == 4
    assert document_keys(docs, ["title"]) != document_keys(docs.rename(columns={"title": "name"}), ["name"])


def test_duplicates_share_one_encoding(tmp_path):
    docs = pd.DataFrame({"title": ["a", "b", "a", "c", "a"]})
    model = CountingModel()
    emb, n = encode_documents_cached(model, docs, cache_dir=tmp_path)
    assert n == 3 and model.encoded == 3
    np.testing.assert_array_equal(emb, model._vec(["a", "b", "a", "c", "a"]))


@pytest.mark.parametrize("damage", ["index", "shard", "short shard"])
def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_recomputed(tmp_path, damage):
    docs = pd.DataFrame({"title": [f"t{i}" for i in range(20)]})
    model = CountingModel()
    want, _ = encode_documents_cached(model, docs, cache_dir=tmp_path)
    ns = tmp_path / f"docs-{model.fingerprint()}"
    if damage == "index":
        (ns / "index.json").write_text("{not json")
    elif damage == "shard":
        (ns / "part-00000.npy").write_bytes(b"garbage")
    else:
        np.save(ns / "part-00000.npy", np.zeros((3, 16), np.float32))
    with pytest.warns(UserWarning, match="unreadable"):
        got, n = encode_documents_cached(model, docs, cache_dir=tmp_path)
    assert n == 20
    np.testing.assert_array_equal(got, want)
    with warnings.catch_warnings():  # the rewritten cache is whole again
        warnings.simplefilter("error")
        again, n = encode_documents_cached(model, docs, cache_dir=tmp_path)
    assert n == 0
    np.testing.assert_array_equal(again, want)


def test_cache_files_are_written_atomically(tmp_path, monkeypatch):
    import gcl.embedding_cache as ec

    written = []
    real = ec.write_atomic
    monkeypatch.setattr(ec, "write_atomic", lambda path, fn: written.append(path.name) or real(path, fn))
    cache = EmbeddingCache(tmp_path, namespace="x")
    cache.put(["a", "b"], np.ones((2, 3)))
    assert written == ["part-00000.npy", "index.json"]
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["index.json", "part-00000.npy"]  # no temp left
    assert json.loads((tmp_path / "x" / "index.json").read_text())["keys"] == {"a": [0, 0], "b": [0, 1]}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


def test_cli_second_run_encodes_nothing(tmp_path, capsys, tiny_model_dir):
    base = ["evaluate", "--data", "synthetic", "--model", str(tiny_model_dir), "--protocol", "all",
            "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().err
    assert "[cache] 0 documents encoded" not in first and "[cache]" in first
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    assert "[cache] 0 documents encoded" in capsys.readouterr().err
    a = json.loads((tmp_path / "a" / "results.json").read_text())["splits"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["splits"]
    assert {s: v["summary"] for s, v in a.items()} == {s: v["summary"] for s, v in b.items()}
    # --no-cache: everything encoded, nothing read or written
    assert main(base + ["--out", str(tmp_path / "c"), "--no-cache", "--cache-dir", str(tmp_path / "unused")]) == 0
    assert "[cache]" not in capsys.readouterr().err and not (tmp_path / "unused").exists()


def test_help_shows_the_cache_and_how_to_clear_it(capsys, monkeypatch):
    monkeypatch.setenv("GCL_CACHE_DIR", "/srv/gclcache")  # no hyphen: argparse may wrap there
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-cache" in text and "GCL_CACHE_DIR" in text and "/srv/gclcache" in text
    assert "clear it by deleting that directory" in text


def test_queries_of_a_model_without_a_query_fingerprint_are_not_cached(tmp_path):
    """A wrapper whose fingerprint() is the document model's while queries go elsewhere (e.g. an
    ONNX graph) must not read or write query vectors under that fingerprint."""
    from gcl.evaluation.doc_cache import encode_cached, query_fingerprint

    class QueriesElsewhere(CountingModel):
        query_fingerprint = None  # no claim about the query encoder

    model = QueriesElsewhere()
    assert query_fingerprint(model) is None
    queries = pd.DataFrame({"query": ["a", "b"]})
    encode_cached(model, queries, "query", cache_dir=tmp_path)
    _, n = encode_cached(model, queries, "query", cache_dir=tmp_path)
    assert n == 2 and model.encoded_queries == 4 and not any(tmp_path.iterdir())
    assert query_fingerprint(CountingModel()) == CountingModel().fingerprint()
