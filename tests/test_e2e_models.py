"""Every model kind through every consumer: ``gcl train`` -> ``gcl evaluate`` -> ``gcl index build``
-> ``gcl search`` -> the HTTP service (text query, image upload, add a document with an image),
for a tiny text + image model and a tiny text-only model on the generated products.

Each result is checked against the model itself: search scores are the exact top-k of the query
embedding against the model's document embeddings, stored vectors are the model's embedding of
the document, an image query is the model's embedding of the uploaded bytes.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest_trainer import tiny_model
from multimodal_fixtures import multifield, product_dir

from gcl.cli.main import main
from gcl.encoders.base import EmbeddingModel, load_model
from gcl.encoders.query import encode_query_texts

pytest.importorskip("faiss")
pytest.importorskip("fastapi")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUERIES = ["red ceramic mug", "wooden table lamp"]


def train(tmp_path, model_cfg: dict) -> str:
    cfg = {
        "data": {"source": str(product_dir())},
        "model": model_cfg,
        "batch": {"batch_size": 16},
        "optim": {"steps": 3, "warmup_steps": 1, "lr": 3e-3},
        "eval": {"every": -1},
        "progress": False,
        "out_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    return str(tmp_path / "run" / "final")


def corpus_table() -> pd.DataFrame:
    raw = json.loads((product_dir() / "corpus_1.json").read_text())
    table = pd.DataFrame.from_dict(raw, orient="index")
    table.attrs["image_root"] = str(product_dir())
    return table


def check_search_output(model, out: str, corpus: pd.DataFrame, k: int) -> None:
    """``gcl search --json`` lines = the exact top-k of each query against every corpus document."""
    lines = [json.loads(line) for line in out.strip().splitlines()]
    docs = model.encode_documents(corpus)
    for q, text in enumerate(QUERIES):
        got = [h for h in lines if h["query"] == text]
        assert [h["rank"] for h in got] == list(range(1, k + 1))
        scores = docs @ encode_query_texts(model, [text])[0]
        np.testing.assert_allclose([h["score"] for h in got], np.sort(scores)[::-1][:k], atol=1e-5)
        for h in got:  # each hit's score is its own document's
            assert scores[corpus.index.get_loc(h["doc_id"])] == pytest.approx(h["score"], abs=1e-5)


def run_consumers(tmp_path, capsys, model_dir: str, doc_fields: str, *, images: bool) -> None:
    data, corpus = str(product_dir()), corpus_table()
    model = load_model(model_dir)
    assert isinstance(model, EmbeddingModel)
    assert model.doc_field_names == doc_fields.split(",")

    # evaluate
    assert main(["evaluate", "--model", model_dir, "--data", data, "--doc-fields", doc_fields, "--protocol", "all",
                 "--splits", "in_domain", "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())["splits"]["in_domain"]["summary"]
    assert 0 < summary["ndcg@10"] <= 1

    # index build, then search through the CLI
    index = tmp_path / "index"
    assert main(["index", "build", "--model", model_dir, "--data", data, "--doc-fields", doc_fields,
                 "--corpus", "corpus_1", "--out", str(index), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(index), *QUERIES, "-k", "5", "--json"]) == 0
    check_search_output(model, capsys.readouterr().out, corpus, 5)

    # serve: text query, image upload, add a document (with its image)
    from fastapi.testclient import TestClient

    from gcl.service.app import create_app
    from gcl.service.settings import ServiceSettings

    served = tmp_path / "served-images"  # the service's image root, not the training data's
    served.mkdir()
    source = corpus.iloc[0]
    png = (product_dir() / source["image_local"]).read_bytes()
    (served / "new.png").write_bytes(png)
    with TestClient(create_app(ServiceSettings(index_dir=index, image_root=served))) as client:
        r = client.post("/search", json={"query": QUERIES[0], "k": 5})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        want = np.sort(model.encode_documents(corpus) @ encode_query_texts(model, QUERIES[:1])[0])[::-1][:5]
        np.testing.assert_allclose([h["score"] for h in hits], want, atol=1e-5)
        assert client.get("/health").json()["image_search"] is images

        new_fields = {"title": "a brand new product", "image_local": "new.png", "brand": "new"}
        r = client.put("/documents/new-1", json={"fields": new_fields})
        assert r.status_code == 201, r.text
        stored = np.asarray(client.get("/documents/new-1", params={"vector": "true"}).json()["vector"])
        table = pd.DataFrame([new_fields], index=["new-1"])
        table.attrs["image_root"] = str(served)
        np.testing.assert_allclose(stored, model.encode_documents(table)[0], atol=1e-5)
        if images:  # the image counts: without it the document is its title alone
            np.testing.assert_array_less(stored @ model.encode_documents(table[["title"]].assign(image_local=None))[0],
                                         1 - 1e-4)

        r = client.post("/search/image", files={"file": ("q.png", png, "image/png")}, data={"k": "3"})
        if not images:
            assert r.status_code == 400 and "image" in r.json()["detail"]
            return
        assert r.status_code == 200, r.text
        query = model.encode_images([png])[0]
        for h in r.json()["hits"]:
            vec = np.asarray(client.get(f"/documents/{h['doc_id']}", params={"vector": "true"}).json()["vector"])
            assert h["score"] == pytest.approx(float(vec @ query), abs=1e-5)
        assert r.json()["hits"][0]["score"] == pytest.approx(
            float(np.max(np.append(model.encode_documents(corpus) @ query, stored @ query))), abs=1e-5)
        r = client.post("/search/image", files={"file": ("q.png", b"not an image", "image/png")})
        assert r.status_code == 422


def test_text_and_image_model_through_every_consumer(tmp_path, capsys):
    model_dir = train(tmp_path, {"multifield": multifield()})
    run_consumers(tmp_path, capsys, model_dir, "image_local,title", images=True)


def test_text_only_model_through_every_consumer(tmp_path, capsys):
    model_dir = train(tmp_path, {"text_model": str(tiny_model(0.0)), "max_seq_length": 16})
    run_consumers(tmp_path, capsys, model_dir, "title", images=False)
