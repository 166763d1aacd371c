"""Training configuration: dataclasses filled from YAML (see ``configs/``) and CLI overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Literal, Optional, Union

from gcl.errors import ConfigError
from gcl.data.schema import Field, FieldKind
from gcl.encoders.config import BiEncoderConfig, MultiFieldConfig


@dataclass
class DataConfig:
    source: str = "homedepot"  # homedepot | synthetic | a Marqo-GS directory | a CSV/JSONL/Parquet file
    data_dir: Optional[str] = None  # default: $GCL_DATA_DIR or ../shared/data
    split_seed: int = 0
    # fraction of the training queries withheld as the dev split (as ``gcl split --dev-frac``); it
    # decides how small a difference dev can see (docs/training.md "How large a dev split");
    # the test splits do not depend on it. A Marqo-GS directory brings its own dev.csv.
    dev_frac: float = 0.05
    query_col: str = "query"  # column mapping for generic files
    doc_id_col: str = "doc_id"
    score_col: str = "score"
    encoding: str = "utf-8"  # text encoding of CSV/TSV/JSONL data files (--encoding)
    allow_negative: bool = False  # accept negative scores in data files (--allow-negative)
    # document fields read from the source; a name starting with "image" is an image field (as in
    # the Marqo-GS layout), so a Parquet column of image bytes is read as images, not as text
    doc_fields: list[Union[str, Field]] = field(default_factory=lambda: ["title"])

    def __post_init__(self) -> None:
        self.doc_fields = [
            Field(f, FieldKind.IMAGE) if isinstance(f, str) and f.startswith("image") else f for f in self.doc_fields
        ]


@dataclass
class ModelConfig(BiEncoderConfig):
    """``model:`` of a training config: the text model spec (:class:`BiEncoderConfig`, the one
    place its defaults live: text model, ``max_seq_length``, fields, fusion weights), or a
    multi-field model."""

    # A multi-field model (text and image towers, per-side fields with fusion weights; see
    # docs/multimodal.md). When set, text_model/max_seq_length/*_fields above are not used.
    multifield: Optional[MultiFieldConfig] = None
    # Training speed (text models; docs/training.md "Frozen lower layers"): freeze the embeddings
    # and the lower N transformer layers (0: train everything); with cache_frozen their outputs
    # are computed once per distinct training text (exactly the same loss and gradients)
    freeze_layers: int = 0
    cache_frozen: bool = True
    cache_dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # storage of the cached states
    # keep those outputs on disk under $GCL_CACHE_DIR (gcl.hidden_store), shared by later runs, dev
    # evaluation and gcl evaluate of the saved model; false: in memory, this run only
    persist_frozen: bool = True


@dataclass
class FieldPairConfig:
    """An extra loss term between one query field and one document field (multi-field models)."""

    query: str
    doc: str
    weight: float = 1.0


@dataclass
class LossConfig:
    weight_fn: str = "linear"  # constant (binary baseline) | linear | reciprocal_rank | power | exponential | module:function
    weight_params: dict[str, float] = field(default_factory=dict)
    positive_threshold: Optional[float] = None  # train only on pairs with score >= this (thresholded binary baseline)
    temperature: float = 0.05
    learnable_temperature: bool = False
    symmetric: bool = True
    same_query: Literal["mask", "lower", "keep"] = "mask"
    same_doc: Literal["mask", "keep"] = "mask"
    # "hard": the paper's GCL (one softmax per positive pair); "soft": one ListNet-style target
    # distribution per query over all batch columns, p_j ∝ w_j^(1/target_temperature) on the query's
    # judged documents (docs/losses.md "Soft targets"); needs same_query: mask and hard_negatives: 0
    targets: Literal["hard", "soft"] = "hard"
    target_temperature: float = 1.0  # soft targets only: tau_t > 0 (1: proportional to the weights)
    # L = L_GCL + lambda_weight * (|ΔnDCG|-weighted logistic loss on pairs of a query's in-batch
    # documents with s_i > s_j; docs/losses.md "Pairwise term"); 0: off
    lambda_weight: float = 0.0
    # L = L_GCL + cosent_weight * CoSENT over the batch's positive pairs, across queries
    # (docs/losses.md "Cross-query term"); 0: off
    cosent_weight: float = 0.0
    hard_negatives: int = 0  # per query: extra low-scored documents of the same query as negatives
    mined_negatives: int = 0  # per query: documents the current model ranks high but that are not judged for it
    mine_depth: int = 30  # mined from each training query's top mine_skip + mine_depth
    mine_skip: int = 3  # top results skipped (likely unjudged positives)
    mine_every: int = 100  # steps between re-encoding the training documents for mining
    # multi-field models: L = fused_weight * GCL(fused) + sum_t weight_t * GCL(query field_t, doc field_t)
    fused_weight: float = 1.0
    field_pairs: list[FieldPairConfig] = field(default_factory=list)


@dataclass
class BatchConfig:
    batch_size: int = 64  # pairs per optimiser step (global, across processes)
    sampler: Literal["random", "query_grouped"] = "random"
    docs_per_query: int = 4  # query_grouped: documents drawn per query
    group_fraction: float = 1.0  # query_grouped: share of the batch drawn as query groups, the rest random pairs
    grad_cache_chunk: Optional[int] = None  # GradCache: encode in chunks of this many texts
    grad_accum: int = 1  # micro-batches per optimiser step (each with its own in-batch negatives)
    length_buckets: int = 4  # encode each side in this many length-sorted chunks (less padding)


@dataclass
class OptimConfig:
    steps: int = 250
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 25
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    clip_grad_norm: float = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass
class EvalConfig:
    every: int = 0  # dev evaluation every N steps; 0: only at the end; -1: never
    metric: str = "ndcg@10"
    dev_corpus_size: int = 10000  # dev corpus: all documents judged for dev queries + random others
    patience: int = 0  # early stopping after N evaluations without improvement (0: off)
    keep_best: bool = True


@dataclass
class ImagesConfig:
    """Image loading in training (multi-field models with image fields)."""

    root: Optional[str] = None  # image paths are relative to this; default: the data directory (or file's folder)
    workers: int = 0  # DataLoader workers decoding images (per step for trained image towers)
    cache_dir: Optional[str] = None  # on-disk cache of frozen image-backbone features (EmbeddingCache)
    batch_size: int = 32  # images per forward when pre-computing frozen features


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    seed: int = 0
    out_dir: str = "runs/train"
    device: str = "cpu"
    log_every: int = 10
    checkpoint_every: int = 100
    progress: bool = True
    tensorboard: bool = False  # also write metrics to <out_dir>/tensorboard (needs the [tensorboard] extra)

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.batch.batch_size < 2:
            raise ConfigError("batch.batch_size must be at least 2 (in-batch negatives)")
        if self.batch.batch_size % self.batch.grad_accum:
            raise ConfigError("batch.grad_accum must be >= 1 and divide batch.batch_size")
        if any(p.weight < 0 for p in self.loss.field_pairs):
            raise ConfigError("loss.field_pairs weights must be >= 0")
        if any(w < 0 for w in self.model.doc_field_weights.values()):
            raise ConfigError("model.doc_field_weights must be >= 0")
        if self.loss.field_pairs and self.model.multifield is None:
            raise ConfigError("loss.field_pairs needs a multi-field model (model.multifield)")
        check_targets(self.loss)
        if not 0.0 < self.batch.group_fraction <= 1.0:
            raise ConfigError(f"batch.group_fraction must be in (0, 1], got {self.batch.group_fraction}")
        if self.batch.group_fraction != 1.0 and self.batch.sampler != "query_grouped":
            raise ConfigError("batch.group_fraction applies to batch.sampler: query_grouped only; "
                              f"with sampler: {self.batch.sampler} leave it 1")
        if self.eval.metric not in DEV_METRICS:
            raise ConfigError(f"eval.metric {self.eval.metric!r} is not computed by the dev evaluation; "
                              f"choose one of {list(DEV_METRICS)}")


def check_targets(lc: "LossConfig") -> None:
    """ConfigError for ``loss.targets`` combinations that have no meaning."""
    if lc.targets == "hard" and lc.target_temperature != 1.0:
        raise ConfigError("loss.target_temperature applies to loss.targets: soft only; with targets: hard leave it 1")
    if lc.targets == "soft" and lc.same_query != "mask":
        raise ConfigError(f"loss.same_query: {lc.same_query} has no effect with loss.targets: soft (every judged "
                          "document of a query in the batch is a target); leave same_query: mask")
    if lc.targets == "soft" and lc.hard_negatives > 0:
        raise ConfigError("loss.hard_negatives are judged documents of the batch's queries, which soft targets "
                          "would have to give target mass, not treat as negatives; with loss.targets: soft set "
                          "hard_negatives: 0 (batch.sampler: query_grouped puts a query's documents in the batch "
                          "as targets; loss.mined_negatives adds unjudged negatives)")


#: Metrics the dev evaluation computes (:mod:`gcl.training.dev_eval`); ``eval.metric`` is one of them.
DEV_METRICS: tuple[str, ...] = ("ndcg@10", "err", "rbp@0.9", "map@100", "mrr@100")

# Lower bounds checked when a config is loaded: dotted key -> (bound, strict). ``None`` (off) passes.
BOUNDS: dict[str, tuple[float, bool]] = {
    "data.split_seed": (0, False), "seed": (0, False), "model.max_seq_length": (1, False),
    "model.freeze_layers": (0, False),
    "loss.temperature": (0, True), "loss.hard_negatives": (0, False), "loss.mined_negatives": (0, False),
    "loss.target_temperature": (0, True), "loss.lambda_weight": (0, False),
    "loss.cosent_weight": (0, False),
    "loss.mine_depth": (1, False), "loss.mine_skip": (0, False), "loss.mine_every": (1, False),
    "loss.fused_weight": (0, False),
    "batch.docs_per_query": (1, False), "batch.grad_cache_chunk": (1, False), "batch.grad_accum": (1, False),
    "batch.length_buckets": (1, False),
    "optim.steps": (1, False), "optim.lr": (0, False), "optim.weight_decay": (0, False),
    "optim.warmup_steps": (0, False),
    "optim.clip_grad_norm": (0, False),  # 0: no clipping; optim.lr 0 freezes the weights (as AdamW allows)
    "eval.every": (-1, False), "eval.dev_corpus_size": (1, False), "eval.patience": (0, False),
    "images.workers": (0, False), "images.batch_size": (1, False),
    "log_every": (1, False), "checkpoint_every": (1, False),
}


def check_numbers(cfg: "TrainConfig") -> None:
    """Every float in ``cfg`` is finite and every key of :data:`BOUNDS` within its bound."""
    for key, value in _floats(cfg, ""):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
    if not 0.0 <= cfg.data.dev_frac < 1.0:
        raise ConfigError(f"data.dev_frac must be in [0, 1), got {cfg.data.dev_frac}")
    for key, (bound, strict) in BOUNDS.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and (value <= bound if strict else value < bound):
            raise ConfigError(f"{key} must be {'>' if strict else '>='} {bound}, got {value}")


def _floats(obj, key: str):
    """``(dotted key, value)`` for every float inside dataclasses, dicts and lists."""
    if is_dataclass(obj):
        for f in fields(obj):
            yield from _floats(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _floats(v, f"{key}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _floats(v, f"{key}[{i}]")
    elif isinstance(obj, float):
        yield key, obj


# Settings that may differ between a run and its resumption; everything else must match.
RESUME_MUTABLE = {"out_dir", "progress", "tensorboard", "log_every", "checkpoint_every", "device", "eval.every", "optim.steps",
                  "images.root", "images.workers", "images.cache_dir", "images.batch_size",
                  "model.persist_frozen"}
