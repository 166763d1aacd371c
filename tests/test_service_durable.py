"""The service's write-ahead-logged index: replay, torn tails, damaged logs, interrupted saves."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("faiss")

from gcl.data.errors import DataError  # noqa: E402
from gcl.index.store import VectorIndex  # noqa: E402
from gcl.service.durable import WAL_FILE, DurableIndex, recover_interrupted_save  # noqa: E402


@pytest.fixture
def index_dir(tmp_path):
    index = VectorIndex(dim=4, model="m")
    index.add(["a", "b"], [[1, 0, 0, 0], [0, 1, 0, 0]], [{"title": "A"}, {"title": "B"}])
    return index.save(tmp_path / "idx")


def _crash(store):
    """What a kill leaves: the log as written, the writer lock released (by the OS)."""
    store.close(checkpoint=False)


def _write(store):
    store.upsert(["c", "a"], [[0, 0, 1, 0], [0, 0, 0, 2]], [{"title": "C"}, {"title": "A2"}])
    store.delete(["b", "missing"])


def test_replay_restores_unsaved_writes(index_dir):
    store = DurableIndex(index_dir)
    _write(store)
    assert store.pending == 2 and len(VectorIndex.load(index_dir)) == 2  # nothing saved yet
    _crash(store)
    again = DurableIndex(index_dir)
    assert again.replayed == 2 and sorted(again.index._label_of) == ["a", "c"]
    assert again.get("a").fields == {"title": "A2"}
    np.testing.assert_allclose(again.get("a").vector, [0, 0, 0, 1])


def test_torn_last_line_is_dropped_and_the_log_stays_appendable(index_dir):
    store = DurableIndex(index_dir)
    _write(store)
    wal = index_dir / WAL_FILE
    good = wal.read_bytes()
    wal.write_bytes(good + b"1234abcd {\"op\": \"upsert\", \"ids\": [\"zz")  # a write cut short (never acknowledged)
    _crash(store)
    again = DurableIndex(index_dir)
    assert again.replayed == 2 and "zz" not in again.index and wal.read_bytes() == good
    again.upsert(["d"], [[1, 1, 0, 0]], [{}])
    _crash(again)
    assert DurableIndex(index_dir).replayed == 3


def test_bad_checksum_on_the_last_line_is_dropped(index_dir):
    store = DurableIndex(index_dir)
    _write(store)
    wal = index_dir / WAL_FILE
    lines = wal.read_bytes().split(b"\n")
    lines[1] = b"00000000" + lines[1][8:]
    wal.write_bytes(b"\n".join(lines))
    _crash(store)
    assert DurableIndex(index_dir).replayed == 1


def test_a_damaged_line_before_the_end_is_an_error(index_dir):
    store = DurableIndex(index_dir)
    _write(store)
    wal = index_dir / WAL_FILE
    lines = wal.read_bytes().split(b"\n")
    lines[0] = lines[0][:20] + b"X" + lines[0][21:]
    wal.write_bytes(b"\n".join(lines))
    _crash(store)
    with pytest.raises(DataError, match="row 0.*damaged"):
        DurableIndex(index_dir)


def test_checkpoint_saves_and_empties_the_log(index_dir):
    store = DurableIndex(index_dir, checkpoint_every=2)
    _write(store)  # the second write triggers the checkpoint
    assert store.checkpoints == 1 and store.pending == 0 and (index_dir / WAL_FILE).stat().st_size == 0
    saved = VectorIndex.load(index_dir)
    assert sorted(saved._label_of) == ["a", "c"]
    store.upsert(["e"], [[1, 0, 1, 0]], [{}])  # the new log is in the new directory
    _crash(store)
    assert DurableIndex(index_dir).replayed == 1


def test_bad_vectors_are_refused_before_logging(index_dir):
    store = DurableIndex(index_dir)
    for bad in ([[0, 0, 0, 0]], [[np.nan, 1, 0, 0]], [[1, 0, 0]]):
        with pytest.raises(DataError):
            store.upsert(["x"], bad, [{}])
    with pytest.raises(DataError, match="distinct ids"):
        store.upsert(["x", "x"], [[1, 0, 0, 0]] * 2, [{}, {}])
    assert (index_dir / WAL_FILE).stat().st_size == 0 and store.pending == 0


def _interrupt_save_between_renames(index_dir):
    """What a kill between VectorIndex.save's two renames leaves: old copy moved away, new copy not yet in."""
    parent, name = index_dir.parent, index_dir.name
    newer = VectorIndex.load(index_dir)
    newer.add(["n"], [[1, 1, 1, 1]])
    newer.save(parent / "scratch")
    os.replace(parent / "scratch", parent / f".{name}.tmp-abc")
    (parent / f".{name}.old-xyz").mkdir()
    os.replace(index_dir, parent / f".{name}.old-xyz" / "index")


def test_recovery_installs_a_completed_checkpoint(index_dir):
    _interrupt_save_between_renames(index_dir)
    assert not index_dir.exists()
    store = DurableIndex(index_dir)
    assert "n" in store.index and len(store) == 3


def test_recovery_restores_the_old_copy_when_the_new_one_is_incomplete(index_dir):
    store = DurableIndex(index_dir)
    store.upsert(["w"], [[0, 1, 1, 0]], [{}])  # logged in the old copy
    _crash(store)
    _interrupt_save_between_renames(index_dir)
    (index_dir.parent / f".{index_dir.name}.tmp-abc" / "manifest.json").unlink()  # the new copy is incomplete
    again = DurableIndex(index_dir)
    assert "w" in again.index and "n" not in again.index and again.replayed == 1
    assert recover_interrupted_save(index_dir) is None  # nothing left to repair


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no index here"):
        DurableIndex(tmp_path / "nothing")


def test_micro_batcher_shares_calls_and_returns_each_callers_row():
    import threading
    import time

    from gcl.service.encoding import MicroBatcher

    seen = []

    def slow_square(xs):
        seen.append(list(xs))
        time.sleep(0.05)
        if -1 in xs:
            raise ValueError("bad item -1")
        return [x * x for x in xs]

    batcher = MicroBatcher(slow_square, max_batch=4)
    results, errors = {}, {}

    def call(x):
        try:
            results[x] = batcher.submit(x)
        except ValueError as exc:
            errors[x] = str(exc)

    threads = [threading.Thread(target=call, args=(x,)) for x in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {x: x * x for x in range(10)} and not errors
    assert batcher.calls == len(seen) < 10 and max(len(b) for b in seen) <= 4  # shared calls, capped
    assert sorted(x for b in seen for x in b) == list(range(10))  # each item encoded exactly once
    threads = [threading.Thread(target=call, args=(x,)) for x in (-1, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "bad item -1" in errors[-1]  # the failing batch's callers get the error; others are unaffected
    assert results.get(11) == 121 or errors.get(11) == "bad item -1"
