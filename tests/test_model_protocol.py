"""The one model protocol and its loader: both kinds implement EmbeddingModel, load_model picks
the class from gcl_model.json, BiEncoder.load refuses a multi-field directory, an image tower
saved beside a text model (the older layout) still gives it image search, fingerprints track
weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest_trainer import tiny_model
from multimodal_fixtures import tiny_towers
from PIL import Image

from gcl.config import from_dict
from gcl.encoders.base import MODEL_CONFIG_FILE, EmbeddingModel, load_model, query_table
from gcl.encoders.config import MultiFieldConfig
from gcl.encoders.model import BiEncoder
from gcl.encoders.multifield import MultiFieldModel
from gcl.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buf, format="PNG")
    return buf.getvalue()


def multifield() -> MultiFieldModel:
    cfg = from_dict(MultiFieldConfig, {"towers": tiny_towers(), "query_fields": [{"name": "query"}],
                                       "doc_fields": [{"name": "image", "tower": "image", "weight": 0.9},
                                                      {"name": "title", "weight": 0.1}]})
    return MultiFieldModel(cfg)


def test_both_kinds_implement_the_protocol_and_load_model_picks_the_class(tmp_path):
    text = BiEncoder.load(str(tiny_model(0.0)))
    mf = multifield()
    for model in (text, mf):
        assert isinstance(model, EmbeddingModel)
    assert (text.query_field_names, text.doc_field_names, text.field_kinds("doc")) == (["query"], ["title"],
                                                                                       {"title": "text"})
    assert mf.field_kinds("doc") == {"image": "image", "title": "text"} and mf.image_search and not text.image_search
    text.save(tmp_path / "text")
    mf.save(tmp_path / "mf")
    assert type(load_model(tmp_path / "text")) is BiEncoder and type(load_model(tmp_path / "mf")) is MultiFieldModel
    assert load_model(tmp_path / "mf").source == str(tmp_path / "mf")
    with pytest.raises(ConfigError, match="load_model"):
        BiEncoder.load(tmp_path / "mf")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MODEL_CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model(tmp_path / "bad")


def test_query_text_fills_the_first_text_query_field():
    mf = multifield()
    table = query_table(mf, ["red mug", "lamp"])
    assert list(table.columns) == ["query"] and table["query"].tolist() == ["red mug", "lamp"]
    np.testing.assert_array_equal(mf.encode_queries(table), mf.encode_text_field(mf.query_fields[0],
                                                                                  ["red mug", "lamp"])[0])


def test_multifield_image_queries_use_the_image_field_tower():
    mf = multifield().eval()
    got = mf.encode_images([png("red"), png("blue")])
    want, present = mf.encode_image_field(mf.doc_fields[0], [png("red"), png("blue")], root=None)
    assert present.all()
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    with pytest.raises(DataError):
        mf.encode_images([b"not an image"])


def test_an_image_tower_saved_beside_a_text_model_still_loads(tmp_path):
    from gcl.encoders.image import ImageTower, ImageTowerConfig

    text = BiEncoder.load(str(tiny_model(0.0)))
    text.save(tmp_path / "m")
    tower = ImageTower(ImageTowerConfig.tiny(out_dim=text.dim), pretrained=False).eval()
    tower.save(tmp_path / "m")  # the layout the service used to read by itself
    loaded = load_model(tmp_path / "m")
    assert loaded.image_search
    from gcl.data.images import load_image, preprocess

    pixels = preprocess([load_image(png("green"), root=None)], tower.preprocess_spec)
    with torch.inference_mode():
        want = tower(pixels).numpy()
    np.testing.assert_allclose(loaded.encode_images([png("green")]), want, atol=1e-6)
    with pytest.raises(ConfigError, match="no image tower"):
        text.encode_images([png("green")])


def test_fingerprint_follows_the_weights_and_survives_save_load(tmp_path):
    for model in (BiEncoder.load(str(tiny_model(0.0))), multifield()):
        before = model.fingerprint()
        model.save(tmp_path / type(model).__name__)
        assert load_model(tmp_path / type(model).__name__).fingerprint() == before
        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).add_(1.0)
        assert model.fingerprint() != before
