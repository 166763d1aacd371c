"""experiments/st_peers.py: the sentence-transformers peers, trained by SentenceTransformerTrainer.

Checked against independent references: the rows of each arm against a naive loop over the
judgments; the trainable parameters against gcl's own trainer on the same config; the learning
rate of every step against gcl's ``lr_factor``; early stopping against gcl's trainer fed the same
dev metrics; the saved model through ``load_model``, gcl's dev evaluation and ``gcl evaluate``.
Tiny model (tests/tiny_models.py), synthetic data, a few steps each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from conftest_trainer import make_config, synthetic_splits, tiny_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import st_peers  # noqa: E402

from gcl.encoders.base import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = {"model.freeze_layers": 1, "eval.dev_corpus_size": 200}


def peer_config(tmp_path, **overrides):
    return make_config(tmp_path, **{**FAST, **overrides})


def peer(arm: str, cfg, threshold=None) -> st_peers.Peer:
    return st_peers.Peer(arm, st_peers.peer_threshold(arm, cfg, threshold), mini_batch_size=4)


def state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- training, saving, loading
@pytest.mark.parametrize("arm, loss", [("mnrl-all", "MultipleNegativesRankingLoss"),
                                       ("mnrl-thresholded", "MultipleNegativesRankingLoss"),
                                       ("cached-mnrl", "CachedMultipleNegativesRankingLoss"),
                                       ("cosent", "CoSENTLoss")])
def test_each_arm_trains_with_the_library_and_saves_a_model_gcl_loads(tmp_path, arm, loss):
    from sentence_transformers import SentenceTransformerTrainer

    from gcl.training.config import EvalConfig
    from gcl.training.dev_eval import DevEvaluator

    cfg = peer_config(tmp_path, **{"optim.steps": 3, "eval.every": 2})
    trainer, bi, train = st_peers.peer_trainer(peer(arm, cfg), cfg, synthetic_splits(), tmp_path / "probe")
    assert type(trainer) is SentenceTransformerTrainer and type(trainer.loss).__name__ == loss
    assert trainer.model is bi.tower
    before = state(bi)
    out = tmp_path / arm
    record = st_peers.run_peer(peer(arm, cfg), cfg, out, splits=synthetic_splits())
    assert record["loss"] == loss and record["steps"] == 3 and record["pairs"] == len(train)
    assert [h["step"] for h in record["dev_history"]] == [2, 3]  # every 2 steps and at the last, as gcl
    assert json.loads((out / "peer.json").read_text())["arm"] == arm
    assert not (out / "checkpoints").exists()
    model = load_model(out)
    assert model.config.max_seq_length == cfg.model.max_seq_length
    after = state(model)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # trained
    dev = DevEvaluator(synthetic_splits(), EvalConfig(dev_corpus_size=200))(model)
    assert set(dev) >= {"ndcg@10", "err"} and 0 <= dev["ndcg@10"] <= 1
    if record["model_is_best"]:  # the saved model scores the best dev metric it was kept for
        assert dev["ndcg@10"] == pytest.approx(record["best_metric"], abs=1e-6)


def test_gcl_evaluate_loads_a_peer(tmp_path, capsys):
    from gcl.cli.main import main as gcl_main

    cfg = peer_config(tmp_path, **{"optim.steps": 2})
    out = tmp_path / "peer"
    st_peers.run_peer(peer("cosent", cfg), cfg, out, splits=synthetic_splits())
    code = gcl_main(["evaluate", "--model", str(out), "--data", "synthetic", "--no-cache", "--out",
                     str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err


def test_a_peer_encodes_through_its_stored_frozen_layers_like_a_gcl_model(tmp_path):
    """The saved peer records its frozen bottom (gcl_frozen.json); loading it verifies the bottom's
    weights and encodes through the stored outputs: the same embeddings as the full forward."""
    from gcl.training.frozen_reuse import FROZEN_FILE, MIN_TEXTS

    cfg = peer_config(tmp_path, **{"optim.steps": 2})
    out = tmp_path / "peer"
    st_peers.run_peer(peer("mnrl-thresholded", cfg), cfg, out, splits=synthetic_splits())
    record = json.loads((out / FROZEN_FILE).read_text())
    assert record["freeze_layers"] == 1
    model = load_model(out)
    assert model.cached_bottom is not None and model.cached_bottom.fingerprint == record["fingerprint"]
    texts = [f"product number {i} with a longer title {i % 7}" for i in range(MIN_TEXTS + 3)]
    through_store = model.encode_texts(texts)
    model.cached_bottom = None
    full = model.encode_texts(texts)
    np.testing.assert_allclose(through_store, full, atol=2e-6)
    assert abs(np.linalg.norm(full, axis=1) - 1).max() < 1e-5
    # no frozen layers: nothing recorded, the full forward
    cfg0 = peer_config(tmp_path, **{"optim.steps": 2, "model.freeze_layers": 0})
    st_peers.run_peer(peer("mnrl-thresholded", cfg0), cfg0, tmp_path / "peer0", splits=synthetic_splits())
    assert not (tmp_path / "peer0" / FROZEN_FILE).exists() and load_model(tmp_path / "peer0").cached_bottom is None


@pytest.mark.parametrize("arm", ["mnrl-thresholded", "cached-mnrl", "cosent"])
def test_training_on_the_cached_frozen_outputs_ends_at_the_weights_of_the_library_s_forward(tmp_path, arm):
    """model.cache_frozen (a step runs only the trained layers on B(x) read from the cache) against
    cache_frozen=false (the library's forward runs every layer): the same weights after 4 steps of
    SentenceTransformerTrainer with dropout on (float32 rounding only), and peer.json counts the texts."""
    over = {"optim.steps": 4, "eval.every": -1}
    runs = {}
    for cache in (True, False):
        cfg = peer_config(tmp_path / str(cache), **over, **{"model.cache_frozen": cache})
        runs[cache] = st_peers.run_peer(peer(arm, cfg), cfg, tmp_path / str(cache) / "out", splits=synthetic_splits())
    a, b = state(load_model(tmp_path / "True" / "out")), state(load_model(tmp_path / "False" / "out"))
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=2e-5, rtol=1e-4, msg=n)
    stats = runs[True]["frozen_cache"]
    assert stats["calls"] > 0 and stats["fallbacks"] == 0 and stats["computed"] + stats["read_from_store"] > 0
    assert runs[False]["frozen_cache"] is None
    start = state(load_model(str(tiny_model())))
    assert set(start) == set(a)
    assert any(not torch.allclose(a[n], start[n], atol=1e-4) for n in a if ".encoder.layer.1." in n)  # trained


# --------------------------------------------------------------------------- datasets
def naive_rows(train, keep=lambda s: True):
    q, d = train.queries["query"], train.documents["title"]
    return [(q[r.query_id], d[r.doc_id], r.score) for r in train.judgments.itertuples() if keep(r.score)]


def test_thresholded_arms_drop_exactly_the_pairs_below_the_threshold(tmp_path):
    train = synthetic_splits().train
    cfg = peer_config(tmp_path)
    for arm in ("mnrl-thresholded", "cached-mnrl"):
        for t in (1.67, 2.0, 3.0):
            ds = st_peers.peer_dataset(peer(arm, cfg, t), train, cfg)
            expected = naive_rows(train, lambda s: s >= t)
            assert ds.column_names == ["query", "document"]
            assert list(zip(ds["query"], ds["document"])) == [(q, d) for q, d, _ in expected]
    every = st_peers.peer_dataset(peer("mnrl-all", cfg), train, cfg)
    assert list(zip(every["query"], every["document"])) == [(q, d) for q, d, _ in naive_rows(train)]


def test_cosent_labels_are_scores_scaled_monotone_into_0_1(tmp_path):
    train = synthetic_splits().train
    cfg = peer_config(tmp_path)
    ds = st_peers.peer_dataset(peer("cosent", cfg), train, cfg)
    rows = naive_rows(train)
    assert list(zip(ds["query"], ds["document"])) == [(q, d) for q, d, _ in rows]
    s, y = np.array([r[2] for r in rows]), np.array(ds["score"])
    np.testing.assert_allclose(y, (s - s.min()) / (s.max() - s.min()), rtol=0, atol=1e-12)
    assert y.min() == 0.0 and y.max() == 1.0
    order = np.argsort(s, kind="stable")
    assert np.all(np.diff(y[order]) >= 0) and np.all((np.diff(s[order]) > 0) == (np.diff(y[order]) > 0))


def test_threshold_default_is_the_config_s_else_the_thresholded_baseline_s(tmp_path):
    baseline = yaml.safe_load((REPO / "configs/homedepot_binary_thresholded.yaml").read_text())
    yaml_t = baseline["loss"]["positive_threshold"]
    assert st_peers.DEFAULT_THRESHOLD == yaml_t
    cfg = peer_config(tmp_path)
    assert st_peers.peer_threshold("mnrl-thresholded", cfg, None) == yaml_t
    configured = peer_config(tmp_path, **{"loss.positive_threshold": 2.5})
    assert st_peers.peer_threshold("cached-mnrl", configured, None) == 2.5
    assert st_peers.peer_threshold("mnrl-thresholded", cfg, 1.5) == 1.5
    assert st_peers.peer_threshold("cosent", cfg, 1.5) is None and st_peers.peer_threshold("mnrl-all", cfg, 2) is None


# --------------------------------------------------------------------------- frozen layers
def test_frozen_layers_stay_bit_identical_and_are_gcl_s_frozen_set(tmp_path):
    from transformers import TrainerCallback

    from gcl.training.trainer import Trainer

    cfg = peer_config(tmp_path, **{"optim.steps": 4})
    trainer, bi, _ = st_peers.peer_trainer(peer("mnrl-all", cfg), cfg, synthetic_splits(), tmp_path / "run")
    gcl = Trainer(cfg, splits=synthetic_splits())  # gcl's arm on the same config: what it trains
    assert ({n for n, p in bi.named_parameters() if p.requires_grad}
            == {n for n, p in gcl.model.named_parameters() if p.requires_grad})
    auto = bi.tower[0].auto_model
    frozen = [auto.embeddings, auto.encoder.layer[0]]
    modes = []

    class Modes(TrainerCallback):
        def on_step_end(self, *a, **k):
            modes.append((any(m.training for f in frozen for m in f.modules()), auto.encoder.layer[1].training))

    trainer.add_callback(Modes())
    before = state(bi)
    trainer.train()
    after = state(bi)
    for name in before:
        same = torch.equal(before[name], after[name])
        if ".embeddings." in name or ".encoder.layer.0." in name:
            assert same, f"frozen {name} changed"
        elif ".encoder.layer.1." in name:
            assert not same, f"trained {name} did not change"
    assert modes == [(False, True)] * 4  # frozen modules in eval mode (no dropout), the top in train mode


# --------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize("schedule, hf_name", [("linear", "linear"), ("cosine", "cosine"),
                                                ("constant", "constant_with_warmup")])
def test_hyperparameters_reaching_the_trainer_are_the_config_s(tmp_path, schedule, hf_name):
    from gcl.training.trainer import lr_factor

    cfg = peer_config(tmp_path, **{"optim.lr": 3e-4, "optim.steps": 11, "optim.warmup_steps": 3,
                                   "optim.schedule": schedule, "optim.weight_decay": 0.05,
                                   "optim.clip_grad_norm": 0.5, "batch.batch_size": 8, "batch.grad_accum": 2,
                                   "seed": 7, "eval.every": 5, "eval.patience": 2, "eval.metric": "err"})
    trainer, bi, _ = st_peers.peer_trainer(peer("mnrl-all", cfg), cfg, synthetic_splits(), tmp_path / "run")
    a = trainer.args
    assert (a.learning_rate, a.max_steps, a.warmup_steps, a.seed, a.data_seed) == (3e-4, 11, 3, 7, 7)
    assert (a.per_device_train_batch_size * a.gradient_accumulation_steps, a.gradient_accumulation_steps) == (8, 2)
    assert (a.weight_decay, a.max_grad_norm, a.lr_scheduler_type.value) == (0.05, 0.5, hf_name)
    assert (a.eval_steps, a.metric_for_best_model, a.load_best_model_at_end) == (5, "eval_dev_err", True)
    assert any(type(c).__name__ == "EarlyStoppingCallback" and c.early_stopping_patience == 2
               for c in trainer.callback_handler.callbacks)
    trainer.create_optimizer_and_scheduler(num_training_steps=a.max_steps)
    assert type(trainer.optimizer).__name__ == "AdamW"
    decayed = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    trainable = [p for p in bi.parameters() if p.requires_grad]
    assert decayed == {id(p) for p in trainable if p.ndim >= 2}  # gcl's rule: no decay on biases / LayerNorm
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(trainable)
    factor = trainer.lr_scheduler.lr_lambdas[0]
    for t in range(a.max_steps):  # the library's warm-up is one step behind gcl's, then equal
        expected = lr_factor(t, cfg.optim) if t >= 3 else (lr_factor(t - 1, cfg.optim) if t else 0.0)
        assert factor(t) == pytest.approx(expected, abs=1e-12), t


# --------------------------------------------------------------------------- early stopping
def test_early_stopping_stops_where_gcl_s_trainer_stops_and_keeps_the_best(tmp_path):
    from gcl.training.trainer import Trainer

    values = [0.5, 0.6, 0.55, 0.58, 0.9, 0.9]  # best at step 2, then 2 evaluations without improvement
    seen: list[dict] = []

    def fake_dev(record_states: bool):
        it = iter(values)

        def dev(model):
            if record_states:
                seen.append(state(model))
            return {"ndcg@10": next(it), "err": 0.0}
        return dev

    over = {"optim.steps": 6, "eval.every": 1, "eval.patience": 2}
    cfg = peer_config(tmp_path / "peer", **over)
    record = st_peers.run_peer(peer("mnrl-all", cfg), cfg, tmp_path / "peer", splits=synthetic_splits(),
                               dev_eval=fake_dev(True))
    ref = Trainer(peer_config(tmp_path / "gcl", **over), splits=synthetic_splits(), dev_eval=fake_dev(False)).fit()
    assert (ref.steps, ref.best_step, ref.stopped_early) == (4, 2, True)
    assert (record["steps"], record["best_step"], record["stopped_early"]) == (4, 2, True)
    assert record["best_metric"] == 0.6 and record["model_is_best"] and len(seen) == 4
    # the saved model is the one evaluated at step 2, not the one of step 4
    kept = state(load_model(tmp_path / "peer"))
    assert all(torch.equal(kept[n], seen[1][n]) for n in kept)
    assert not all(torch.equal(kept[n], seen[3][n]) for n in kept)


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    from transformers import TrainerCallback

    over = {"optim.steps": 4, "eval.every": -1, "checkpoint_every": 2}
    cfg = peer_config(tmp_path / "a", **over)
    trainer, _, _ = st_peers.peer_trainer(peer("mnrl-all", cfg), cfg, synthetic_splits(), tmp_path / "a")

    class Kill(TrainerCallback):  # stands for a kill after the checkpoint of step 2
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 2

    trainer.add_callback(Kill())
    trainer.train()
    record = st_peers.run_peer(peer("mnrl-all", cfg), cfg, tmp_path / "a", splits=synthetic_splits())
    assert record["resumed_from"].endswith("checkpoint-2") and record["steps"] == 4 and len(record["step_seconds"]) == 2
    cfg_b = peer_config(tmp_path / "b", **over)
    st_peers.run_peer(peer("mnrl-all", cfg_b), cfg_b, tmp_path / "b", splits=synthetic_splits())
    a, b = state(load_model(tmp_path / "a")), state(load_model(tmp_path / "b"))
    assert all(torch.equal(a[n], b[n]) for n in a)  # dropout on: the RNG states resume too


# --------------------------------------------------------------------------- command line
def write_config(tmp_path, **sections) -> Path:
    data = {"data": {"source": "synthetic"}, "model": {"text_model": str(tiny_model()), "freeze_layers": 1},
            "optim": {"steps": 2}, "eval": {"every": -1}, "batch": {"batch_size": 8}, "progress": False,
            **sections}
    path = tmp_path / "peer.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("argv_tail, needle", [
    (["--arm", "mnrl-some"], "--arm"),
    (["--arm", "cosent", "optim.stepz=3"], "optim.stepz"),
    (["--arm", "mnrl-thresholded", "--threshold", "9"], "no training pair has score >= 9"),
    (["--arm", "cosent", "optim.steps=-1"], "optim.steps"),
])
def test_user_mistakes_give_one_error_line_and_status_2(tmp_path, capsys, argv_tail, needle):
    config = write_config(tmp_path)
    argv = ["--config", str(config), "--out", str(tmp_path / "out"), *argv_tail]
    try:
        code = st_peers.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_cli_trains_then_skips_a_finished_run(tmp_path, capsys):
    config = write_config(tmp_path)
    argv = ["--arm", "mnrl-all", "--config", str(config), "--seed", "3", "--out", str(tmp_path / "out"),
            "optim.lr=1e-3"]
    assert st_peers.main(argv) == 0
    done = json.loads((tmp_path / "out" / "peer.json").read_text())
    assert (done["seed"], done["steps"], done["overrides"]) == (3, 2, ["optim.lr=1e-3"])
    assert done["config_values"]["optim"]["lr"] == 1e-3
    capsys.readouterr()
    assert st_peers.main(argv) == 0
    assert "finished already" in capsys.readouterr().out
    other = ["--arm", "cosent", *argv[2:]]
    assert st_peers.main(other) == 2
    assert "holds a finished run" in capsys.readouterr().err
