"""The listwise loss options in training: soft targets (``loss.targets``) and the pairwise term
(``loss.lambda_weight``) through the trainer, GradCache, frozen layers, multi-field models, the
sentence-transformers wrapper and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest_trainer import assert_states_close, grads, make_config, model_state, synthetic_splits, tiny_model

from gcl.errors import ConfigError
from gcl.losses import GCLLoss
from gcl.training.trainer import Trainer

SOFT = {"loss.targets": "soft", "batch.sampler": "query_grouped", "batch.docs_per_query": 4}
LAMBDA = {"loss.lambda_weight": 0.5, "loss.same_query": "lower", "batch.sampler": "query_grouped",
          "batch.docs_per_query": 4}


def _trainer(tmp_path, name, dropout=0.0, **items):
    cfg = make_config(tmp_path / name, dropout=dropout, **{k.replace(".", "__"): v for k, v in items.items()})
    return Trainer(cfg, splits=synthetic_splits())


def _step_inputs(tr: Trainer, rows):
    p = tr.pairs
    meta = dict(query_ids=torch.as_tensor(p.query_code[rows]), doc_ids=torch.as_tensor(p.doc_code[rows]),
                scores=torch.as_tensor(p.score[rows]))
    return torch.as_tensor(p.weight[rows]), meta


@pytest.mark.parametrize("extra", [{}, {"loss.target_temperature": 0.5, "loss.learnable_temperature": True}])
def test_trainer_step_loss_is_the_soft_loss_of_the_batch(tmp_path, extra):
    """The step's loss equals GCLLoss(targets="soft") on independently encoded embeddings."""
    tr = _trainer(tmp_path, "soft", **SOFT, **extra, **{"batch.batch_size": 16})
    assert tr.loss_fn.targets == "soft" and tr.loss_fn.target_temperature == extra.get("loss.target_temperature", 1.0)
    state = tr.sampler.state_dict()
    rows = tr.sampler.next_batch()
    tr.sampler.load_state_dict(state)
    assert len(set(tr.pairs.query_code[rows].tolist())) < len(rows)  # queries with several documents
    tr.model.eval()
    with torch.no_grad():
        q = tr.encoding.q_tokens.embed(tr.model, tr.pairs.query_code[rows])
        d = tr.encoding.d_tokens.embed(tr.model, tr.pairs.doc_code[rows])
        w, meta = _step_inputs(tr, rows)
        want = GCLLoss(targets="soft", target_temperature=tr.loss_fn.target_temperature,
                       temperature=tr.loss_fn.temperature)(q.double(), d.double(), w, **meta)
    loss = tr.train_step()  # dropout 0: the training forward equals the eval forward
    assert loss == pytest.approx(float(want), abs=1e-5)


@pytest.mark.parametrize("variant", [
    SOFT, {**SOFT, "loss.learnable_temperature": True, "loss.target_temperature": 0.5},
    {**SOFT, "batch.grad_accum": 2},
    LAMBDA, {**LAMBDA, "loss.hard_negatives": 2, "loss.learnable_temperature": True},
    {**SOFT, "loss.lambda_weight": 2.0},
])
def test_grad_cache_equals_plain_step(tmp_path, variant):
    items = {"batch.batch_size": 16, "optim.clip_grad_norm": 0.0, **variant}
    plain = _trainer(tmp_path, "plain", **items)
    cached = _trainer(tmp_path, "gc", **items, **{"batch.grad_cache_chunk": 4})
    assert_states_close(model_state(plain), model_state(cached))
    assert plain.train_step() == pytest.approx(cached.train_step(), abs=1e-6)
    g_plain, g_cached = grads(plain), grads(cached)
    assert len(g_plain) > 30 and any(v.abs().sum() > 0 for v in g_plain.values())
    assert_states_close(g_plain, g_cached, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", [SOFT, LAMBDA])
def test_frozen_cache_equals_frozen_without_cache(tmp_path, variant):
    items = {"batch.batch_size": 16, "optim.clip_grad_norm": 0.0, "model.freeze_layers": 1, **variant}
    cached = _trainer(tmp_path, "cache", **items, **{"model.cache_frozen": True})
    direct = _trainer(tmp_path, "direct", **items, **{"model.cache_frozen": False})
    assert cached.train_step() == pytest.approx(direct.train_step(), abs=1e-5)
    assert_states_close(grads(cached), grads(direct), atol=1e-5, rtol=1e-4)


def test_mined_negatives_train_with_soft_targets(tmp_path):
    tr = _trainer(tmp_path, "mined", **SOFT, **{"loss.mined_negatives": 2, "loss.mine_every": 2, "loss.mine_skip": 0})
    losses = [tr.train_step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("override, message", [
    ({"loss.targets": "soft", "loss.same_query": "lower"}, "loss.same_query: lower has no effect"),
    ({"loss.targets": "soft", "loss.hard_negatives": 2}, "loss.hard_negatives"),
    ({"loss.target_temperature": 0.5}, "loss.target_temperature applies to loss.targets: soft only"),
    ({"loss.targets": "soft", "loss.target_temperature": 0.0}, "loss.target_temperature must be > 0"),
    ({"loss.targets": "listnet"}, "loss.targets"),
    ({"loss.lambda_weight": -1.0}, "loss.lambda_weight must be >= 0"),
])
def test_bad_soft_settings_are_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        _trainer(tmp_path, "bad", **override)


def test_trainer_gives_the_pairwise_term_the_training_score_range(tmp_path):
    tr = _trainer(tmp_path, "lam", **LAMBDA, **{"batch.batch_size": 16})
    assert tr.loss_fn.lambda_weight == 0.5
    assert tr.loss_fn.score_range == (float(tr.pairs.score.min()), float(tr.pairs.score.max()))
    assert tr.pairs.score.min() < tr.pairs.score.max()
    state = tr.sampler.state_dict()
    rows = tr.sampler.next_batch()
    tr.sampler.load_state_dict(state)
    tr.model.eval()
    with torch.no_grad():
        q = tr.encoding.q_tokens.embed(tr.model, tr.pairs.query_code[rows]).double()
        d = tr.encoding.d_tokens.embed(tr.model, tr.pairs.doc_code[rows]).double()
        w, meta = _step_inputs(tr, rows)
        with_term = GCLLoss(same_query="lower", lambda_weight=0.5, score_range=tr.loss_fn.score_range)(q, d, w, **meta)
        without = GCLLoss(same_query="lower")(q, d, w, **meta)
    assert float(with_term) > float(without)  # the batch has graded pairs: the term is on
    assert tr.train_step() == pytest.approx(float(with_term), abs=1e-5)
    assert _trainer(tmp_path, "off", **{"batch.batch_size": 16}).loss_fn.score_range is None


# --------------------------------------------------------------------------- multi-field models
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("loss", [{"loss__targets": "soft"}, {"loss__lambda_weight": 1.0, "loss__same_query": "lower"},
                                  {"loss__targets": "soft", "loss__lambda_weight": 1.0}])
def test_multifield_step_equals_an_independent_computation(tmp_path, loss):
    from multimodal_fixtures import mm_config
    from test_multifield_training import _batch_loss_by_hand

    pairs = {"loss.field_pairs": [{"query": "query", "doc": "title", "weight": 0.5}]}
    tr = Trainer(mm_config(tmp_path, batch__sampler="query_grouped", **loss, **pairs))
    assert tr.loss_fn.targets == loss.get("loss__targets", "hard")
    assert tr.loss_fn.lambda_weight == loss.get("loss__lambda_weight", 0.0)
    rows = tr.sampler.next_batch()
    want = _batch_loss_by_hand(tr, rows, [(0.5, 0, 1)])
    tr.model.train()
    assert abs(tr._micro_step(rows, 1.0) - float(want)) < 1e-4


# --------------------------------------------------------------------------- sentence-transformers
def wrapper_case(st_loss, seed: int):
    """The wrapper's loss on a fixed 6-row batch (3 queries, grades 1..3) and what gcl's own loss needs
    to recompute it: ``(got, normalised q, normalised d, linear weights, batch)``."""
    from gcl.sentence_transformers import _Batch

    g = torch.Generator().manual_seed(seed)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    batch = _Batch(scores=torch.tensor([3.0, 2.0, 1.0, 3.0, 1.0, 2.0]), query_ids=torch.tensor([0, 0, 0, 1, 1, 2]),
                   doc_ids=torch.arange(6))
    got = st_loss.compute_loss_from_embeddings([q, d], batch)
    w = torch.tensor([1.0, 0.55, 0.1, 1.0, 0.1, 0.55], dtype=torch.float64)  # linear, floor 0.1, range 1..3
    qn, dn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
    return got, qn, dn, w, batch


def test_sentence_transformers_wrapper_passes_soft_targets():
    pytest.importorskip("sentence_transformers")
    from gcl.sentence_transformers import GCLLoss as STGCLLoss

    st_loss = STGCLLoss(None, weight_fn="linear", score_range=(1.0, 3.0), targets="soft", target_temperature=0.5)
    cfg = st_loss.get_config_dict()
    assert cfg["targets"] == "soft" and cfg["target_temperature"] == 0.5
    got, qn, dn, w, batch = wrapper_case(st_loss, seed=0)
    want = GCLLoss(targets="soft", target_temperature=0.5)(qn, dn, w, query_ids=batch.query_ids, doc_ids=batch.doc_ids)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="has no effect with targets='soft'"):
        STGCLLoss(None, targets="soft", same_query="lower")


def test_sentence_transformers_wrapper_passes_the_pairwise_term():
    pytest.importorskip("sentence_transformers")
    from gcl.sentence_transformers import GCLLoss as STGCLLoss

    st_loss = STGCLLoss(None, score_range=(1.0, 3.0), same_query="lower", lambda_weight=2.0)
    assert st_loss.get_config_dict()["lambda_weight"] == 2.0
    assert st_loss.gcl_loss.score_range == (1.0, 3.0)
    got, qn, dn, w, batch = wrapper_case(st_loss, seed=1)
    want = GCLLoss(same_query="lower", lambda_weight=2.0, score_range=(1.0, 3.0))(
        qn, dn, w, query_ids=batch.query_ids, doc_ids=batch.doc_ids, scores=batch.scores)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs score_range"):
        STGCLLoss(None, lambda_weight=1.0)


# --------------------------------------------------------------------------- the CLI, end to end
def _cli_args(tmp_path, *extra):
    return ["train", "data.source=synthetic", f"model.text_model={tiny_model(0.1)}", "optim.steps=3",
            "batch.batch_size=8", f"out_dir={tmp_path / 'cli'}", "progress=false", "eval.dev_corpus_size=200",
            "log_every=1", *extra]


def test_cli_train_with_soft_targets(tmp_path, capsys):
    from gcl.cli.main import main

    assert main(_cli_args(tmp_path, "loss.targets=soft", "loss.target_temperature=0.5",
                          "batch.sampler=query_grouped")) == 0
    err = capsys.readouterr().err
    assert "trained 3 steps" in err
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["loss"]["targets"] == "soft" and saved["loss"]["target_temperature"] == 0.5
    assert (tmp_path / "cli" / "final" / "gcl_model.json").is_file()
    logged = [json.loads(x) for x in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if "loss" in r]
    assert len(losses) == 3 and all(x == x and x > 0 for x in losses)


def test_cli_train_with_the_pairwise_term(tmp_path, capsys):
    from gcl.cli.main import main

    assert main(_cli_args(tmp_path, "loss.lambda_weight=1.0", "loss.same_query=lower", "loss.hard_negatives=1",
                          "batch.sampler=query_grouped")) == 0
    assert "trained 3 steps" in capsys.readouterr().err
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["loss"]["lambda_weight"] == 1.0
    logged = [json.loads(x) for x in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] > 0 for r in logged if "loss" in r)


@pytest.mark.parametrize("bad, message", [
    ("loss.lambda_weight=-0.5", "loss.lambda_weight"),
    ("loss.targets=listnet", "loss.targets"),
    ("loss.target_temperature=-1", "loss.target_temperature"),
])
def test_cli_bad_soft_settings_exit_2(tmp_path, capsys, bad, message):
    from gcl.cli.main import main

    assert main(_cli_args(tmp_path, bad)) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- the named configs
def _flat_config(name: str) -> dict:
    from pathlib import Path

    import yaml

    from gcl.config import from_dict, to_dict
    from gcl.training.config import TrainConfig

    path = Path(__file__).resolve().parents[1] / "configs" / name
    flat: dict = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict) and k not in ("weight_params", "doc_field_weights"):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(to_dict(from_dict(TrainConfig, yaml.safe_load(path.read_text()))), "")
    return flat


@pytest.mark.parametrize("name, differences", [
    ("homedepot_gcl_soft.yaml", {"loss.targets": "soft", "loss.same_query": "mask",
                                 "out_dir": "runs/homedepot_gcl_soft"}),
    ("homedepot_gcl_lambda.yaml", {"loss.lambda_weight": 1.0, "out_dir": "runs/homedepot_gcl_lambda"}),
])
def test_named_config_differs_from_the_fast_config_only_in_the_loss(name, differences):
    fast, new = _flat_config("homedepot_gcl_fast.yaml"), _flat_config(name)
    changed = {k: new[k] for k in new if new[k] != fast.get(k)}
    assert changed == differences
