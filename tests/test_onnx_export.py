"""``gcl export`` and the ONNX backends (gcl/encoders/onnx.py) on the tiny model: fp32 graph equal to
PyTorch, the int8 graph close to it, the backends in gcl search / index build / evaluate, and the
user errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from gcl.cli.main import main
from gcl.errors import ConfigError

TEXTS = ["red oak chair", "  Leading and trailing spaces  ", "UPPER case Model NUMBER 12-34X", "",
         "a much longer product title " * 12, "x", "brass door hinge, 3.5 in., satin nickel (2-pack)"]


def _have_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


needs_ort = pytest.mark.skipif(not _have_onnxruntime(), reason="needs the [onnx] extra (onnxruntime, onnx)")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory, one_torch_thread):
    if not _have_onnxruntime():
        pytest.skip("needs the [onnx] extra (onnxruntime, onnx)")
    out = tmp_path_factory.mktemp("export") / "tiny_onnx"
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    return out


def _queries(texts):
    return pd.DataFrame({"query": texts})


@needs_ort
def test_export_writes_both_graphs_and_the_fp32_fingerprint(exported, tiny_model_dir):
    from gcl.encoders.model import BiEncoder

    cfg = json.loads((exported / "gcl_onnx.json").read_text())
    assert set(cfg["files"]) == {"onnx", "onnx-int8"} and cfg["quantize"] == "int8"
    assert all((exported / f["path"]).is_file() for f in cfg["files"].values())
    # the copy beside the graphs is the same model: same fingerprint as the source directory
    assert cfg["fingerprint"] == BiEncoder.load(tiny_model_dir).fingerprint() == BiEncoder.load(exported).fingerprint()


@needs_ort
@pytest.mark.parametrize("batch_size", [256, 3])
def test_fp32_onnx_embeddings_equal_pytorch(exported, batch_size):
    from gcl.encoders.model import BiEncoder
    from gcl.encoders.onnx import load_backend

    want = BiEncoder.load(exported).encode_queries(_queries(TEXTS), batch_size=batch_size)
    got = load_backend(exported, "onnx").encode_queries(_queries(TEXTS), batch_size=batch_size)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@needs_ort
def test_int8_embeddings_are_close_to_fp32_and_fingerprints_differ(exported):
    from gcl.encoders.model import BiEncoder
    from gcl.encoders.onnx import load_backend

    torch_model = BiEncoder.load(exported)
    fp32 = torch_model.encode_documents(pd.DataFrame({"title": TEXTS}))
    int8_model = load_backend(exported, "onnx-int8")
    int8 = int8_model.encode_documents(pd.DataFrame({"title": TEXTS}))
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1, atol=1e-5)
    cos = (fp32 * int8).sum(axis=1)
    assert cos.min() >= 0.99 and not np.array_equal(fp32, int8)
    prints = {torch_model.fingerprint(), load_backend(exported, "onnx").fingerprint(), int8_model.fingerprint()}
    assert len(prints) == 3 and int8_model.base_fingerprint == torch_model.fingerprint()


@pytest.fixture(scope="module")
def torch_index(exported, tmp_path_factory):
    pytest.importorskip("faiss")
    out = tmp_path_factory.mktemp("idx") / "torch"
    assert main(["index", "build", "--model", str(exported), "--data", "synthetic", "--out", str(out),
                 "--no-progress"]) == 0
    return out


@needs_ort
@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_search_with_an_onnx_backend_finds_the_document_itself(torch_index, backend, capsys):
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig

    corpus = load_benchmark(DataConfig(source="synthetic")).corpus_1
    capsys.readouterr()
    doc_id, title = corpus.index[7], corpus["title"].iloc[7]
    assert main(["search", "--index", str(torch_index), "--encoder-backend", backend, title, "-k", "3",
                 "--json"]) == 0
    top = json.loads(capsys.readouterr().out.splitlines()[0])
    assert top["doc_id"] == doc_id and top["score"] == pytest.approx(1, abs=0.01)


@needs_ort
def test_index_build_with_the_int8_backend(exported, tmp_path, capsys):
    pytest.importorskip("faiss")
    from gcl.index import VectorIndex

    out = tmp_path / "int8"
    assert main(["index", "build", "--model", str(exported), "--data", "synthetic", "--out", str(out),
                 "--encoder-backend", "onnx-int8", "--no-progress"]) == 0
    assert len(VectorIndex.load(out)) > 0


@needs_ort
def test_evaluate_query_backend_reuses_the_fp32_document_cache(exported, tmp_path, capsys):
    base = ["evaluate", "--model", str(exported), "--data", "synthetic", "--splits", "in_domain",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "fp32")]) == 0
    first = capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "int8"), "--query-backend", "onnx-int8"]) == 0
    second = capsys.readouterr().err
    assert "[cache] 0 documents encoded" in second and "[cache] 0 documents encoded" not in first
    assert (tmp_path / "int8" / "results.json").is_file()


def test_query_side_model_takes_documents_and_fingerprint_from_the_document_model():
    from gcl.encoders.onnx import QuerySideModel

    class Fake:
        def __init__(self, name, dim=4):
            self.name, self.dim = name, dim

        def fingerprint(self):
            return self.name

        def encode_queries(self, q, **kw):
            return np.full((len(q), self.dim), 1.0 if self.name == "q" else 2.0, dtype=np.float32)

        encode_documents = encode_queries

    m = QuerySideModel(Fake("d"), Fake("q"))
    assert m.fingerprint() == "d" and m.dim == 4
    assert m.encode_queries(_queries(["a"]))[0, 0] == 1.0 and m.encode_documents(_queries(["a"]))[0, 0] == 2.0
    with pytest.raises(ConfigError, match="8-d"):
        QuerySideModel(Fake("d"), Fake("q", dim=8))


# ------------------------------------------------------------------------------------ user errors
def test_export_of_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert main(["export", "--model", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and str(missing) in err and "Traceback" not in err


def test_export_of_a_multifield_model_is_refused_naming_it(tmp_path, capsys):
    model = tmp_path / "mf"
    model.mkdir()
    (model / "gcl_model.json").write_text(json.dumps({"format": "multifield"}))
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'multifield'" in err and "multi-field export is not supported" in err


def test_onnx_backend_without_onnxruntime_names_the_extra(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'gcl[onnx]'" in capsys.readouterr().err
    from gcl.encoders.onnx import load_backend

    with pytest.raises(ConfigError, match=r"gcl\[onnx\]"):
        load_backend(tiny_model_dir, "onnx-int8")


@needs_ort
def test_onnx_backend_of_a_model_that_was_not_exported(tiny_model_dir):
    from gcl.encoders.onnx import load_backend

    with pytest.raises(ConfigError, match="gcl export"):
        load_backend(tiny_model_dir, "onnx")


@needs_ort
def test_int8_backend_of_an_fp32_only_export(tiny_model_dir, tmp_path, one_torch_thread):
    from gcl.encoders.onnx import load_backend

    out = tmp_path / "fp32_only"
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(out), "--quantize", "none"]) == 0
    assert load_backend(out, "onnx").dim == 32
    with pytest.raises(ConfigError, match="--quantize none"):
        load_backend(out, "onnx-int8")


def test_unknown_backend_in_service_settings(tmp_path):
    from gcl.service.settings import ServiceSettings

    with pytest.raises(ConfigError, match="encoder_backend 'tf'"):
        ServiceSettings(index_dir=tmp_path, encoder_backend="tf")


def test_every_export_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--model", "--out", "--quantize", "--opset"))


@needs_ort
def test_service_encodes_queries_with_the_int8_backend(torch_index, exported):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gcl.data.sources import load_benchmark
    from gcl.service import ServiceSettings, create_app
    from gcl.training.config import DataConfig

    corpus = load_benchmark(DataConfig(source="synthetic")).corpus_1
    settings = ServiceSettings(index_dir=torch_index, model=str(exported), encoder_backend="onnx-int8")
    with TestClient(create_app(settings)) as client:
        hits = client.post("/search", json={"query": corpus["title"].iloc[7], "k": 3}).json()["hits"]
    assert hits[0]["doc_id"] == corpus.index[7]


@needs_ort
def test_service_passes_its_backend_to_the_model_loader(torch_index, tiny_model_dir, tmp_path, one_torch_thread):
    pytest.importorskip("fastapi")
    from gcl.service import ServiceSettings, create_app

    fp32_only = tmp_path / "fp32_only"
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(fp32_only), "--quantize", "none"]) == 0
    with pytest.raises(ConfigError, match="--quantize none"):
        create_app(ServiceSettings(index_dir=torch_index, model=str(fp32_only), encoder_backend="onnx-int8"))
