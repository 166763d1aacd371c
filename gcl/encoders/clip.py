"""CLIP-style towers (text and images in one model), behind optional, lazily imported extras.

* ``hf_clip`` -- a Hugging Face ``CLIPModel`` or ``SiglipModel`` saved in a **local directory**
  (``TowerConfig.model``), loaded with ``local_files_only=True`` (never a download). Text:
  ``get_text_features``; images: ``get_image_features``. Preprocessing comes from the
  directory's ``preprocessor_config.json`` (``image_mean``, ``image_std``, ``size``,
  ``crop_size``), read as JSON: no image-processor class (some need torchvision). SigLIP text is
  padded to ``max_seq_length`` (it was trained that way and pools the last position).
* ``open_clip`` -- ``open_clip.create_model(arch, pretrained=None)`` (``TowerConfig.model`` =
  ``"ViT-B-32"``...), then, when ``checkpoint`` names a local file, its state dict (e.g. Marqo's
  released GCL weights; a ``state_dict`` key and ``module.`` prefixes are accepted). open_clip
  imports torchvision, so this tower exists only when the user installed open_clip
  (``pip install open_clip_torch``); gcl itself never imports torchvision or open_clip otherwise.

Both project to the model's ``dim`` with a linear head per modality when their width differs
(or ``project: true``); ``freeze`` freezes the CLIP model itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gcl.data.images import PreprocessSpec
from gcl.encoders.base import state_fingerprint
from gcl.encoders.config import TowerConfig
from gcl.encoders.towers import PROJECTION_FILE, Tower, identity_linear, load_tensors, save_tensors
from gcl.errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_FILE = "preprocessor_config.json"


def _unwrap(out) -> torch.Tensor:
    """transformers >= 5 returns model outputs from get_*_features; older versions a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


def _heads(native: int, dim: int, project: bool | None) -> nn.ModuleDict | None:
    project = project if project is not None else native != dim
    if not project and native != dim:
        raise ConfigError(f"CLIP tower is {native}-d, the model {dim}-d: set project: true")
    if not project:
        return None
    make = (lambda: identity_linear(dim)) if native == dim else (lambda: nn.Linear(native, dim))
    return nn.ModuleDict({"text": make(), "image": make()})


class _ClipBase(Tower):
    modalities = frozenset({"text", "image"})
    heads: nn.ModuleDict | None

    def _finish(self, dim: int | None, device: str) -> None:
        """End of construction, once ``clip``, ``native`` and ``_spec`` are set: heads, freezing, device."""
        self.dim = dim or self.native
        self.heads = _heads(self.native, self.dim, self.config.project)
        self.apply_freezing()
        self.to(device)

    def backbone_modules(self) -> list[nn.Module]:
        return [self.clip]

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        return self._spec

    def head_modules(self) -> list[nn.Module]:
        return [self.heads] if self.heads is not None else []

    @property
    def image_feature_dim(self) -> int:
        return self.native

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        return self._project(features, self.heads["image"] if self.heads is not None else None)

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[0] == 0:
            return pixels.new_zeros((0, self.dim))
        return self.project_image(self.image_features(pixels))

    def _frozen(self):
        import contextlib

        return torch.no_grad() if self.config.freeze else contextlib.nullcontext()

    def backbone_fingerprint(self) -> str:
        return state_fingerprint(self.clip, repr(self.preprocess_spec))


# ---------------------------------------------------------------------------- Hugging Face
def _preprocess_from_dir(directory: Path, image_size: int) -> PreprocessSpec:
    raw = {}
    if (directory / PREPROCESSOR_FILE).is_file():
        raw = json.loads((directory / PREPROCESSOR_FILE).read_text())

    def side(v, default):
        if isinstance(v, dict):
            return int(v.get("shortest_edge") or v.get("height") or default)
        return int(v) if v else default

    crop = side(raw.get("crop_size"), image_size) if raw.get("do_center_crop", "crop_size" in raw) else None
    size = side(raw.get("size"), image_size)
    crop = crop or size
    return PreprocessSpec(image_size=crop, resize_size=max(size, crop),
                          mean=tuple(raw.get("image_mean", CLIP_MEAN)), std=tuple(raw.get("image_std", CLIP_STD)))


class HFClipTower(_ClipBase):
    """A local Hugging Face CLIP / SigLIP model as a two-modality tower."""

    def __init__(self, config: TowerConfig, dim: int | None, *, source: Path | None = None, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        super().__init__(config, dim or 0)
        path = Path(source or config.model)
        if not path.is_dir():
            raise ConfigError(f"hf_clip tower: {path} is not a local directory (gcl never downloads models)")
        try:
            self.clip = AutoModel.from_pretrained(str(path), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"hf_clip tower: cannot load {path}: {exc}") from exc
        kind = self.clip.config.model_type
        if kind not in ("clip", "siglip"):
            raise ConfigError(f"hf_clip tower: {path} holds a {kind!r} model, not CLIP or SigLIP")
        self.pad_to_max = kind == "siglip"
        cfg = self.clip.config
        self.native = int(cfg.projection_dim if kind == "clip" else cfg.text_config.hidden_size)
        self._spec = _preprocess_from_dir(path, int(cfg.vision_config.image_size))
        self._source = path
        self._finish(dim, device)

    @property
    def max_seq_length(self) -> int:
        limit = int(self.clip.config.text_config.max_position_embeddings)
        return min(int(self.config.max_seq_length), limit)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding="max_length" if self.pad_to_max else True, truncation=True,
                              max_length=self.max_seq_length, return_tensors="pt")

    def embed_text(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = features["input_ids"].to(self.device)
        mask = features.get("attention_mask")
        if self.pad_to_max and ids.shape[1] < self.max_seq_length:  # same inputs in training and inference
            extra = self.max_seq_length - ids.shape[1]
            ids = F.pad(ids, (0, extra), value=self.tokenizer.pad_token_id or 0)
            mask = None if mask is None else F.pad(mask, (0, extra), value=0)
        kw = {"input_ids": ids}
        if mask is not None and not self.pad_to_max:  # SigLIP is used without an attention mask
            kw["attention_mask"] = mask.to(self.device)
        with self._frozen():
            x = _unwrap(self.clip.get_text_features(**kw))
        return self._project(x, self.heads["text"] if self.heads is not None else None)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        with self._frozen():
            return _unwrap(self.clip.get_image_features(pixel_values=pixels.to(self.device)))

    def save(self, directory: Path) -> None:
        hf = directory / "hf"
        self.clip.save_pretrained(str(hf), safe_serialization=True)
        self.tokenizer.save_pretrained(str(hf))
        if (self._source / PREPROCESSOR_FILE).is_file() and self._source.resolve() != hf.resolve():
            shutil.copyfile(self._source / PREPROCESSOR_FILE, hf / PREPROCESSOR_FILE)
        save_tensors(self.heads, directory / PROJECTION_FILE)


# ---------------------------------------------------------------------------- open_clip
def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            "the open_clip tower needs open_clip (and so torchvision): pip install open_clip_torch. "
            "gcl does not install it, since the PyPI torchvision wheel can break other packages"
        ) from exc
    return open_clip


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A local checkpoint's state dict: safetensors, or a torch file holding the dict itself or
    ``{"state_dict": ...}`` (``module.`` prefixes of DDP checkpoints removed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"open_clip checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


class OpenClipTower(_ClipBase):
    """An open_clip model by architecture name, with optional local weights."""

    def __init__(self, config: TowerConfig, dim: int | None, *, checkpoint: Path | None = None,
                 device: str = "cpu") -> None:
        open_clip = _import_open_clip()
        super().__init__(config, dim or 0)
        try:
            self.clip = open_clip.create_model(config.model, pretrained=None)
        except RuntimeError as exc:
            raise ConfigError(f"open_clip tower: unknown architecture {config.model!r}: {exc}") from exc
        ckpt = checkpoint or config.checkpoint
        if ckpt:
            try:
                self.clip.load_state_dict(read_state_dict(ckpt), strict=True)
            except RuntimeError as exc:
                raise ConfigError(f"open_clip checkpoint {ckpt} does not fit {config.model}: {exc}") from exc
        self.tokenizer = open_clip.get_tokenizer(config.model)
        visual = self.clip.visual
        pre = getattr(visual, "preprocess_cfg", {}) or {}
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        self._spec = PreprocessSpec(image_size=int(size), resize_size=int(size),
                                    mean=tuple(pre.get("mean", CLIP_MEAN)), std=tuple(pre.get("std", CLIP_STD)))
        self.native = int(getattr(visual, "output_dim", None) or self.clip.text_projection.shape[1])
        self._finish(dim, device)

    @property
    def max_seq_length(self) -> int:
        return int(getattr(self.clip, "context_length", 77))

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    def make_token_cache(self, texts: list[str]):
        return _FixedTokens(self.tokenize(texts)["input_ids"])

    def embed_text(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._frozen():
            x = self.clip.encode_text(features["input_ids"].to(self.device))
        return self._project(x, self.heads["text"] if self.heads is not None else None)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        with self._frozen():
            return self.clip.encode_image(pixels.to(self.device))

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.clip.state_dict().items()}
        save_file(state, str(directory / "open_clip.safetensors"))
        save_tensors(self.heads, directory / PROJECTION_FILE)


class _FixedTokens:
    """Token cache of fixed-length token ids (open_clip pads every text to its context length)."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def collate(self, codes) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[torch.as_tensor(codes, dtype=torch.long)]}


# ---------------------------------------------------------------------------- factory
def build_clip_tower(config: TowerConfig, dim: int | None, *, device: str = "cpu") -> Tower:
    if config.type == "hf_clip":
        return HFClipTower(config, dim, device=device)
    if config.type == "open_clip":
        return OpenClipTower(config, dim, device=device)
    raise ConfigError(f"not a CLIP tower type: {config.type!r}")


def load_clip_tower(directory: Path, config: TowerConfig, dim: int, *, device: str = "cpu") -> Tower:
    if config.type == "hf_clip":
        tower = HFClipTower(config, dim, source=directory / "hf", device=device)
    elif config.type == "open_clip":
        tower = OpenClipTower(config, dim, checkpoint=directory / "open_clip.safetensors", device=device)
    else:
        raise ConfigError(f"not a CLIP tower type: {config.type!r}")
    load_tensors(tower.heads, directory / PROJECTION_FILE)
    return tower
