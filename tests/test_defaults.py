"""Defaults live in one place: the text model spec (max_seq_length, fields, text model) and the
index parameters (kind, HNSW M / ef_construction / ef_search) are read from one dataclass each by
every consumer that has them."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from gcl.encoders.config import BiEncoderConfig, TowerConfig
from gcl.errors import ConfigError
from gcl.index.base import IndexParams


def test_training_model_config_is_the_encoder_spec():
    from gcl.training.config import ModelConfig, TrainConfig

    assert issubclass(ModelConfig, BiEncoderConfig)
    spec, train = BiEncoderConfig(), TrainConfig().model
    for f in dataclasses.fields(BiEncoderConfig):
        assert getattr(train, f.name) == getattr(spec, f.name), f.name
    assert TowerConfig().max_seq_length == spec.max_seq_length == 32


def test_a_model_loaded_by_name_uses_the_spec_default(tmp_path):
    from conftest_trainer import tiny_model

    from gcl.encoders.base import load_model

    model = load_model(str(tiny_model(0.0)))  # a plain sentence-transformers dir, as gcl evaluate/index take it
    assert model.tower.max_seq_length == BiEncoderConfig().max_seq_length


def test_every_index_entry_point_takes_its_defaults_from_index_params():
    from gcl.index.build import build_index
    from gcl.index.milvus import MilvusIndex
    from gcl.index.store import VectorIndex

    d = IndexParams()
    for fn in (build_index, VectorIndex.__init__, MilvusIndex.__init__):
        params = inspect.signature(fn).parameters
        assert params["hnsw_m"].default == d.hnsw_m and params["ef_construction"].default == d.ef_construction
    for fn in (build_index, VectorIndex.__init__):
        assert inspect.signature(fn).parameters["ef_search"].default == d.ef_search
    from gcl.cli.main import build_parser

    args = build_parser().parse_args(["index", "build", "--out", "x"])
    assert (args.kind, args.hnsw_m, args.ef_construction, args.ef_search) == dataclasses.astuple(d)


@pytest.mark.parametrize("bad, message", [
    (dict(kind="ivf"), "unknown index kind"), (dict(hnsw_m=1), "hnsw_m must be >= 2"),
    (dict(ef_search=0), "ef_search must be a positive integer"), (dict(ef_construction=True), "ef_construction"),
])
def test_index_params_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        IndexParams(**bad)
