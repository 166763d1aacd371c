"""ONNX Runtime backends for the text bi-encoder: ``gcl export`` writes them, :func:`load_backend` reads them.

An export directory (``gcl export --model DIR --out OUT``) holds::

    <the saved BiEncoder>      sentence-transformers files + gcl_model.json: the torch backend loads OUT too
    onnx/model.onnx            fp32 graph (input_ids, attention_mask[, token_type_ids]) -> sentence_embedding
    onnx/model_qint8.onnx      its ONNX Runtime dynamic int8 quantisation (with --quantize int8)
    onnx/tokenizer files       the tower's tokenizer, read by transformers.AutoTokenizer
    gcl_onnx.json              {"format": "gcl-onnx", "fingerprint": the fp32 model's, "max_seq_length",
                                "files": {backend: {"path", "sha1"}}}

The graph is the whole sentence-transformers pipeline (transformer, pooling, any dense/normalise
modules) followed by ``e / ||e||``, so a backend's rows are what ``BiEncoder.encode_texts`` gives.

Dynamic int8 quantisation (``onnxruntime.quantization.quantize_dynamic``, MatMul weights, per
channel): each weight column ``j`` is stored as ``q_W = round(W / s_j)`` in ``[-127, 127]`` with
``s_j = max_i |W_ij| / 127``;
at run time each activation ``x`` is quantised with ``s_x = (max x - min x) / 255`` and zero point
``z_x``, and ``(x W)_j ~= s_x s_j ((q_x - z_x) q_W)_j`` is an integer matrix product.

The exported model is the same model: ``fingerprint()`` of a backend is
``sha1(fp32 fingerprint | backend | sha1 of the graph file)``, distinct per backend (its vectors
differ in the last digits), and ``base_fingerprint`` is the fp32 model's. Only the text bi-encoder
is exported; a multi-field model (per-field towers, image fields) is refused, and an image tower
saved beside a text model is not part of the graph (image queries need the torch backend).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from gcl.encoders.base import TextFieldsModel, read_json_object
from gcl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from gcl.encoders.base import EmbeddingModel

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
QUANTIZE_CHOICES: tuple[str, ...] = ("int8", "none")
ONNX_CONFIG_FILE = "gcl_onnx.json"
ONNX_FORMAT = "gcl-onnx"
_GRAPH_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8.onnx"}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ExportOptions:
    """``gcl export`` options. ``quantize``: ``int8`` also writes the dynamic int8 graph, ``none``
    the fp32 one only. ``opset``: the ONNX opset of the graph."""

    quantize: str = "int8"
    opset: int = 17


@dataclass(frozen=True)
class BackendOptions:
    """Which engine encodes text: ``torch`` (the saved PyTorch model), ``onnx`` (fp32 graph) or
    ``onnx-int8`` (dynamic int8 graph) of a directory written by ``gcl export``."""

    backend: str = "torch"


DEFAULT_BACKEND = BackendOptions().backend


def require_onnxruntime() -> None:
    """ConfigError naming the extra when onnxruntime or onnx is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"the ONNX backend needs onnxruntime and onnx ({exc}); "
                          "install them with: pip install 'gcl[onnx]'") from exc


def check_backend(backend: str, option: str = "--encoder-backend") -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"{option} {backend!r} is unknown; choose from {list(BACKENDS)}")
    return backend


# ---------------------------------------------------------------------------------------- export
def export_model(model_dir: str | Path, out_dir: str | Path, options: ExportOptions = ExportOptions()) -> Path:
    """Export the text bi-encoder at ``model_dir`` to ``out_dir`` (layout in the module docstring)."""
    from gcl.encoders.base import read_model_config

    if options.quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"--quantize {options.quantize!r} is unknown; choose from {list(QUANTIZE_CHOICES)}")
    src, out = Path(model_dir), Path(out_dir)
    raw = read_model_config(src)
    if raw is not None and raw.get("format") is not None:
        raise ConfigError(f"{src} is a {raw.get('format')!r} model (per-field towers, image fields): gcl export "
                          "supports the text bi-encoder only; multi-field export is not supported")
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the model directory itself; choose another directory")
    require_onnxruntime()
    from gcl.encoders.model import BiEncoder

    model = BiEncoder.load(src)
    model.eval()
    model.save(out)
    (out / "onnx").mkdir(exist_ok=True)
    model.tower.tokenizer.save_pretrained(str(out / "onnx"))
    files = {"onnx": _export_graph(model, out / _GRAPH_FILES["onnx"], options.opset)}
    if options.quantize == "int8":
        files["onnx-int8"] = _quantize(out / _GRAPH_FILES["onnx"], out / _GRAPH_FILES["onnx-int8"])
    cfg = {"format": ONNX_FORMAT, "fingerprint": model.fingerprint(), "source": str(src),
           "max_seq_length": int(model.tower.max_seq_length or 512), "dim": model.dim, "quantize": options.quantize,
           "files": files}
    (out / ONNX_CONFIG_FILE).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out


def _export_graph(model, path: Path, opset: int) -> dict[str, str]:
    """Trace tower + L2 normalisation to ``path``; batch and sequence axes dynamic."""
    import torch

    class _Graph(torch.nn.Module):
        def __init__(self, tower, names):
            super().__init__()
            self.tower, self.names = tower, names

        def forward(self, *tensors):
            out = self.tower(dict(zip(self.names, tensors)))["sentence_embedding"]
            return torch.nn.functional.normalize(out, dim=-1)

    feats = model.tower.tokenizer(["an example query", "a longer example product title"], padding=True,
                                  truncation=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in feats]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"sentence_embedding": {0: "batch"}}
    import warnings

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that hold for every input
        torch.onnx.export(_Graph(model.tower, names), tuple(feats[n] for n in names), str(path), input_names=names,
                          output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return {"path": _GRAPH_FILES["onnx"], "sha1": _sha1(path)}


def _quantize(src: Path, dst: Path) -> dict[str, str]:
    """ONNX Runtime dynamic quantisation of the MatMul weights to int8, one scale per output column
    (per-tensor scales cost MiniLM cosine to fp32 down to 0.92, per-column 0.986 on Home Depot titles);
    MatMuls of two activations (attention scores) stay fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                     extra_options={"MatMulConstBOnly": True})
    return {"path": _GRAPH_FILES["onnx-int8"], "sha1": _sha1(dst)}


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- loading
def read_export_config(path: str | Path) -> dict | None:
    """The parsed ``gcl_onnx.json`` of an export directory; ``None`` when there is none."""
    f = Path(path) / ONNX_CONFIG_FILE
    raw = read_json_object(f)
    if raw is not None and (raw.get("format") != ONNX_FORMAT or not isinstance(raw.get("files"), dict)):
        raise ConfigError(f"{f} is not a gcl ONNX export (format {ONNX_FORMAT!r} with 'files')")
    return raw


def load_backend(path_or_name: str | Path, backend: str = DEFAULT_BACKEND, *, device: str = "cpu") -> "EmbeddingModel":
    """The one place a model is built with a backend: ``torch`` is :func:`gcl.encoders.base.load_model`;
    ``onnx`` / ``onnx-int8`` read that graph of a ``gcl export`` directory."""
    from gcl.encoders.base import load_model

    check_backend(backend)
    if backend == "torch":
        return load_model(path_or_name, device=device)
    require_onnxruntime()
    cfg = read_export_config(path_or_name)
    if cfg is None:
        raise ConfigError(f"{path_or_name} has no {ONNX_CONFIG_FILE}: backend {backend!r} needs a directory written "
                          f"by 'gcl export --model {path_or_name} --out DIR'")
    if backend not in cfg["files"]:
        raise ConfigError(f"{path_or_name} was exported with --quantize {cfg.get('quantize')}: it has no {backend!r} "
                          "graph; export again with --quantize int8")
    return OnnxBiEncoder(Path(path_or_name), cfg, backend)


class OnnxBiEncoder(TextFieldsModel):
    """The text bi-encoder of an export directory, encoding through an ONNX Runtime session.

    Field lists and fusion weights are the saved model's (``gcl_model.json``); each text is
    tokenised by the saved tokenizer (truncated at ``max_seq_length``), batches are formed from
    texts of similar length, and the graph returns L2-normalised rows. Threads: the session uses
    ``torch.get_num_threads()`` intra-op threads, so ``--threads`` / ``OMP_NUM_THREADS`` apply as
    they do to the torch backend.
    """

    def __init__(self, path: Path, cfg: dict, backend: str) -> None:
        import onnxruntime as ort
        import torch
        from transformers import AutoTokenizer

        from gcl.encoders.base import read_model_config
        from gcl.encoders.config import BiEncoderConfig
        from gcl.fusion import field_weights

        self.path, self.backend, self._cfg = path, backend, cfg
        raw = read_model_config(path) or {}
        try:
            self.config = BiEncoderConfig(**{**raw, "text_model": str(path)})
        except TypeError as exc:
            raise ConfigError(f"{path}/gcl_model.json: {exc}") from exc
        self._q_weights = field_weights(self.config.query_fields, self.config.query_field_weights or None)
        self._d_weights = field_weights(self.config.doc_fields, self.config.doc_field_weights or None)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path / "onnx"))
        self.max_seq_length = int(cfg.get("max_seq_length") or 512)
        graph = path / cfg["files"][backend]["path"]
        if not graph.is_file():
            raise ConfigError(f"{graph} is missing: export again with gcl export")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._dim = int(cfg.get("dim") or self.session.get_outputs()[0].shape[-1])

    # ------------------------------------------------------------------ the EmbeddingModel protocol
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def source(self) -> str | None:
        return str(self.path)

    @property
    def image_search(self) -> bool:
        return False

    def encode_images(self, images: Sequence[bytes]) -> "np.ndarray":
        raise ConfigError(f"the {self.backend} backend of {self.path} encodes text only; image queries need "
                          "--encoder-backend torch")

    @property
    def base_fingerprint(self) -> str:
        """The fp32 PyTorch model's fingerprint (what the export was made from)."""
        return str(self._cfg["fingerprint"])

    def fingerprint(self) -> str:
        parts = (self.base_fingerprint, self.backend, str(self._cfg["files"][self.backend].get("sha1", "")))
        return hashlib.sha1("|".join(parts).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        shutil.copytree(self.path, path, dirs_exist_ok=True)
        return path

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256, show_progress: bool = False) -> "np.ndarray":
        """(n, d) float32, L2-normalised; texts sorted by length so a batch pads little."""
        import numpy as np

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            feats = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_seq_length, return_tensors="np")
            out[idx] = self.session.run(None, {n: feats[n].astype(np.int64) for n in self._inputs})[0]
        return out


class QuerySideModel:
    """Documents (and the fingerprint the document cache is keyed by) from ``documents``, queries
    from ``queries``: ``gcl evaluate --query-backend`` scores an int8 query encoder against the fp32
    document embeddings, which a previous fp32 run has cached."""

    def __init__(self, documents: "EmbeddingModel", queries: "EmbeddingModel") -> None:
        if int(documents.dim) != int(queries.dim):
            raise ConfigError(f"the query encoder makes {queries.dim}-d vectors, the document encoder {documents.dim}-d")
        self.documents, self.queries = documents, queries

    def __getattr__(self, name):  # dim, field names, kinds, source, image_search, encode_images, save
        return getattr(self.documents, name)

    def fingerprint(self) -> str:
        return self.documents.fingerprint()

    def encode_queries(self, queries, *, batch_size: int = 256, show_progress: bool = False):
        return self.queries.encode_queries(queries, batch_size=batch_size, show_progress=show_progress)

    def encode_documents(self, documents, *, batch_size: int = 256, show_progress: bool = False):
        return self.documents.encode_documents(documents, batch_size=batch_size, show_progress=show_progress)
