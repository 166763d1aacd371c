"""gcl.data.readers._run_steps: results, dependencies, the error of a sequential run, and that a
step starts as soon as its own inputs are ready (not after unrelated slower steps)."""

from __future__ import annotations

import threading
import time

import pytest

from gcl.data import readers


@pytest.fixture(params=["serial", "threads"])
def mode(request, monkeypatch):
    if request.param == "threads":
        monkeypatch.setattr(readers, "PARALLEL_ROWS", 0)
        monkeypatch.setattr(readers.os, "cpu_count", lambda: 2)
    return request.param


def test_results_in_order_with_inputs(mode):
    out = readers._run_steps(10, [
        (lambda: 2, ()),
        (lambda: 3, ()),
        (lambda a, b: a * b, (0, 1)),
        (lambda c, a: c - a, (2, 0)),
    ])
    assert out == [2, 3, 6, 4]


def test_first_failing_step_in_order_raises(mode):
    def fail(msg):
        def step(*_):
            raise ValueError(msg)
        return step

    # step 1 fails late, step 3 fails at once: a sequential run raises step 1's error
    def slow_fail():
        time.sleep(0.2)
        raise ValueError("step 1")

    with pytest.raises(ValueError, match="step 1"):
        readers._run_steps(10, [(lambda: 1, ()), (slow_fail, ()), (lambda: 2, ()), (fail("step 3"), ())])
    # a step whose input failed raises that input's error
    with pytest.raises(ValueError, match="input"):
        readers._run_steps(10, [(fail("input"), ()), (lambda x: x, (0,))])


def test_a_step_can_only_depend_on_earlier_steps(mode):
    with pytest.raises(ValueError, match="earlier"):
        readers._run_steps(10, [(lambda x: x, (0,))])
    with pytest.raises(ValueError, match="earlier"):
        readers._run_steps(10, [(lambda: 1, ()), (lambda x: x, (2,)), (lambda: 3, ())])


def test_a_step_does_not_wait_for_steps_it_does_not_need(monkeypatch):
    """Step 2 needs only step 1; it must finish while the unrelated step 0 is still running
    (with steps run in stages, or one after another, it would start after step 0)."""
    monkeypatch.setattr(readers, "PARALLEL_ROWS", 0)
    monkeypatch.setattr(readers.os, "cpu_count", lambda: 2)
    release = threading.Event()
    seen = {}

    def slow():
        assert release.wait(10), "step 2 never ran while step 0 waited"
        return "slow"

    def dependent(x):
        seen["ran"] = x
        release.set()  # step 0 may finish only after this step has run
        return x + 1

    out = readers._run_steps(10, [(slow, ()), (lambda: 1, ()), (dependent, (1,))])
    assert out == ["slow", 1, 2] and seen == {"ran": 1}
