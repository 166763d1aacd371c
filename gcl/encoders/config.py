"""Model specs (dataclasses only: importing this module is cheap).

* :class:`BiEncoderConfig` -- the text model spec: the one place its defaults live (text model,
  ``max_seq_length``, field lists, fusion weights), shared by the training config
  (``model:`` in YAML extends it), :class:`gcl.encoders.model.BiEncoder`, and so evaluation, the
  index build and the service, which load models through :func:`gcl.encoders.base.load_model`;
* :class:`TowerConfig` -- how to build one tower (text, EfficientNet image, CLIP-style);
* :class:`FieldConfig` -- a named field of a side, the tower that encodes it, its fusion weight;
* :class:`MultiFieldConfig` -- towers by name, the query and document fields, the shared dim.

They fill from YAML through :func:`gcl.config.from_dict` (``model.multifield`` in a training
config); unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from gcl.encoders.text import DEFAULT_TEXT_MODEL
from gcl.errors import ConfigError

TOWER_TYPES = ("text", "efficientnet", "hf_clip", "open_clip")


@dataclass
class BiEncoderConfig:
    """The text model spec: what a saved text model needs besides its tower weights.

    ``text_model``: a sentence-transformers name or directory (``minilm`` = the offline
    all-MiniLM-L6-v2). ``max_seq_length``: token limit, texts are truncated (32: the setting of
    every published figure; ``None`` keeps the tower's own). ``*_field_weights``: fusion weights
    by field name (empty: the defaults of :func:`gcl.fusion.field_weights`).
    """

    text_model: str = DEFAULT_TEXT_MODEL
    query_fields: list[str] = field(default_factory=lambda: ["query"])
    doc_fields: list[str] = field(default_factory=lambda: ["title"])
    query_field_weights: dict[str, float] = field(default_factory=dict)
    doc_field_weights: dict[str, float] = field(default_factory=dict)
    max_seq_length: Optional[int] = 32


@dataclass
class TowerConfig:
    """How to build one tower.

    ``model``: text -- a sentence-transformers name or local directory (``minilm`` = the offline
    default); efficientnet -- the backbone (``efficientnet-lite0``); hf_clip -- a local directory
    of a Hugging Face CLIP or SigLIP model; open_clip -- an open_clip architecture name
    (``ViT-B-32``). ``checkpoint``: open_clip only, a local state-dict file (e.g. Marqo's GCL
    weights). ``pretrained``: efficientnet only -- load the offline ImageNet weights (``False``:
    random init). ``project``: add a linear projection to the shared dim (``None``: only when
    the native width differs; efficientnet always projects). ``image_size`` / ``resize_size`` /
    ``width_coefficient`` / ``depth_coefficient``: efficientnet overrides (random-init only for
    the coefficients; tests use tiny towers).
    """

    type: Literal["text", "efficientnet", "hf_clip", "open_clip"] = "text"
    model: str = DEFAULT_TEXT_MODEL
    checkpoint: Optional[str] = None
    pretrained: bool = True
    freeze: bool = False
    train_projection: bool = True
    project: Optional[bool] = None
    max_seq_length: int = BiEncoderConfig.max_seq_length  # the one default (see BiEncoderConfig)
    image_size: Optional[int] = None
    resize_size: Optional[int] = None
    width_coefficient: Optional[float] = None
    depth_coefficient: Optional[float] = None

    def __post_init__(self) -> None:
        if self.type not in TOWER_TYPES:
            raise ConfigError(f"unknown tower type {self.type!r}; choose one of {list(TOWER_TYPES)}")
        if self.max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be >= 1, got {self.max_seq_length}")

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "tower config") -> "TowerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)



@dataclass
class FieldConfig:
    """One field of a side: its column, the tower that encodes it, its kind and fusion weight.

    ``kind=None`` takes the tower's only modality (a CLIP tower has two: say which).
    """

    name: str
    tower: str = "text"
    kind: Optional[Literal["text", "image"]] = None
    weight: float = 1.0


@dataclass
class MultiFieldConfig:
    """Towers by name and the fields of each side. ``dim=None``: the first text tower's width."""

    towers: dict[str, TowerConfig] = field(default_factory=lambda: {"text": TowerConfig()})
    query_fields: list[FieldConfig] = field(default_factory=lambda: [FieldConfig("query")])
    doc_fields: list[FieldConfig] = field(default_factory=lambda: [FieldConfig("title")])
    dim: Optional[int] = None
    image_root: Optional[str] = None

    def fields(self) -> list[FieldConfig]:
        return [*self.query_fields, *self.doc_fields]

    def kind_of(self, f: FieldConfig) -> str:
        """A field's kind: its own, else its tower's only modality (CLIP-style towers need one)."""
        if f.kind is not None:
            return f.kind
        tower = self.towers.get(f.tower)
        if tower is None:
            raise ConfigError(f"field {f.name!r} names tower {f.tower!r}; towers: {sorted(self.towers)}")
        if tower.type in ("text", "efficientnet"):
            return "text" if tower.type == "text" else "image"
        raise ConfigError(f"field {f.name!r}: tower {f.tower!r} ({tower.type}) encodes text and images; set kind")

