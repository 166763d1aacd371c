"""Data-parallel training (2 CPU processes, gloo, torchrun's environment) equals single-process training.

Every process encodes half of the global batch, embeddings are all-gathered and parameter
gradients summed, so with dropout 0 the first step's gradients and the weights after a few steps
must match a single process training on the same global batch of 8 — with and without GradCache.
A learnable temperature checks that parameters outside the encoder (the loss's ``logit_scale``,
whose gradient every process computes in full) are not counted once per process. Early stopping,
decided on rank 0 only, must stop every rank (else the others wait forever in all_gather).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest_trainer import assert_states_close, grads, make_config, model_state, synthetic_splits

from gcl.config import to_dict
from gcl.training.trainer import Trainer

WORKER = Path(__file__).with_name("_ddp_worker.py")
RUNS = {
    "plain": {"loss.learnable_temperature": True},
    "grad_cache": {
        "batch.grad_cache_chunk": 2,
        "batch.sampler": "query_grouped",
        "loss.hard_negatives": 2,
        "loss.same_query": "lower",
    },
    "early_stop": {"eval.every": 1, "eval.patience": 1, "optim.lr": 0.0, "optim.steps": 6},
}
TIMEOUT_S = 180
COMMON = {"batch.batch_size": 8, "optim.steps": 3, "checkpoint_every": 1000}


def _config(out_dir: Path, items: dict):
    merged = {**COMMON, **items}
    return make_config(out_dir, dropout=0.0, **{k.replace(".", "__"): v for k, v in merged.items()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Run the 2-process job once for all runs; return {name: [rank0, rank1]}.

    The two workers are started here with the environment torchrun would give them (RANK,
    WORLD_SIZE, MASTER_ADDR/PORT), so that this test owns their pids and can kill them if they
    hang (torchrun puts its workers in sessions of their own).
    """
    root = tmp_path_factory.mktemp("ddp")
    spec = {"out": str(root), "runs": [{"name": n, "config": to_dict(_config(root / n, items))} for n, items in RUNS.items()]}
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec))
    base = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    procs, logs = [], []
    for rank in (0, 1):
        log = open(root / f"worker{rank}.log", "w")
        env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(spec_path)], stdout=log, stderr=subprocess.STDOUT, env=env))
        logs.append(log)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        hung = [p for p in procs if p.poll() is None]
        for p in hung:
            p.kill()
            p.wait()
        for log in logs:
            log.close()
    tails = "\n".join(f"--- rank {r}:\n{(root / f'worker{r}.log').read_text()[-3000:]}" for r in (0, 1))
    assert not hung, f"DDP job hung (killed after {TIMEOUT_S} s):\n{tails}"
    assert all(p.returncode == 0 for p in procs), f"DDP job failed:\n{tails}"
    return {n: [torch.load(root / f"{n}-rank{r}.pt", weights_only=True) for r in (0, 1)] for n in RUNS}


def _single_process(tmp_path, name):
    t = Trainer(_config(tmp_path / name, RUNS[name]), splits=synthetic_splits())
    t.fit(stop_after=1)
    first = grads(t)
    result = t.fit()
    return first, model_state(t), result


@pytest.mark.parametrize("name", ["plain", "grad_cache"])
def test_ddp_equals_single_process(tmp_path, ddp_results, name):
    first, state, result = _single_process(tmp_path, name)
    rank0, rank1 = ddp_results[name]
    assert rank0["steps"] == rank1["steps"] == result.steps == 3
    assert_states_close(rank0["state"], rank1["state"], atol=1e-7)  # replicas in sync
    assert_states_close(first, rank0["grads"], atol=1e-5, rtol=1e-4)
    assert_states_close(state, rank0["state"], atol=1e-5)
    moved = model_state(Trainer(_config(tmp_path / "init", RUNS[name]), splits=synthetic_splits()))
    assert any(not torch.allclose(moved[k], state[k], atol=1e-4) for k in state)  # training moved the weights


def test_ddp_learnable_temperature_gradient_not_multiplied(tmp_path, ddp_results):
    first, _, _ = _single_process(tmp_path, "plain")
    ddp = ddp_results["plain"][0]["grads"]["loss.logit_scale"]
    assert first["loss.logit_scale"].abs() > 1e-4  # a sum over 2 processes would double it
    assert torch.allclose(ddp, first["loss.logit_scale"], atol=1e-6, rtol=1e-4), (ddp, first["loss.logit_scale"])


def test_ddp_early_stopping_stops_every_rank(ddp_results):
    rank0, rank1 = ddp_results["early_stop"]
    assert rank0["stopped_early"] and rank1["stopped_early"]
    assert rank0["steps"] == rank1["steps"] == 2
