"""CLIP-style towers: Hugging Face CLIP / SigLIP from a local directory (tiny random models built
here, no download) and open_clip (skipped when it is not installed: it needs torchvision;
tests/test_open_clip_stub.py runs it against an open_clip installed aside, with a torchvision stub)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_fusion import naive_fuse

from gcl.config import from_dict
from gcl.data.errors import ConfigError
from gcl.data.images import load_image, preprocess
from gcl.encoders.config import FieldConfig, MultiFieldConfig, TowerConfig
from gcl.encoders.base import load_model
from gcl.encoders.multifield import MultiFieldModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


def _tiny_hf(tmp_path, kind: str):
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    from gcl.encoders.text import minilm_path

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    vision = dict(SMALL, image_size=32, patch_size=8)
    if kind == "clip":
        text = dict(SMALL, vocab_size=tok.vocab_size, max_position_embeddings=32, eos_token_id=tok.sep_token_id,
                    pad_token_id=tok.pad_token_id)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
        pre = {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 36}, "do_center_crop": True,
               "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    else:
        text = dict(SMALL, vocab_size=tok.vocab_size, max_position_embeddings=16, pad_token_id=tok.pad_token_id)
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        pre = {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    d = tmp_path / f"tiny-{kind}"
    model.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    (d / "preprocessor_config.json").write_text(json.dumps(pre))
    return d, model.eval(), tok


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-img")
    for i, c in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (48, 40), c).save(root / f"{i}.png")
    return root


def clip_model(path, *, freeze=False, dim=None, image_root=None) -> MultiFieldModel:
    return MultiFieldModel(from_dict(MultiFieldConfig, {
        "towers": {"clip": {"type": "hf_clip", "model": str(path), "freeze": freeze, "max_seq_length": 16}},
        "query_fields": [{"name": "query", "tower": "clip", "kind": "text"}],
        "doc_fields": [{"name": "image", "tower": "clip", "kind": "image", "weight": 0.9},
                       {"name": "title", "tower": "clip", "kind": "text", "weight": 0.1}],
        "dim": dim, "image_root": str(image_root) if image_root else None,
    }))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_tower_equals_the_transformers_model_fused_by_hand(tmp_path, images, kind):
    path, ref, tok = _tiny_hf(tmp_path, kind)
    m = clip_model(path, dim=16 if kind == "clip" else 32, image_root=images)
    docs = pd.DataFrame({"title": ["red mug", "green lamp"], "image": ["0.png", "1.png"]})
    got = m.encode_documents(docs)
    spec = m.towers["clip"].preprocess_spec
    assert spec.image_size == 32 and spec.mean[0] == pytest.approx(0.48145466 if kind == "clip" else 0.5)
    pixels = preprocess([load_image(v, root=images) for v in docs["image"]], spec)
    pad = "max_length" if kind == "siglip" else True
    t = tok(docs["title"].tolist(), padding=pad, max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        kw = {"input_ids": t["input_ids"]} if kind == "siglip" else dict(t)
        kw.pop("token_type_ids", None)
        text = ref.get_text_features(**kw)
        img = ref.get_image_features(pixel_values=pixels)
    text = text if torch.is_tensor(text) else text.pooler_output
    img = img if torch.is_tensor(img) else img.pooler_output
    want = naive_fuse([img.double(), text.double()], [0.9, 0.1], None)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    # training features (token cache, padded per batch) give the same text embeddings
    tower = m.towers["clip"]
    cache = tower.make_token_cache(docs["title"].tolist())
    with torch.no_grad():
        via_cache = tower.embed_text(cache.collate(np.array([0, 1])))
    np.testing.assert_allclose(via_cache.numpy(), torch.nn.functional.normalize(text, dim=-1).numpy(), atol=1e-5)


def test_hf_tower_projects_saves_loads_and_trains(tmp_path, images):
    path, _, _ = _tiny_hf(tmp_path, "clip")
    m = clip_model(path, dim=24, image_root=images)
    assert m.towers["clip"].heads["text"].weight.shape == (24, 16)
    docs = pd.DataFrame({"title": ["red mug", ""], "image": ["0.png", "1.png"]})
    q = pd.DataFrame({"query": ["mug", "lamp"]})
    before_d, before_q = m.encode_documents(docs), m.encode_queries(q)
    m.save(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.encode_documents(docs), before_d)
    np.testing.assert_array_equal(loaded.encode_queries(q), before_q)
    # one optimiser step through both modalities changes the CLIP weights
    from gcl.losses import GCLLoss

    tower = loaded.towers["clip"]
    tower.train()
    pix = preprocess([load_image(v, root=images) for v in docs["image"]], tower.preprocess_spec)
    qe = tower.embed_text(tower.tokenize(q["query"].tolist()))
    de = tower.embed_image(pix)
    GCLLoss(temperature=0.1)(qe, de, torch.ones(2)).backward()
    assert tower.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert tower.clip.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0


def test_hf_tower_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a local directory"):
        MultiFieldModel(MultiFieldConfig(towers={"clip": TowerConfig(type="hf_clip", model="openai/clip-vit-base-patch32")},
                                         query_fields=[FieldConfig("query", "clip", "text")],
                                         doc_fields=[FieldConfig("title", "clip", "text")], dim=16))
    cfg = {"towers": {"clip": {"type": "hf_clip", "model": str(tmp_path)}}, "doc_fields": [{"name": "title", "tower": "clip"}],
           "query_fields": [{"name": "query", "tower": "clip", "kind": "text"}]}
    with pytest.raises(ConfigError, match="encodes text and images; set kind"):
        MultiFieldModel(from_dict(MultiFieldConfig, cfg))


def test_gcl_never_imports_torchvision_or_open_clip():
    code = ("import sys, gcl.encoders.clip, gcl.encoders.multifield, gcl.training.trainer, gcl.cli.main; "
            "bad = [m for m in ('torchvision', 'open_clip', 'timm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="open_clip is installed")
def test_open_clip_tower_without_open_clip_is_a_config_error():
    cfg = MultiFieldConfig(towers={"clip": TowerConfig(type="open_clip", model="ViT-B-32")}, dim=512,
                           query_fields=[FieldConfig("query", "clip", "text")], doc_fields=[FieldConfig("image", "clip", "image")])
    with pytest.raises(ConfigError, match="pip install open_clip_torch"):
        MultiFieldModel(cfg)


def test_open_clip_tower_from_name_and_local_checkpoint(tmp_path, images):
    # needs torchvision: not installed in the dev environment; see tests/test_open_clip_stub.py
    open_clip = pytest.importorskip("open_clip")
    from open_clip import factory

    factory._MODEL_CONFIGS["gcl-tiny-clip"] = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    ref = open_clip.create_model("gcl-tiny-clip", pretrained=None).eval()
    ckpt = tmp_path / "marqo-like.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, ckpt)

    def model(dim=None) -> MultiFieldModel:
        return MultiFieldModel(from_dict(MultiFieldConfig, {
            "towers": {"clip": {"type": "open_clip", "model": "gcl-tiny-clip", "checkpoint": str(ckpt)}},
            "query_fields": [{"name": "query", "tower": "clip", "kind": "text"}],
            "doc_fields": [{"name": "image", "tower": "clip", "kind": "image", "weight": 0.9},
                           {"name": "title", "tower": "clip", "kind": "text", "weight": 0.1}],
            "dim": dim, "image_root": str(images)}))

    m = model()
    tower = m.towers["clip"]
    assert tower.dim == 16 and tower.heads is None and tower.max_seq_length == 16
    spec = tower.preprocess_spec
    assert (spec.image_size, spec.resize_size) == (32, 32) and spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    # the checkpoint's weights were loaded (a fresh model with another seed differs)
    torch.manual_seed(1)
    assert not torch.equal(open_clip.create_model("gcl-tiny-clip", pretrained=None).visual.conv1.weight,
                           tower.clip.visual.conv1.weight)
    assert torch.equal(ref.visual.conv1.weight, tower.clip.visual.conv1.weight)

    queries = pd.DataFrame({"query": ["red mug", "a green lamp for the desk"]})
    docs = pd.DataFrame({"title": ["red mug", "green lamp"], "image": ["0.png", "1.png"]})
    tok = open_clip.get_tokenizer("gcl-tiny-clip")
    pixels = preprocess([load_image(v, root=images) for v in docs["image"]], spec)  # gcl's pixels
    with torch.no_grad():
        q_want = torch.nn.functional.normalize(ref.encode_text(tok(queries["query"].tolist())), dim=-1)
        title = ref.encode_text(tok(docs["title"].tolist()))
        img = ref.encode_image(pixels)
    np.testing.assert_allclose(m.encode_queries(queries), q_want.numpy(), atol=1e-5)
    d_want = naive_fuse([img.double(), title.double()], [0.9, 0.1], None)
    np.testing.assert_allclose(m.encode_documents(docs), d_want.numpy(), atol=1e-5)
    # training features (the fixed-length token cache) give the same text embeddings
    with torch.no_grad():
        via_cache = tower.embed_text(tower.make_token_cache(queries["query"].tolist()).collate(np.array([1, 0])))
    np.testing.assert_allclose(via_cache.numpy(), q_want.numpy()[[1, 0]], atol=1e-5)

    # saved and loaded (weights in open_clip.safetensors), also with projection heads
    for dim in (None, 24):
        m = model(dim)
        if dim:
            assert m.towers["clip"].heads["text"].weight.shape == (24, 16)
        m.save(tmp_path / f"saved-{dim}")
        loaded = load_model(tmp_path / f"saved-{dim}")
        assert any((tmp_path / f"saved-{dim}").rglob("open_clip.safetensors"))
        np.testing.assert_array_equal(loaded.encode_documents(docs), m.encode_documents(docs))
        np.testing.assert_array_equal(loaded.encode_queries(queries), m.encode_queries(queries))

    # one optimiser step through both modalities reaches the open_clip weights
    from gcl.losses import GCLLoss

    tower.train()
    qe = tower.embed_text(tower.tokenize(queries["query"].tolist()))
    de = tower.embed_image(pixels)
    GCLLoss(temperature=0.1)(qe, de, torch.ones(2)).backward()
    assert tower.clip.visual.conv1.weight.grad.abs().sum() > 0
    assert tower.clip.token_embedding.weight.grad.abs().sum() > 0
