"""The training loop end to end on synthetic data with the tiny model: loss baseline, schedule,
bad data, precision, outputs, keep-best / early stopping and the ``gcl train`` command."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest_trainer import make_config, model_state, synthetic_splits, tiny_model

from gcl.data.errors import ConfigError, DataError
from gcl.data.schema import GradedDataset
from gcl.training import distributed as D
from gcl.training.config import OptimConfig
from gcl.training.trainer import Trainer, lr_factor


def _only(train: GradedDataset, judgments) -> SimpleNamespace:
    ds = copy.copy(train)
    ds.judgments = judgments.reset_index(drop=True)
    ds.queries = train.queries.loc[ds.judgments["query_id"].unique()]
    return SimpleNamespace(train=ds, dev=None)


def _unique_pairs() -> SimpleNamespace:
    """One judgment per query, every document once: a batch has no duplicated query or document."""
    j = synthetic_splits().train.judgments
    j = j.drop_duplicates("query_id").drop_duplicates("doc_id")
    return _only(synthetic_splits().train, j)


# --------------------------------------------------------------------------- the baseline pin
@pytest.mark.parametrize("same_query, same_doc", [("keep", "keep"), ("mask", "mask"), ("lower", "mask")])
@pytest.mark.parametrize("symmetric", [True, False])
def test_constant_weights_reduce_to_clip_and_mnrl(tmp_path, symmetric, same_query, same_doc):
    """Constant weights, no duplicates: the trainer's loss is CLIP's (symmetric) or
    sentence-transformers' MultipleNegativesRankingLoss (q->d) on the same embeddings."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    temperature = 0.05
    cfg = make_config(tmp_path, dropout=0.0, loss__weight_fn="constant", loss__symmetric=symmetric,
                      loss__same_query=same_query, loss__same_doc=same_doc, loss__temperature=temperature,
                      batch__batch_size=16)
    t = Trainer(cfg, splits=_unique_pairs())
    state = t.sampler.state_dict()
    rows = t.sampler.next_batch()
    t.sampler.load_state_dict(state)
    p = t.pairs
    assert len(set(p.query_code[rows])) == len(set(p.doc_code[rows])) == 16
    with torch.no_grad():  # the tower's own tokenisation, not the trainer's cache
        q = t.model.embed_texts([p.query_texts[c] for c in p.query_code[rows]])
        d = t.model.embed_texts([p.doc_texts[c] for c in p.doc_code[rows]])
    logits = q @ d.T / temperature
    labels = torch.arange(16)
    by_hand = F.cross_entropy(logits, labels)
    if symmetric:
        by_hand = (by_hand + F.cross_entropy(logits.T, labels)) / 2
    mnrl = MultipleNegativesRankingLoss(
        t.model.tower, scale=1 / temperature,
        directions=("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",),
        partition_mode="per_direction",
    )
    st_loss = mnrl.compute_loss_from_embeddings([q, d], labels)
    loss = t.train_step()
    assert loss == pytest.approx(float(by_hand), abs=2e-5)
    assert loss == pytest.approx(float(st_loss), abs=2e-5)


# --------------------------------------------------------------------------- schedule
def test_lr_factor_by_hand():
    lin = OptimConfig(steps=10, warmup_steps=4, schedule="linear")
    assert [lr_factor(s, lin) for s in range(11)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])
    cos = OptimConfig(steps=10, warmup_steps=2, schedule="cosine")
    assert [lr_factor(s, cos) for s in (0, 1, 2, 6, 10, 12)] == pytest.approx(
        [0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    assert lr_factor(4, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    const = OptimConfig(steps=10, warmup_steps=0, schedule="constant")
    assert [lr_factor(s, const) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    no_warm = OptimConfig(steps=4, warmup_steps=0, schedule="linear")
    assert [lr_factor(s, no_warm) for s in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_optimizer_uses_the_scheduled_lr(tmp_path):
    cfg = make_config(tmp_path, optim__steps=6, optim__warmup_steps=2, optim__lr=1e-3)
    t = Trainer(cfg, splits=synthetic_splits())
    used = []
    for _ in range(6):
        used.append([g["lr"] for g in t.optimizer.param_groups])
        t.train_step()
    want = [1e-3 * lr_factor(s, cfg.optim) for s in range(6)]
    assert [u[0] for u in used] == pytest.approx(want)
    assert all(u[0] == u[1] for u in used)  # decay and no-decay groups share the schedule
    assert [g["weight_decay"] for g in t.optimizer.param_groups] == [cfg.optim.weight_decay, 0.0]


# --------------------------------------------------------------------------- data problems
def test_fewer_pairs_than_a_batch_is_a_data_error(tmp_path):
    j = synthetic_splits().train.judgments.iloc[:5]
    with pytest.raises(DataError, match="5 pairs, fewer than one batch of 8"):
        Trainer(make_config(tmp_path), splits=_only(synthetic_splits().train, j))


def test_nan_scores_are_a_data_error(tmp_path):
    j = synthetic_splits().train.judgments.copy()
    j.loc[3, "score"] = float("nan")
    with pytest.raises(DataError, match="finite"):
        Trainer(make_config(tmp_path), splits=_only(synthetic_splits().train, j))


def test_unknown_weight_fn_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="loss.weight_fn: unknown weight function 'linearr'"):
        Trainer(make_config(tmp_path, loss__weight_fn="linearr"), splits=synthetic_splits())


@pytest.mark.parametrize("kind", ["negative", "constant"])
def test_negative_and_constant_scores_train(tmp_path, kind):
    j = synthetic_splits().train.judgments.copy()
    j["score"] = j["score"] - 10.0 if kind == "negative" else 2.0
    t = Trainer(make_config(tmp_path, loss__weight_fn="linear"), splits=_only(synthetic_splits().train, j))
    if kind == "constant":
        assert np.all(t.pairs.weight == 1.0)  # all weights equal (the documented 0/0 rule)
    else:
        assert t.pairs.weight.min() == pytest.approx(0.1) and t.pairs.weight.max() == 1.0
    before = model_state(t)
    loss = t.train_step()
    assert math.isfinite(loss)
    after = model_state(t)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_batch_must_divide_over_processes(tmp_path):
    with pytest.raises(ConfigError, match="divisible by world size"):
        Trainer(make_config(tmp_path, batch__batch_size=6), splits=synthetic_splits(), dist=D.DistInfo(rank=0, world_size=4))


# --------------------------------------------------------------------------- precision
def test_bf16_step_runs_on_cpu(tmp_path):
    t = Trainer(make_config(tmp_path, optim__precision="bf16"), splits=synthetic_splits())
    before = model_state(t)
    loss = t.train_step()
    assert math.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # autocast, not a cast
    after = model_state(t)
    assert any(not torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- outputs
def test_fit_writes_outputs_and_final_loads_in_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    from gcl.encoders.model import BiEncoder

    t = Trainer(make_config(tmp_path / "run", optim__steps=3, log_every=2), splits=synthetic_splits())
    res = t.fit()
    out = tmp_path / "run"
    assert res.steps == 3 and res.out_dir == out
    assert json.loads((out / "config.json").read_text())["optim"]["steps"] == 3
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [2, 3]  # every log_every steps and at the end
    assert all(math.isfinite(r["loss"]) and r["pairs_per_s"] > 0 and "lr" in r for r in logs)
    assert (out / "checkpoint.pt").is_file()
    texts = ["red cotton shirt", "acme oak table", "a"]
    st_model = SentenceTransformer(str(out / "final"), device="cpu")
    ours = BiEncoder.load(out / "final")
    a = st_model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    b = ours.encode_texts(texts)
    assert np.allclose(a, b, atol=1e-6)
    assert st_model.max_seq_length == 32
    t.model.eval()
    assert np.allclose(b, t.model.encode_texts(texts), atol=1e-6)  # the trained weights, not the initial ones
    init = BiEncoder.load(str(tiny_model(0.1)))
    assert not np.allclose(b, init.encode_texts(texts), atol=1e-4)


def test_tensorboard_gets_the_same_scalars_as_the_jsonl(tmp_path):
    """tensorboard: true writes every logged number, train and dev, under <out_dir>/tensorboard."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(tmp_path / "run", optim__steps=3, log_every=2, tensorboard=True, eval__every=3,
                      eval__dev_corpus_size=200)
    Trainer(cfg, splits=synthetic_splits()).fit()
    out = tmp_path / "run"
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    expected: dict[str, list] = {}
    for rec in logs:
        for key, value in rec.items():
            if key != "step":
                expected.setdefault(key, []).append((rec["step"], value))
    assert set(acc.Tags()["scalars"]) == set(expected) and "dev/ndcg@10" in expected and "loss" in expected
    for key, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in points], key
        assert np.allclose([v for _, v in got], [v for _, v in points], rtol=1e-6), key  # float32 in the event file


def test_tensorboard_without_the_package_is_a_config_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    cfg = make_config(tmp_path / "run", optim__steps=1, tensorboard=True)
    with pytest.raises(ConfigError, match=r"tensorboard.*pip install"):
        Trainer(cfg, splits=synthetic_splits()).fit()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_keep_best_and_early_stopping(tmp_path):
    """lr = 0: the dev metric cannot improve, so patience 1 stops at the second evaluation."""
    cfg = make_config(tmp_path / "run", optim__steps=10, optim__lr=0.0, eval__every=1, eval__patience=1,
                      eval__dev_corpus_size=200)
    res = Trainer(cfg, splits=synthetic_splits()).fit()
    assert res.stopped_early and res.steps == 2
    assert res.best_step == 1 and res.best_metric is not None
    assert [h["step"] for h in res.history] == [1, 2]
    assert res.history[0]["dev/ndcg@10"] == res.history[1]["dev/ndcg@10"]
    out = tmp_path / "run"
    assert (out / "best").is_dir() and (out / "final").is_dir()
    dev_logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "dev/ndcg@10" in x]
    assert len(dev_logs) == 2


def test_keep_best_false_writes_no_best(tmp_path):
    cfg = make_config(tmp_path / "run", optim__steps=2, eval__every=1, eval__keep_best=False, eval__dev_corpus_size=200)
    res = Trainer(cfg, splits=synthetic_splits()).fit()
    assert not res.stopped_early and res.steps == 2 and len(res.history) == 2
    assert not (tmp_path / "run" / "best").exists()


# --------------------------------------------------------------------------- the CLI
def _cli_args(tmp_path, *extra):
    return ["train", "data.source=synthetic", f"model.text_model={tiny_model(0.1)}", "optim.steps=2",
            "batch.batch_size=8", f"out_dir={tmp_path / 'cli'}", "progress=false", "eval.dev_corpus_size=200", *extra]


@pytest.mark.parametrize("with_file", [False, True])
def test_cli_train_on_synthetic(tmp_path, capsys, with_file):
    from gcl.cli.main import main

    args = _cli_args(tmp_path)
    if with_file:  # gcl train CONFIG.yaml overrides...
        (tmp_path / "c.yaml").write_text("data:\n  source: synthetic\noptim:\n  steps: 50\n  lr: 1.0e-3\n")
        args = ["train", str(tmp_path / "c.yaml"), *args[2:]]  # the override optim.steps=2 wins
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "trained 2 steps" in err
    assert (tmp_path / "cli" / "final" / "gcl_model.json").is_file()
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["optim"]["lr"] == (1e-3 if with_file else 5e-5)


@pytest.mark.parametrize("bad, message", [
    ("optim.lrr=1e-4", "did you mean 'lr'"),
    ("loss.weight_fn=nosuch", "unknown weight function 'nosuch'"),
    ("batch.sampler=grouped", "batch.sampler"),
])
def test_cli_bad_override_exits_2_with_error_line(tmp_path, capsys, bad, message):
    from gcl.cli.main import main

    assert main(_cli_args(tmp_path, bad)) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
