"""Checkpoints: a killed-and-resumed run ends bit-identical to an uninterrupted one; bad resumes fail clearly.

Dropout is active (tiny model, p = 0.1), so exactness needs the torch RNG, the sampler and the
hard-negative RNG to be restored, not only weights and optimiser state.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest_trainer import assert_states_close, make_config, model_state, synthetic_splits

from gcl.data.errors import ConfigError
from gcl.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from gcl.training.trainer import Trainer

N, K = 6, 3  # total steps; the simulated kill happens right after the checkpoint at step K

VARIANTS = {
    "random": {},
    "query_grouped+hard_negatives": {
        "batch.sampler": "query_grouped",
        "batch.docs_per_query": 4,
        "loss.hard_negatives": 2,
        "loss.same_query": "lower",
        "loss.learnable_temperature": True,
    },
    "grad_cache": {"batch.grad_cache_chunk": 3, "batch.grad_accum": 2},
    "mined_negatives": {"loss.mined_negatives": 2, "loss.mine_every": 2, "loss.mine_depth": 5, "loss.mine_skip": 1},
}


def _cfg(out_dir, variant: str, **extra):
    items = {"optim.steps": N, "checkpoint_every": K, **VARIANTS[variant], **extra}
    return make_config(out_dir, **{k.replace(".", "__"): v for k, v in items.items()})


def _straight(tmp_path, variant: str) -> Trainer:
    t = Trainer(_cfg(tmp_path / "straight", variant), splits=synthetic_splits())
    t.fit()
    return t


def _killed(tmp_path, variant: str, **extra):
    cfg = _cfg(tmp_path / "resumed", variant, **extra)
    first = Trainer(cfg, splits=synthetic_splits())
    res = first.fit(stop_after=K)
    assert res.steps == K and first.step == K
    assert (cfg_dir := tmp_path / "resumed" / CHECKPOINT_FILE).is_file(), cfg_dir
    assert not (tmp_path / "resumed" / "final").exists()  # an interrupted run writes no final model
    return cfg


def test_dropout_is_active():
    """Guard for the tests below: the tiny model's train-mode forward is random."""
    t = Trainer(make_config("unused"), splits=synthetic_splits())
    t.model.train()
    feats = t.encoding.q_tokens.collate(t.pairs.query_code[:4])
    with torch.no_grad():
        assert not torch.equal(t.model.embed_tokens(feats), t.model.embed_tokens(feats))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_is_exact(tmp_path, variant):
    straight = _straight(tmp_path, variant)
    cfg = _killed(tmp_path, variant)
    resumed = Trainer(cfg, splits=synthetic_splits())  # a fresh process would build a new Trainer
    assert resumed.step == 0
    res = resumed.fit(resume=True)
    assert res.steps == N and resumed.step == N
    assert_states_close(model_state(straight), model_state(resumed))  # bit-identical
    assert straight.sampler.state_dict()["pos"] == resumed.sampler.state_dict()["pos"]
    s_opt, r_opt = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in s_opt:
        assert torch.equal(s_opt[i]["exp_avg_sq"], r_opt[i]["exp_avg_sq"])
    assert straight.scheduler.get_last_lr() == resumed.scheduler.get_last_lr()
    assert (tmp_path / "resumed" / "final").is_dir()
    saved = load_checkpoint(tmp_path / "resumed")
    assert saved["step"] == N


def test_resume_without_restoring_rng_differs(tmp_path):
    """The exactness test can fail: drop the RNG restore and the weights no longer match."""
    straight = _straight(tmp_path, "random")
    cfg = _killed(tmp_path, "random")
    resumed = Trainer(cfg, splits=synthetic_splits())
    state = load_checkpoint(tmp_path / "resumed")
    resumed.load_state_dict(state)
    torch.manual_seed(12345)  # a different dropout stream from here on
    resumed.fit()
    a, b = model_state(straight), model_state(resumed)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_may_extend_steps(tmp_path):
    """``optim.steps`` may change on resume (it is in RESUME_MUTABLE)."""
    _killed(tmp_path, "random")
    cfg = _cfg(tmp_path / "resumed", "random", **{"optim.steps": N + 2})
    res = Trainer(cfg, splits=synthetic_splits()).fit(resume=True)
    assert res.steps == N + 2


def test_resume_with_incompatible_config_names_the_key(tmp_path):
    _killed(tmp_path, "random")
    cfg = _cfg(tmp_path / "resumed", "random", **{"loss.weight_fn": "constant"})
    with pytest.raises(ConfigError, match=r"loss\.weight_fn: 'linear' -> 'constant'"):
        Trainer(cfg, splits=synthetic_splits()).fit(resume=True)


def test_resume_without_checkpoint_is_a_config_error(tmp_path):
    cfg = _cfg(tmp_path / "empty", "random")
    with pytest.raises(ConfigError, match="no checkpoint"):
        Trainer(cfg, splits=synthetic_splits()).fit(resume=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_a_config_error(tmp_path, damage):
    cfg = _killed(tmp_path, "random")
    path = tmp_path / "resumed" / CHECKPOINT_FILE
    data = path.read_bytes()
    path.write_bytes(b"not a checkpoint at all" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ConfigError, match="corrupt or unreadable"):
        load_checkpoint(path)
    with pytest.raises(ConfigError, match="corrupt or unreadable"):
        Trainer(cfg, splits=synthetic_splits()).fit(resume=True)


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = _killed(tmp_path, "random")
    directory = tmp_path / "resumed"
    before = (directory / CHECKPOINT_FILE).read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # write the whole payload into the temp file ...
        f.seek(os.SEEK_SET)
        f.truncate(100)
        raise OSError("disk full (simulated)")  # ... then die before the rename

    monkeypatch.setattr(torch, "save", dying_save)
    trainer = Trainer(cfg, splits=synthetic_splits())
    trainer.fit(resume=True, stop_after=1)  # step K+1: no checkpoint due
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    monkeypatch.undo()
    assert (directory / CHECKPOINT_FILE).read_bytes() == before
    assert load_checkpoint(directory)["step"] == K
    assert [p.name for p in directory.iterdir() if p.name.startswith(".checkpoint-")] == []


def test_checkpoint_loads_with_weights_only(tmp_path):
    """No pickled objects: numpy arrays and RNG states go in as tensors, lists and ints."""
    t = Trainer(_cfg(tmp_path / "run", "query_grouped+hard_negatives"), splits=synthetic_splits())
    t.fit(stop_after=1)
    path = save_checkpoint(tmp_path / "run", t.state_dict())
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"config", "step", "model", "loss", "optimizer", "scheduler", "sampler", "hn_rng", "rng"}
    assert state["config"]["loss"]["hard_negatives"] == 2
