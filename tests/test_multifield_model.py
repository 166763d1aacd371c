"""The multi-field model: towers, fusion at inference vs a naive loop, save/load, config errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from multimodal_fixtures import product_dir, tiny_towers
from PIL import Image
from test_fusion import naive_fuse

from gcl.config import from_dict
from gcl.data.errors import ConfigError, DataError
from gcl.encoders.config import FieldConfig, MultiFieldConfig, TowerConfig
from gcl.encoders.base import load_model
from gcl.encoders.multifield import MultiFieldModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(*, freeze_image=True, shared=True, image_root=None, **kw) -> MultiFieldModel:
    towers = tiny_towers(freeze_image=freeze_image)
    if not shared:
        towers["title_text"] = dict(towers["text"])
    raw = {
        "towers": towers,
        "query_fields": [{"name": "query"}],
        "doc_fields": [{"name": "image_local", "tower": "image", "weight": 0.9},
                       {"name": "title", "tower": "text" if shared else "title_text", "weight": 0.1}],
        "image_root": str(image_root) if image_root else None,
        **kw,
    }
    torch.manual_seed(0)
    return MultiFieldModel(from_dict(MultiFieldConfig, raw))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        Image.new("RGB", (40, 30), colour).save(root / f"{i}.png")
    (root / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def model(images):
    return make_model(image_root=images)


DOCS = pd.DataFrame({"title": ["red mug", "", "blue lamp", "green rug", "", "pink vase"],
                     "image_local": ["0.png", "1.png", None, "missing.png", "broken.png", "2.png"]})


def test_encode_documents_is_the_fusion_of_field_embeddings(model, images):
    with pytest.warns(UserWarning, match="1 missing and 1 corrupt"):
        got = model.encode_documents(DOCS)
    f_img, f_title = model.doc_fields
    img, img_present = model.encode_image_field(f_img, DOCS["image_local"].tolist(), root=images)
    title, title_present = model.encode_text_field(f_title, DOCS["title"].tolist())
    assert img_present.tolist() == [True, True, False, False, False, True]
    assert title_present.tolist() == [True, False, True, True, False, True]
    want = naive_fuse([torch.from_numpy(img).double(), torch.from_numpy(title).double()], [0.9, 0.1],
                      [img_present.tolist(), title_present.tolist()])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
    # no image: the title alone; no title: the image alone; neither: the zero vector
    np.testing.assert_allclose(got[2], title[2], atol=1e-6)
    np.testing.assert_allclose(got[1], img[1], atol=1e-6)
    assert not got[4].any()
    # the image field really counts: the same title with another image moves the embedding
    assert np.abs(got[0] - got[5]).max() > 1e-3


def test_save_load_gives_identical_embeddings_and_load_model_dispatches(model, tmp_path):
    q = pd.DataFrame({"query": ["red mug", "lamp", ""]})
    before_q, before_d = model.encode_queries(q), model.encode_documents(DOCS.iloc[:3])
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "gcl_model.json").read_text())
    assert saved["format"] == "multifield" and saved["config"]["dim"] == 32
    assert (tmp_path / "m" / "towers" / "image" / "image_tower.safetensors").is_file()
    assert (tmp_path / "m" / "towers" / "text" / "st" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MultiFieldModel)
    assert np.array_equal(loaded.encode_queries(q), before_q)
    assert np.array_equal(loaded.encode_documents(DOCS.iloc[:3]), before_d)
    assert not before_q[2].any()  # an empty query has no field present


def test_shared_and_separate_towers(images):
    shared = make_model(image_root=images)
    separate = make_model(image_root=images, shared=False)
    assert shared.tower(shared.query_fields[0]) is shared.tower(shared.doc_fields[1])
    assert separate.tower(separate.query_fields[0]) is not separate.tower(separate.doc_fields[1])
    assert len(list(separate.parameters())) > len(list(shared.parameters()))


def test_freezing_rules():
    cfg = MultiFieldConfig(
        towers={"text": TowerConfig(model=tiny_towers()["text"]["model"], freeze=True, project=True),
                "image": TowerConfig(**tiny_towers(freeze_image=True)["image"])},
        doc_fields=[FieldConfig("image_local", "image", weight=0.9), FieldConfig("title", weight=0.1)])
    m = MultiFieldModel(cfg)
    text, image = m.towers["text"], m.towers["image"]
    assert not any(p.requires_grad for p in text.st.parameters())
    assert all(p.requires_grad for p in text.projection.parameters())
    assert torch.equal(text.projection.weight, torch.eye(32))  # square projection starts as identity
    assert not any(p.requires_grad for p in image.image.backbone.parameters())
    assert all(p.requires_grad for p in image.image.projection.parameters())
    m.train()
    assert not text.st.training and not image.image.backbone.training


def test_text_projection_to_another_dim():
    cfg = MultiFieldConfig(towers={"text": TowerConfig(model=tiny_towers()["text"]["model"], project=False)}, dim=24)
    with pytest.raises(ConfigError, match="set project: true"):
        MultiFieldModel(cfg)
    cfg.towers["text"].project = None  # default: project when the widths differ
    m = MultiFieldModel(cfg)
    assert m.towers["text"].projection.weight.shape == (24, 32)
    assert m.encode_queries(pd.DataFrame({"query": ["a b"]})).shape == (1, 24)


@pytest.mark.parametrize("raw, message", [
    ({"doc_fields": [{"name": "title", "tower": "nope"}]}, "names tower 'nope'"),
    ({"doc_fields": [{"name": "title", "tower": "image"}, {"name": "title"}]}, "duplicate document field"),
    ({"doc_fields": [{"name": "title", "tower": "image", "kind": "text"}]}, "does not encode text"),
    ({"doc_fields": [{"name": "title", "weight": -1}]}, "weight must be >= 0"),
    ({"query_fields": []}, "at least one field"),
])
def test_bad_configs_are_config_errors(raw, message):
    base = {"towers": tiny_towers()}
    with pytest.raises(ConfigError, match=message):
        MultiFieldModel(from_dict(MultiFieldConfig, {**base, **raw}))


def test_unknown_config_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(MultiFieldConfig, {"towers": {"text": {"modle": "minilm"}}})


def test_image_paths_may_not_leave_the_root_and_missing_columns_are_named(model):
    with pytest.raises(DataError, match="outside|escape|leave"):
        model.encode_documents(pd.DataFrame({"title": ["x"], "image_local": ["../etc/passwd"]}))
    with pytest.raises(ConfigError, match="--doc-fields image_local,title"):
        model.encode_documents(pd.DataFrame({"title": ["x"]}))


def test_image_root_from_table_attrs_and_bytes_need_no_root(images):
    m = make_model(image_root=None)
    table = DOCS.iloc[[0]].copy()
    with pytest.raises(DataError, match="root"):
        m.encode_documents(table)
    table.attrs["image_root"] = str(images)
    by_path = m.encode_documents(table)
    as_bytes = pd.DataFrame({"title": ["red mug"], "image_local": [(images / "0.png").read_bytes()]})
    np.testing.assert_array_equal(m.encode_documents(as_bytes), by_path)


def test_frozen_image_features_are_cached_on_disk(model, tmp_path):
    docs = pd.read_json(product_dir() / "corpus_1.json", orient="index").iloc[:8]
    docs.attrs["image_root"] = str(product_dir())
    model.image_cache_dir = str(tmp_path / "cache")
    try:
        first = model.encode_documents(docs)
        enc = model.image_features(model.doc_fields[0], docs["image_local"].tolist(), root=product_dir())
        assert enc.stats.cached == 8
        np.testing.assert_array_equal(model.encode_documents(docs), first)
    finally:
        model.image_cache_dir = None


@pytest.mark.parametrize("how", ["chmod", "erofs"])
def test_a_read_only_image_cache_directory_only_warns(model, tmp_path, how, monkeypatch):
    """``images.cache_dir`` on a read-only mount, its namespace not there yet: the documents are
    encoded as without a cache, with a warning (before: the OSError of its mkdir ended the call)."""
    from read_only import read_only

    docs = pd.read_json(product_dir() / "corpus_1.json", orient="index").iloc[:3]
    docs.attrs["image_root"] = str(product_dir())
    plain = model.encode_documents(docs)
    (tmp_path / "ro").mkdir()
    model.image_cache_dir = str(tmp_path / "ro")
    try:
        with read_only(tmp_path / "ro", how, monkeypatch):
            with pytest.warns(UserWarning, match="cannot use the embedding cache at .*ro"):
                got = model.encode_documents(docs)
    finally:
        model.image_cache_dir = None
    np.testing.assert_array_equal(got, plain)
