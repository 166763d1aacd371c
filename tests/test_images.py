"""Image loading (root confinement, corrupt and missing files), preprocessing, encoding, cache."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gcl.data.errors import DataError
from gcl.data.images import (
    LITE_MEAN,
    LITE_STD,
    CorruptImageError,
    EmbeddingCache,
    ImageDataset,
    PreprocessSpec,
    encode_images,
    image_key,
    load_image,
    preprocess,
    resolve_image_path,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_shape(path: Path, colour: tuple[int, int, int], *, size=(48, 40), fmt: str | None = None) -> Path:
    img = Image.new("RGB", size, (250, 250, 250))
    ImageDraw.Draw(img).ellipse((8, 6, size[0] - 8, size[1] - 6), fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def png_bytes(colour: tuple[int, int, int], size=(40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """root/ with a PNG, a JPEG, a nested PNG, a non-image, a truncated JPEG; a PNG outside root/."""
    root = tmp_path / "root"
    save_shape(root / "red.png", (220, 30, 30))
    save_shape(root / "blue.jpg", (30, 30, 220), fmt="JPEG")
    save_shape(root / "sub" / "green.png", (30, 200, 30))
    (root / "broken.png").write_bytes(b"this is not an image")
    full = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(full, format="JPEG")
    (root / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    save_shape(tmp_path / "outside.png", (0, 0, 0))
    return root


@pytest.fixture
def tiny_tower():
    pytest.importorskip("efficientnet_lite_pytorch")
    from gcl.encoders.image import ImageTower, ImageTowerConfig

    torch.manual_seed(0)
    return ImageTower(ImageTowerConfig.tiny(freeze_backbone=True), pretrained=False).eval()


# ---------------------------------------------------------------------------- loading and confinement
def test_load_png_jpeg_bytes_and_empty(image_root: Path) -> None:
    red = load_image("red.png", root=image_root)
    assert red.mode == "RGB" and red.size == (48, 40)
    assert red.getpixel((24, 20)) == (220, 30, 30)
    blue = load_image(Path("blue.jpg"), root=image_root)
    r, g, b = blue.getpixel((24, 20))
    assert b > 180 and r < 80  # JPEG is lossy
    assert load_image("sub/green.png", root=image_root).getpixel((24, 20)) == (30, 200, 30)
    assert load_image("sub/../red.png", root=image_root).getpixel((24, 20)) == (220, 30, 30)
    assert load_image(png_bytes((1, 2, 3)), root=None).getpixel((0, 0)) == (1, 2, 3)
    for empty in (None, "", "  ", float("nan")):
        assert load_image(empty, root=image_root) is None
    assert load_image("no/such.png", root=image_root) is None  # missing file: None, not an error


def test_transparency_grey_and_exif_rotation(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    img = load_image(buf.getvalue(), root=None)
    assert img.getpixel((1, 1)) == (255, 255, 255)  # transparent -> white, not the hidden red
    assert img.getpixel((0, 0)) == (0, 0, 255)
    grey = io.BytesIO()
    Image.new("L", (3, 3), 77).save(grey, format="PNG")
    assert load_image(grey.getvalue(), root=None).getpixel((1, 1)) == (77, 77, 77)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = io.BytesIO()
    Image.new("RGB", (30, 10), (200, 200, 200)).save(rotated, format="JPEG", exif=exif)
    assert load_image(rotated.getvalue(), root=None).size == (10, 30)


@pytest.mark.parametrize("bad", [b"this is not an image", b""])
def test_corrupt_bytes_raise(bad: bytes) -> None:
    with pytest.raises(CorruptImageError, match="cannot decode"):
        load_image(bad, root=None)


def test_corrupt_files_raise(image_root: Path) -> None:
    for name in ("broken.png", "truncated.jpg"):
        with pytest.raises(CorruptImageError, match=name):
            load_image(name, root=image_root)
    assert issubclass(CorruptImageError, DataError)


def test_paths_escaping_the_root_are_refused(image_root: Path) -> None:
    outside = image_root.parent / "outside.png"
    assert outside.is_file()
    (image_root / "link_out.png").symlink_to(outside)
    (image_root / "dir_out").symlink_to(image_root.parent, target_is_directory=True)
    (image_root / "link_in.png").symlink_to(image_root / "red.png")
    for bad in ("../outside.png", "sub/../../outside.png", str(outside), str(image_root / "red.png"),
                "link_out.png", "dir_out/outside.png", "/etc/passwd", "red\x00.png"):
        with pytest.raises(DataError):
            load_image(bad, root=image_root)
    with pytest.raises(DataError, match="outside the image root"):
        resolve_image_path("link_out.png", image_root)
    with pytest.raises(DataError, match="absolute"):
        resolve_image_path(str(outside), image_root)
    with pytest.raises(DataError, match="no image root"):
        load_image("red.png", root=None)
    with pytest.raises(DataError, match="relative path, bytes or None"):
        load_image(12, root=image_root)
    assert load_image("link_in.png", root=image_root).getpixel((24, 20)) == (220, 30, 30)


def test_dataset_refuses_escaping_path_naming_the_row(image_root: Path) -> None:
    with pytest.raises(DataError, match="row 1"):
        ImageDataset(["red.png", "../outside.png"], root=image_root, spec=PreprocessSpec())


# ---------------------------------------------------------------------------- preprocessing
def test_preprocess_crop_and_normalisation_by_hand() -> None:
    # 6 x 4 image whose shorter side already equals resize_size: no resize, only the center crop.
    pixels = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2
    img = Image.fromarray(pixels, "RGB")
    spec = PreprocessSpec(image_size=2, resize_size=4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    out = preprocess([img], spec)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    top, left = 1, 2  # round((4 - 2) / 2), round((6 - 2) / 2)
    for c in range(3):
        for y in range(2):
            for x in range(2):
                want = (pixels[top + y, left + x, c] / 255.0 - spec.mean[c]) / spec.std[c]
                assert out[0, c, y, x].item() == pytest.approx(want, abs=1e-6)


def test_preprocess_resizes_shorter_side_and_uses_lite_constants() -> None:
    spec = PreprocessSpec()
    assert (spec.image_size, spec.resize_size) == (224, 256)
    assert spec.mean == (127 / 255,) * 3 and spec.std == (128 / 255,) * 3
    wide = Image.new("RGB", (640, 320), (200, 100, 0))  # -> 512 x 256 -> 224 x 224
    tall = Image.new("RGB", (100, 300), (200, 100, 0))  # upscaled: 256 x 768 -> 224 x 224
    out = preprocess([wide, tall], spec)
    assert out.shape == (2, 3, 224, 224)
    for c, v in enumerate((200, 100, 0)):  # constant colour survives bicubic resizing exactly
        torch.testing.assert_close(out[:, c], torch.full((2, 224, 224), (v - 127) / 128), rtol=0, atol=1e-6)
    assert preprocess([], spec).shape == (0, 3, 224, 224)


def test_center_crop_keeps_the_middle() -> None:
    img = Image.new("RGB", (30, 10), (255, 0, 0))  # red | green | blue thirds
    img.paste((0, 255, 0), (10, 0, 20, 10))
    img.paste((0, 0, 255), (20, 0, 30, 10))
    out = preprocess([img], PreprocessSpec(image_size=10, resize_size=10, mean=(0, 0, 0), std=(1, 1, 1)))
    torch.testing.assert_close(out[0, 1], torch.ones(10, 10))  # only the green third is left
    assert out[0, 0].abs().max() == 0 and out[0, 2].abs().max() == 0


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        PreprocessSpec(image_size=300, resize_size=256)
    with pytest.raises(ValueError):
        PreprocessSpec(std=(1.0, 0.0, 1.0))


# ---------------------------------------------------------------------------- encoding
def test_encode_counts_and_skips_bad_images_with_one_warning(image_root: Path, tiny_tower) -> None:
    values = ["red.png", "broken.png", None, "blue.jpg", "missing.png", "truncated.jpg", png_bytes((9, 9, 9)), ""]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb, present, stats = encode_images(tiny_tower, values, root=image_root, batch_size=3)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "1 missing and 2 corrupt" in msg and "missing.png" in msg and "broken.png" in msg
    assert (stats.loaded, stats.empty, stats.missing, stats.corrupt, stats.cached) == (3, 2, 1, 2, 0)
    assert present.tolist() == [True, False, False, True, False, False, True, False]
    assert emb.shape == (8, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[present], axis=1), 1.0, rtol=1e-5)
    assert not emb[~present].any()
    # the same images encoded directly give the same rows
    imgs = [load_image(v, root=image_root) for v in ("red.png", "blue.jpg")]
    with torch.no_grad():
        direct = tiny_tower(preprocess(imgs, tiny_tower.preprocess_spec)).numpy()
    np.testing.assert_allclose(emb[[0, 3]], direct, rtol=0, atol=1e-6)


def test_encode_without_problems_does_not_warn(image_root: Path, tiny_tower) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, present, stats = encode_images(tiny_tower, ["red.png", None], root=image_root)
    assert present.tolist() == [True, False] and stats.empty == 1


def test_dataloader_workers_match_single_process(image_root: Path, tiny_tower) -> None:
    values = ["red.png", "blue.jpg", "sub/green.png", "broken.png", None, "missing.png", png_bytes((5, 6, 7))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = encode_images(tiny_tower, values, root=image_root, batch_size=4, num_workers=0)
        multi = encode_images(tiny_tower, values, root=image_root, batch_size=4, num_workers=2)
    np.testing.assert_array_equal(single.embeddings, multi.embeddings)
    np.testing.assert_array_equal(single.present, multi.present)
    assert single.stats == multi.stats


def test_cache_hit_avoids_recomputation(image_root: Path, tiny_tower, tmp_path: Path) -> None:
    calls: list[int] = []
    tiny_tower.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    values = ["red.png", "blue.jpg", png_bytes((1, 2, 3)), None]
    cache = EmbeddingCache(tmp_path / "cache", namespace=tiny_tower.fingerprint())
    first = encode_images(tiny_tower, values, root=image_root, cache=cache)
    assert sum(calls) == 3 and len(cache) == 3 and first.stats.cached == 0
    calls.clear()
    again = EmbeddingCache(tmp_path / "cache", namespace=tiny_tower.fingerprint())  # reopened from disk
    second = encode_images(tiny_tower, values + ["sub/green.png"], root=image_root, cache=again)
    assert sum(calls) == 1  # only the new image reaches the tower
    assert second.stats.cached == 3 and second.stats.loaded == 4
    np.testing.assert_array_equal(second.embeddings[:4], first.embeddings)
    assert len(again) == 4
    # the cache is keyed by content: the same bytes under another path hit
    (image_root / "copy.png").write_bytes((image_root / "red.png").read_bytes())
    assert image_key("copy.png", root=image_root) == image_key("red.png", root=image_root)
    calls.clear()
    third = encode_images(tiny_tower, ["copy.png"], root=image_root, cache=again)
    assert calls == [] and third.stats.cached == 1
    # a changed tower has another fingerprint, hence another namespace: nothing stale is read
    with torch.no_grad():
        tiny_tower.projection.bias.add_(0.5)
    other = EmbeddingCache(tmp_path / "cache", namespace=tiny_tower.fingerprint())
    assert len(other) == 0
    assert sorted(os.listdir(tmp_path / "cache")) == sorted({again.path.name, other.path.name})


def test_cache_put_get_and_errors(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, namespace="abc")
    cache.put(["a", "b"], np.eye(2, 3, dtype=np.float32))
    cache.put(["b", "c"], np.full((2, 3), 7.0))  # "b" is kept as first stored
    got = cache.get(["a", "b", "c", "zz"])
    assert set(got) == {"a", "b", "c"}
    np.testing.assert_array_equal(got["b"], [0, 1, 0])
    np.testing.assert_array_equal(got["c"], [7, 7, 7])
    with pytest.raises(ValueError, match="3-d"):
        cache.put(["d"], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="namespace"):
        EmbeddingCache(tmp_path, namespace="../escape")


@pytest.mark.parametrize("how", ["chmod", "erofs"])
def test_a_read_only_cache_is_read_and_a_failed_write_only_warns(image_root: Path, tiny_tower, tmp_path: Path,
                                                                 how, monkeypatch) -> None:
    """The cache directory on a read-only mount: cached images are served, the new one is encoded
    and its write only warned about (before: the OSError of the write ended the encoding)."""
    from read_only import read_only

    cache_dir = tmp_path / "cache"
    EmbeddingCache(cache_dir, namespace=tiny_tower.fingerprint()).put(
        [image_key("red.png", root=image_root)], encode_images(tiny_tower, ["red.png"], root=image_root).embeddings)
    values = ["red.png", "blue.jpg"]
    plain = encode_images(tiny_tower, values, root=image_root)
    with read_only(cache_dir, how, monkeypatch):
        cache = EmbeddingCache(cache_dir, namespace=tiny_tower.fingerprint())
        with pytest.warns(UserWarning, match="could not write the embedding cache at "):
            got = encode_images(tiny_tower, values, root=image_root, cache=cache)
    assert got.stats.cached == 1
    np.testing.assert_allclose(got.embeddings, plain.embeddings, rtol=0, atol=1e-6)
