"""Towers of a multi-field model: one encoder each, projected to the model's shared dimension.

A tower turns one modality into L2-normalised ``(n, dim)`` embeddings; several fields may share
one tower (e.g. ``query`` and ``title`` through the same text tower). Every tower has the same
small interface, whatever it wraps:

* ``modalities``: ``{"text"}``, ``{"image"}`` or both (CLIP-style towers);
* text: ``tokenizer`` / ``max_seq_length`` and ``embed_text(features) -> (n, dim)``;
* image: ``preprocess_spec`` and ``embed_image(pixels) -> (n, dim)``, split into
  ``image_features(pixels)`` (the backbone) and ``project_image(features)`` (the trainable head),
  so the backbone's features can be cached when it is frozen (``image_frozen``);
* ``save(directory)`` and, through :func:`load_tower`, an exact reload.

Towers built here (``TowerConfig.type``):

* ``text`` -- a sentence-transformers / Hugging Face model by name or local path (default the
  offline MiniLM), plus an optional linear projection (identity-initialised when square);
* ``efficientnet`` -- :class:`gcl.encoders.image.ImageTower` (offline ImageNet EfficientNet-Lite0
  + a linear projection to ``dim``);
* ``hf_clip`` / ``open_clip`` -- CLIP-style towers (both modalities), see :mod:`gcl.encoders.clip`.

``freeze`` freezes a tower's backbone (no gradient, BatchNorm/dropout in eval mode); its
projection still trains unless ``train_projection=False``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gcl.encoders.base import state_fingerprint
from gcl.encoders.config import TowerConfig
from gcl.errors import ConfigError

TOWER_CONFIG_FILE = "tower.json"
PROJECTION_FILE = "projection.safetensors"


def identity_linear(dim: int) -> nn.Linear:
    lin = nn.Linear(dim, dim)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(dim))
        lin.bias.zero_()
    return lin


def save_tensors(module: nn.Module | None, path: Path) -> None:
    if module is None:
        return
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def load_tensors(module: nn.Module | None, path: Path) -> None:
    if module is None:
        return
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path} missing: the saved tower is incomplete")
    module.load_state_dict(load_file(str(path)), strict=True)


class Tower(nn.Module):
    """Base: freezing rules shared by every tower (see the module docstring)."""

    modalities: frozenset[str] = frozenset()

    def __init__(self, config: TowerConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        self.dim = int(dim)

    # subclasses name their frozen backbone and their heads
    def backbone_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def head_modules(self) -> list[nn.Module]:
        return []

    def apply_freezing(self) -> None:
        for m in self.backbone_modules():
            for p in m.parameters():
                p.requires_grad_(not self.config.freeze)
        for m in self.head_modules():
            for p in m.parameters():
                p.requires_grad_(self.config.train_projection)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Tower":
        super().train(mode)
        if self.config.freeze:
            for m in self.backbone_modules():
                m.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def image_frozen(self) -> bool:
        """True when image features do not change in training (cacheable)."""
        return "image" in self.modalities and self.config.freeze

    def make_token_cache(self, texts: list[str]):
        """Texts tokenised once for training (``collate(codes)`` -> features of ``embed_text``)."""
        from gcl.training.batching import TokenCache

        return TokenCache(self.tokenizer, texts, self.max_seq_length)

    def _project(self, x: torch.Tensor, projection: nn.Module | None) -> torch.Tensor:
        if projection is not None:
            x = projection(x)
        return F.normalize(x, dim=-1)

    def save(self, directory: Path) -> None:
        raise NotImplementedError


class TextTower(Tower):
    """A sentence-transformers model (+ optional linear projection): texts -> (n, dim) unit vectors."""

    modalities = frozenset({"text"})

    def __init__(self, config: TowerConfig, dim: int | None, *, st=None, device: str = "cpu") -> None:
        from gcl.encoders.text import load_sentence_transformer

        st = st if st is not None else load_sentence_transformer(config.model, device=device)
        st.max_seq_length = config.max_seq_length
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        native = int(getter())
        dim = native if dim is None else dim
        super().__init__(config, dim)
        self.st = st
        project = config.project if config.project is not None else native != dim
        if not project and native != dim:
            raise ConfigError(f"text tower {config.model!r} is {native}-d, the model is {dim}-d: set project: true")
        self.projection = (identity_linear(dim) if native == dim else nn.Linear(native, dim)) if project else None
        self.apply_freezing()

    def backbone_modules(self) -> list[nn.Module]:
        return [self.st]

    def head_modules(self) -> list[nn.Module]:
        return [self.projection] if self.projection is not None else []

    @property
    def tokenizer(self):
        return self.st.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.config.max_seq_length)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        prep = getattr(self.st, "preprocess", None) or self.st.tokenize
        return prep(list(texts))

    def embed_text(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised features -> (n, dim) L2-normalised (graph unless frozen)."""
        features = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in features.items()}
        with torch.no_grad() if self.config.freeze else contextlib.nullcontext():
            x = self.st(features)["sentence_embedding"]
        return self._project(x, self.projection)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.st.save(str(directory / "st"), safe_serialization=True)
        save_tensors(self.projection, directory / PROJECTION_FILE)

    @classmethod
    def load_saved(cls, directory: Path, config: TowerConfig, dim: int, *, device: str = "cpu") -> "TextTower":
        from gcl.encoders.text import load_sentence_transformer

        st = load_sentence_transformer(str(directory / "st"), device=device)
        tower = cls(config, dim, st=st, device=device)
        load_tensors(tower.projection, directory / PROJECTION_FILE)
        return tower


class EfficientNetTower(Tower):
    """:class:`~gcl.encoders.image.ImageTower` behind the tower interface (pixels -> (n, dim))."""

    modalities = frozenset({"image"})

    def __init__(self, config: TowerConfig, dim: int, *, image=None) -> None:
        from gcl.encoders.image import ImageTower, ImageTowerConfig

        super().__init__(config, dim)
        if image is None:
            kw = {k: getattr(config, k) for k in ("image_size", "resize_size", "width_coefficient", "depth_coefficient")
                  if getattr(config, k) is not None}
            if "image_size" in kw and "resize_size" not in kw:
                kw["resize_size"] = kw["image_size"] + max(1, kw["image_size"] // 7)  # 224 -> 256
            icfg = ImageTowerConfig(backbone=config.model if config.model != "minilm" else "efficientnet-lite0",
                                    out_dim=dim, freeze_backbone=config.freeze, **kw)
            image = ImageTower(icfg, pretrained=config.pretrained)
        self.image = image
        self.apply_freezing()

    def backbone_modules(self) -> list[nn.Module]:
        return [self.image.backbone]

    def head_modules(self) -> list[nn.Module]:
        return [self.image.projection]

    @property
    def preprocess_spec(self):
        return self.image.preprocess_spec

    @property
    def image_feature_dim(self) -> int:
        from gcl.encoders.image import FEATURE_DIM

        return FEATURE_DIM

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image.features(pixels)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        return self._project(features, self.image.projection)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[0] == 0:
            return pixels.new_zeros((0, self.dim))
        return self.project_image(self.image_features(pixels))

    def backbone_fingerprint(self) -> str:
        """sha1 of preprocessing and backbone weights/buffers: the namespace of cached features."""
        return state_fingerprint(self.image.backbone, repr(self.preprocess_spec))

    def save(self, directory: Path) -> None:
        self.image.save(directory)

    @classmethod
    def load_saved(cls, directory: Path, config: TowerConfig, dim: int, *, device: str = "cpu") -> "EfficientNetTower":
        from gcl.encoders.image import ImageTower

        image = ImageTower.load(directory, device=device)
        image.set_backbone_frozen(config.freeze)
        return cls(config, dim, image=image)
