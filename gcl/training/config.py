"""Training configuration: dataclasses filled from YAML (see ``configs/``) and CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from gcl.data.errors import ConfigError
from gcl.data.schema import Field, FieldKind
from gcl.encoders.config import MultiFieldConfig


@dataclass
class DataConfig:
    source: str = "homedepot"  # homedepot | synthetic | a Marqo-GS directory | a CSV/JSONL/Parquet file
    data_dir: Optional[str] = None  # default: $GCL_DATA_DIR or ../shared/data
    split_seed: int = 0
    query_col: str = "query"  # column mapping for generic files
    doc_id_col: str = "doc_id"
    score_col: str = "score"
    # document fields read from the source; a name starting with "image" is an image field (as in
    # the Marqo-GS layout), so a Parquet column of image bytes is read as images, not as text
    doc_fields: list[Union[str, Field]] = field(default_factory=lambda: ["title"])

    def __post_init__(self) -> None:
        self.doc_fields = [
            Field(f, FieldKind.IMAGE) if isinstance(f, str) and f.startswith("image") else f for f in self.doc_fields
        ]


@dataclass
class ModelConfig:
    text_model: str = "minilm"
    max_seq_length: int = 32
    query_fields: list[str] = field(default_factory=lambda: ["query"])
    doc_fields: list[str] = field(default_factory=lambda: ["title"])
    doc_field_weights: dict[str, float] = field(default_factory=dict)
    # A multi-field model (text and image towers, per-side fields with fusion weights; see
    # docs/multimodal.md). When set, text_model/max_seq_length/*_fields above are not used.
    multifield: Optional[MultiFieldConfig] = None


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
    temperature: float = 0.05
    learnable_temperature: bool = False
    symmetric: bool = True
    same_query: Literal["mask", "lower", "keep"] = "mask"
    same_doc: Literal["mask", "keep"] = "mask"
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
        if self.batch.batch_size < 2:
            raise ConfigError("batch.batch_size must be at least 2 (in-batch negatives)")
        if self.batch.grad_accum < 1 or self.batch.batch_size % self.batch.grad_accum:
            raise ConfigError("batch.grad_accum must be >= 1 and divide batch.batch_size")
        if self.optim.steps < 1:
            raise ConfigError("optim.steps must be >= 1")
        if self.loss.temperature <= 0:
            raise ConfigError("loss.temperature must be > 0")
        if self.loss.fused_weight < 0 or any(p.weight < 0 for p in self.loss.field_pairs):
            raise ConfigError("loss.fused_weight and loss.field_pairs weights must be >= 0")
        if self.loss.field_pairs and self.model.multifield is None:
            raise ConfigError("loss.field_pairs needs a multi-field model (model.multifield)")
        if self.images.workers < 0 or self.images.batch_size < 1:
            raise ConfigError("images.workers must be >= 0 and images.batch_size >= 1")


# Settings that may differ between a run and its resumption; everything else must match.
RESUME_MUTABLE = {"out_dir", "progress", "tensorboard", "log_every", "checkpoint_every", "device", "eval.every", "optim.steps",
                  "images.root", "images.workers", "images.cache_dir", "images.batch_size"}
