"""One writer per index: ``gcl serve`` (``DurableIndex``) and ``gcl index build`` hold an advisory
lock beside the index directory; a second writer is refused with an error naming the first
process; the OS drops the lock when its holder dies (SIGKILL included); readers are not affected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from gcl.index import VectorIndex, open_index  # noqa: E402
from gcl.index.build import build_index  # noqa: E402
from gcl.index.locks import IndexLockedError, WriterLock, writer_lock_path  # noqa: E402
from gcl.service.durable import DurableIndex  # noqa: E402
from service_helpers import REPO_ROOT  # noqa: E402

WRITER = r"""
import sys
from gcl.service.durable import DurableIndex
store = DurableIndex(sys.argv[1])
store.upsert(["from-first"], [[0, 1, 0, 0]], [{"title": "first"}])
print("ready", flush=True)
sys.stdin.read()  # hold the index until the test closes stdin or kills us
store.close()
"""


@pytest.fixture
def index_dir(tmp_path):
    index = VectorIndex(dim=4, model="m")
    index.add(["a", "b"], [[1, 0, 0, 0], [0, 1, 0, 0]], [{"title": "A"}, {"title": "B"}])
    return index.save(tmp_path / "idx")


@pytest.fixture
def first_writer(index_dir):
    """A separate process holding ``index_dir`` open for writing (a DurableIndex, as gcl serve does)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(index_dir)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


class FakeEncoder:
    """Just enough of a model for build_index: title -> a fixed random vector."""

    doc_field_names, source, dim = ["title"], "fake", 4
    config = type("C", (), {"doc_fields": ["title"], "text_model": "fake"})()

    def field_kinds(self, side):
        return {"title": "text"}

    def encode_documents(self, documents, *, batch_size=256, **_):
        rng = np.random.default_rng(len(documents))
        return rng.normal(size=(len(documents), self.dim)).astype(np.float32)


DOCS = pd.DataFrame({"title": ["red chair", "blue lamp", "oak desk"]}, index=pd.Index(["x", "y", "z"], name="doc_id"))


def test_a_second_writer_process_is_refused_and_named(first_writer, index_dir):
    with pytest.raises(IndexLockedError, match=rf"pid {first_writer.pid} on host .*DurableIndex") as err:
        DurableIndex(index_dir)
    assert "one writer per index" in str(err.value) and str(index_dir) in str(err.value)
    holder = json.loads(writer_lock_path(index_dir).read_text())
    assert holder["pid"] == first_writer.pid and "-c" in holder["command"]
    with pytest.raises(IndexLockedError, match=rf"pid {first_writer.pid}"):
        build_index(FakeEncoder(), DOCS, index_dir, show_progress=False)
    # readers stay concurrent: load and search while the writer holds the index
    reader = open_index(index_dir)
    assert len(reader) == 2 and reader.search([[1, 0, 0, 0]], 1)[0][0].doc_id == "a"
    # a clean stop releases the lock and leaves no description behind
    first_writer.stdin.close()
    assert first_writer.wait(timeout=60) == 0
    assert writer_lock_path(index_dir).read_text() == ""
    again = DurableIndex(index_dir)
    assert "from-first" in again  # the first writer's acknowledged write is there (checkpointed on close)
    again.close()


def test_sigkill_leaves_no_stale_lock(first_writer, index_dir):
    with pytest.raises(IndexLockedError):
        DurableIndex(index_dir)
    first_writer.send_signal(signal.SIGKILL)
    first_writer.wait(timeout=30)
    assert str(first_writer.pid) in writer_lock_path(index_dir).read_text()  # the file stays, the lock does not
    store = DurableIndex(index_dir)
    assert "from-first" in store and store.replayed == 1  # replayed from the killed writer's log
    assert json.loads(writer_lock_path(index_dir).read_text())["pid"] == os.getpid()
    store.close()


def test_gcl_serve_on_a_held_index_exits_non_zero_naming_the_holder(first_writer, index_dir, capsys):
    pytest.importorskip("uvicorn")
    from gcl.cli.main import main

    assert main(["serve", "--index", str(index_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"pid {first_writer.pid}" in err and "Traceback" not in err


def test_two_writers_in_one_process_conflict_too(index_dir):
    first = DurableIndex(index_dir)
    with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
        DurableIndex(index_dir)
    first.close()
    DurableIndex(index_dir).close()


def test_a_build_holds_the_lock_while_it_runs(tmp_path):
    out = tmp_path / "built"
    seen = []

    class Probe(FakeEncoder):
        def encode_documents(self, documents, **kw):
            for attempt in (lambda: DurableIndex(out), lambda: build_index(FakeEncoder(), DOCS, out, show_progress=False)):
                with pytest.raises(IndexLockedError, match="gcl index build") as err:
                    attempt()
                seen.append(str(err.value))
            return super().encode_documents(documents, **kw)

    result = build_index(Probe(), DOCS, out, show_progress=False, batch_size=8)
    assert len(seen) == 2 and result.n_documents == 3
    assert not WriterLock(out, purpose="test").acquire().release()  # released at the end
    with WriterLock(out, purpose="someone else"):
        with pytest.raises(IndexLockedError, match="someone else"):
            build_index(FakeEncoder(), DOCS, out, show_progress=False, restart=True)
    build_index(FakeEncoder(), DOCS, out, show_progress=False, restart=True)  # free again


def test_the_lock_file_hides_secrets_and_survives_checkpoints(index_dir, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gcl", "index", "build", "--token", "user:pw", "--api-key=abc", "--out", "x"])
    store = DurableIndex(index_dir, checkpoint_every=1)
    text = writer_lock_path(index_dir).read_text()
    assert "user:pw" not in text and "abc" not in text and "--token REDACTED --api-key=REDACTED" in text
    store.upsert(["c"], [[0, 0, 1, 0]], [{}])  # a checkpoint renames the index directory ...
    assert store.checkpoints == 1
    with pytest.raises(IndexLockedError):  # ... and the lock, beside it, still holds
        DurableIndex(index_dir)
    store.close()
