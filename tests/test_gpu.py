"""The CUDA paths: run only where torch sees a GPU (skipped in CI and on the 2-core development
machine; ``experiments/device_checks.sh`` runs them on a lent GPU).

What the CPU tests prove for the CPU, proved here for ``device=cuda``: GradCache gives the plain
step's gradients, a killed-and-resumed run is bit-identical to an uninterrupted one (the CUDA RNG
state is saved and restored for dropout), training on the GPU follows training on the CPU, bf16
autocast trains and stays near fp32, and ``gcl evaluate --device cuda`` scores as the CPU does.
NCCL data parallelism needs one GPU per process (the trainer puts rank r on ``cuda:r``), so it is
not tested on a one-GPU machine.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest_trainer import assert_states_close, grads, make_config, model_state, synthetic_splits

from gcl.training.trainer import Trainer

# GCL_TEST_DEVICE=cpu runs the same checks on the CPU (a check of the tests themselves, not of CUDA)
DEVICE = os.environ.get("GCL_TEST_DEVICE", "cuda")
KIND = torch.device(DEVICE).type
pytestmark = pytest.mark.skipif(KIND == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def _exact_matmul():
    """TF32 would round fp32 products to 10 mantissa bits: off, so fp32 on the GPU is fp32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # plain flags: no CUDA needed
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _trainer(tmp_path, name, *, dropout=0.0, device=DEVICE, **items):
    cfg = make_config(tmp_path / name, dropout=dropout, device=device,
                      **{k.replace(".", "__"): v for k, v in items.items()})
    return Trainer(cfg, splits=synthetic_splits())


def _on_cpu(state: dict) -> dict:
    return {k: v.detach().float().cpu() for k, v in state.items()}


@pytest.mark.parametrize("variant", [
    {},
    {"batch.sampler": "query_grouped", "loss.hard_negatives": 2, "loss.same_query": "lower",
     "loss.learnable_temperature": True},
])
def test_grad_cache_equals_plain_step_on_cuda(tmp_path, variant):
    items = {"batch.batch_size": 16, "optim.clip_grad_norm": 0.0, **variant}
    plain = _trainer(tmp_path, "plain", **items)
    cached = _trainer(tmp_path, "gc", **items, **{"batch.grad_cache_chunk": 4})
    assert next(plain.model.parameters()).device.type == KIND
    loss_plain, loss_cached = plain.train_step(), cached.train_step()
    assert loss_plain == pytest.approx(loss_cached, abs=1e-5)
    assert_states_close(_on_cpu(grads(plain)), _on_cpu(grads(cached)), atol=1e-5, rtol=1e-4)


def test_resume_on_cuda_is_bit_identical_with_dropout(tmp_path, monkeypatch):
    # atomics in some CUDA backward kernels (embedding gradients) sum in any order: deterministic
    # kernels, so that what is compared is the restored state, not the scheduling
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    items = {"optim.steps": 6, "checkpoint_every": 3}
    straight = _trainer(tmp_path, "straight", dropout=0.1, **items)
    straight.fit()
    first = _trainer(tmp_path, "resumed", dropout=0.1, **items)
    first.fit(stop_after=3)
    resumed = _trainer(tmp_path, "resumed", dropout=0.1, **items)
    resumed.fit(resume=True)
    try:
        assert_states_close(_on_cpu(model_state(straight)), _on_cpu(model_state(resumed)))  # bit-identical
    finally:
        torch.use_deterministic_algorithms(False)


def test_training_on_the_gpu_follows_training_on_the_cpu(tmp_path):
    items = {"optim.steps": 3}
    cpu, gpu = _trainer(tmp_path, "cpu", device="cpu", **items), _trainer(tmp_path, "gpu", **items)
    start = _on_cpu(model_state(cpu))
    cpu.fit()
    gpu.fit()
    a, b = _on_cpu(model_state(cpu)), _on_cpu(model_state(gpu))
    assert_states_close(a, b, atol=1e-4, rtol=1e-3)
    assert any(not torch.allclose(start[k], a[k], atol=1e-4) for k in a)  # the steps moved the weights


def test_bf16_autocast_trains_and_stays_near_fp32(tmp_path):
    items = {"optim.steps": 3, "optim.clip_grad_norm": 0.0}
    fp32 = _trainer(tmp_path, "fp32", **items)
    bf16 = _trainer(tmp_path, "bf16", **items, **{"optim.precision": "bf16"})
    loss32, loss16 = fp32.train_step(), bf16.train_step()
    assert torch.isfinite(torch.tensor(loss16)) and loss16 == pytest.approx(loss32, rel=5e-2)
    fp32.fit()
    bf16.fit()
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # autocast: fp32 master weights
    a, b = _on_cpu(model_state(fp32)), _on_cpu(model_state(bf16))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 really ran: not the fp32 arithmetic
    assert_states_close(a, b, atol=2e-2, rtol=5e-2)


def test_evaluate_on_cuda_scores_as_on_the_cpu(tmp_path, capsys):
    from tiny_models import make_tiny_sentence_transformer

    from gcl.cli.main import main

    model = str(make_tiny_sentence_transformer(tmp_path / "tiny"))
    common = ["evaluate", "--model", model, "--data", "synthetic", "--splits", "in_domain,novel_query",
              "--n-queries", "50", "--no-progress", "--no-cache"]
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert main([*common, "--device", DEVICE, "--out", str(tmp_path / "gpu")]) == 0
    capsys.readouterr()
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["splits"] for d in ("cpu", "gpu"))
    for split in ("in_domain", "novel_query"):
        for metric, value in a[split]["reference"].items():
            assert b[split]["reference"][metric] == pytest.approx(value, abs=1e-3), (split, metric)


def test_train_with_evaluate_evaluates_on_the_training_device(tmp_path, capsys, monkeypatch):
    import gcl.evaluation.run as run
    from conftest_trainer import tiny_model

    from gcl.cli.main import main

    asked: list[str] = []
    real = run.evaluate_model
    monkeypatch.setattr(run, "evaluate_model", lambda *a, **k: asked.append(k.get("device")) or real(*a, **k))
    argv = ["train", "data.source=synthetic", f"model.text_model={tiny_model(0.0)}", "optim.steps=2",
            "batch.batch_size=8", f"device={DEVICE}", f"out_dir={tmp_path / 'run'}", "progress=false", "--evaluate"]
    assert main(argv) == 0, capsys.readouterr().err
    assert asked == [DEVICE]
    scores = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())["splits"]
    assert scores["in_domain"]["reference"]["NDCG@10"] > 0
