"""Training configuration: YAML + ``a.b=value`` overrides into typed dataclasses; mistakes are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcl.config import apply_overrides, from_dict, load_config, to_dict
from gcl.data.errors import ConfigError
from gcl.training.config import RESUME_MUTABLE, TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _yaml(tmp_path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_round_trip():
    cfg = TrainConfig()
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.optim.steps >= 1


def test_yaml_typo_in_key_suggests_the_valid_one(tmp_path):
    path = _yaml(tmp_path, "optim:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lerning_rate'"):
        load_config(TrainConfig, path)
    path = _yaml(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"did you mean 'lr'\?"):
        load_config(TrainConfig, path)
    path = _yaml(tmp_path, "bacth:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"'bacth'.*did you mean 'batch'\?"):
        load_config(TrainConfig, path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("optim:\n  lr: fast\n", r"optim\.lr: expected a number, got 'fast'"),
        ("batch:\n  batch_size: 8.5\n", r"batch\.batch_size: expected an integer"),
        ("batch:\n  batch_size: true\n", r"batch\.batch_size: expected an integer"),
        ("batch:\n  sampler: grouped\n", r"batch\.sampler: 'grouped' is not one of \['random', 'query_grouped'\]"),
        ("loss:\n  same_query: lowest\n", r"loss\.same_query"),
        ("progress: maybe\n", r"progress: expected true/false"),
        ("model:\n  doc_fields: title\n", r"model\.doc_fields: expected a list"),
        ("loss: 3\n", r"loss: expected a mapping"),
        ("model:\n  doc_field_weights: {image: heavy}\n", r"model\.doc_field_weights\.image: expected a number"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("optim: [unclosed\n", r"not valid YAML"),
    ],
)
def test_wrong_types_are_config_errors(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, _yaml(tmp_path, text))


@pytest.mark.parametrize(
    "data, match",
    [
        ({"batch": {"batch_size": 1}}, "at least 2"),
        ({"batch": {"batch_size": 8, "grad_accum": 3}}, "grad_accum"),
        ({"optim": {"steps": 0}}, "optim.steps"),
        ({"loss": {"temperature": 0}}, "temperature"),
    ],
)
def test_invalid_values_are_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(TrainConfig, data)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_and_typed(tmp_path):
    path = _yaml(tmp_path, "optim:\n  lr: 0.1\n  steps: 7\nloss:\n  weight_fn: constant\n")
    cfg = load_config(
        TrainConfig,
        path,
        [
            "optim.lr=1e-4",  # YAML reads this as a string: the typed coercion makes it a float
            "loss.weight_fn=power",
            "loss.weight_params={p: 3, floor: 0.2}",
            "batch.grad_cache_chunk=null",
            "batch.sampler=query_grouped",
            "model.doc_fields=[title, image]",
            "model.doc_field_weights={title: 0.1, image: 0.9}",
            "eval.keep_best=false",
            "seed=3",
            "out_dir=runs/x=y",  # only the first '=' splits
        ],
    )
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.steps == 7  # untouched YAML values stay
    assert cfg.loss.weight_fn == "power"
    assert cfg.loss.weight_params == {"p": 3.0, "floor": 0.2}
    assert cfg.batch.grad_cache_chunk is None
    assert cfg.batch.sampler == "query_grouped"
    assert cfg.model.doc_fields == ["title", "image"]
    assert cfg.model.doc_field_weights == {"title": 0.1, "image": 0.9}
    assert cfg.eval.keep_best is False
    assert cfg.seed == 3
    assert cfg.out_dir == "runs/x=y"


def test_override_typo_and_malformed_override():
    with pytest.raises(ConfigError, match=r"did you mean 'lr'"):
        load_config(TrainConfig, None, ["optim.lrr=1e-4"])
    with pytest.raises(ConfigError, match=r"did you mean 'optim'"):
        load_config(TrainConfig, None, ["optimm.lr=1e-4"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(TrainConfig, None, ["optim.lr"])


def test_apply_overrides_does_not_mutate_its_input():
    data = {"optim": {"lr": 0.1}}
    out = apply_overrides(data, ["optim.lr=0.2"])
    assert data == {"optim": {"lr": 0.1}} and out == {"optim": {"lr": 0.2}}


def test_resume_mutable_keys_exist():
    """Every key allowed to change on resume names a real setting."""
    flat = set()

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("weight_params", "doc_field_weights"):
                walk(v, f"{prefix}{k}.")
            else:
                flat.add(f"{prefix}{k}")

    walk(to_dict(TrainConfig()))
    assert RESUME_MUTABLE <= flat


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lr=-1e-4", r"optim\.lr must be >= 0, got -0\.0001"),
        ("optim.lr=nan", r"optim\.lr must be a finite number, got nan"),
        ("optim.lr=.inf", r"optim\.lr must be a finite number, got inf"),
        ("optim.warmup_steps=-1", r"optim\.warmup_steps must be >= 0, got -1"),
        ("optim.weight_decay=-0.1", r"optim\.weight_decay must be >= 0"),
        ("optim.clip_grad_norm=-1", r"optim\.clip_grad_norm must be >= 0"),
        ("loss.temperature=-0.05", r"loss\.temperature must be > 0"),
        ("loss.weight_params={p: .nan}", r"loss\.weight_params\.p must be a finite number"),
        ("loss.mine_every=0", r"loss\.mine_every must be >= 1"),
        ("loss.hard_negatives=-2", r"loss\.hard_negatives must be >= 0"),
        ("batch.grad_accum=0", r"batch\.grad_accum must be >= 1"),
        ("batch.grad_cache_chunk=0", r"batch\.grad_cache_chunk must be >= 1"),
        ("batch.docs_per_query=0", r"batch\.docs_per_query must be >= 1"),
        ("batch.group_fraction=0", r"batch\.group_fraction must be in \(0, 1\], got 0"),
        ("batch.group_fraction=1.5", r"batch\.group_fraction must be in \(0, 1\], got 1\.5"),
        ("batch.group_fraction=0.5", r"batch\.group_fraction applies to batch\.sampler: query_grouped only"),
        ("model.max_seq_length=0", r"model\.max_seq_length must be >= 1"),
        ("model.doc_field_weights={title: -1}", r"model\.doc_field_weights must be >= 0"),
        ("eval.every=-2", r"eval\.every must be >= -1"),
        ("eval.dev_corpus_size=0", r"eval\.dev_corpus_size must be >= 1"),
        ("eval.patience=-1", r"eval\.patience must be >= 0"),
        ("seed=-1", r"seed must be >= 0"),
        ("log_every=0", r"log_every must be >= 1"),
        ("checkpoint_every=0", r"checkpoint_every must be >= 1"),
        ("eval.metric=recall@10", r"eval\.metric 'recall@10' is not computed by the dev evaluation; choose one of "
                                  r"\['ndcg@10'"),
    ],
)
def test_numeric_values_are_checked_at_load_time(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, None, [override])


def test_every_bound_names_a_numeric_setting():
    from gcl.training.config import BOUNDS

    cfg = TrainConfig()
    for key in BOUNDS:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert value is None or isinstance(value, (int, float)), key


def test_dev_evaluation_computes_every_allowed_metric():
    from gcl.metrics import parse_metric
    from gcl.training.config import DEV_METRICS

    assert TrainConfig().eval.metric in DEV_METRICS
    for name in DEV_METRICS:
        parse_metric(name)
