"""Reliability: ``gcl index build`` killed with SIGKILL at random moments, and threads sharing an index.

The kill test runs the real CLI (``gcl.cli.main.main``) in a subprocess on the synthetic corpus
(300 titles) with a fake, deterministic encoder patched in for ``BiEncoder.load`` (a vector is a
function of the title; each call sleeps a little so kills land during encoding) that appends
``pid start stop`` to a log after each batch. The test kills the process at seeded random moments
after its first batch, reads the shard log the kill left, runs the build again, and finally lets
it finish. Then: every document is in the index exactly once, every vector equals an
uninterrupted in-process build's, and the only rows encoded twice are those a killed run had
encoded but not yet checkpointed (at most ``checkpoint_every`` batches per kill); rows already in
the shard log are never encoded again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gcl.index import VectorIndex, open_index
from gcl.index.build import PROGRESS_FILE, build_index, default_work_dir

pytest.importorskip("faiss")

REPO = Path(__file__).resolve().parents[1]
BATCH, CHECKPOINT_EVERY, DIM = 16, 2, 8

ENCODER_SOURCE = textwrap.dedent('''
    import hashlib, os, time
    import numpy as np

    class FakeEncoder:
        """Deterministic title -> vector; logs each encoded batch as 'pid start stop' (encoding-order positions)."""
        dim = DIM

        def __init__(self, log_path=None, sleep=0.0, rows=None):
            self.log_path, self.sleep, self.rows = log_path, sleep, rows
            self.config = type("C", (), {"doc_fields": ["title"], "text_model": "fake", "query_fields": ["query"]})()
            self.doc_field_names, self.query_field_names, self.source = ["title"], ["query"], "fake"

        def field_kinds(self, side):
            return {"title": "text"} if side == "doc" else {"query": "text"}

        @staticmethod
        def vector(text):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)

        def encode_documents(self, documents, *, batch_size=256, show_progress=False):
            out = np.stack([self.vector(t) for t in documents["title"].astype(str)])
            if self.sleep:
                time.sleep(self.sleep)
            if self.log_path:
                first, last = self.rows[documents.index[0]], self.rows[documents.index[-1]]
                with open(self.log_path, "a") as fh:
                    fh.write(f"{os.getpid()} {first} {last + 1}\\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            return out
''').replace("DIM", str(DIM))

RUNNER = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    from fake_encoder import FakeEncoder
    from gcl.cli.main import main
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig
    import gcl.encoders.model as model

    from gcl.index.build import encoding_order
    corpus = load_benchmark(DataConfig(source="synthetic")).corpus_1
    # a batch is a run of consecutive positions in the build's encoding order (longest title first)
    rows = {d: i for i, d in enumerate(corpus.index[encoding_order(corpus, ["title"])])}
    model.BiEncoder.load = classmethod(lambda cls, name, **kw: FakeEncoder(sys.argv[2], float(sys.argv[3]), rows))
    sys.exit(main(sys.argv[4:]))
''')


@pytest.fixture(scope="module")
def helper_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("killhelper")
    (d / "fake_encoder.py").write_text(ENCODER_SOURCE)
    (d / "runner.py").write_text(RUNNER)
    return d


@pytest.fixture(scope="module")
def fake_encoder_cls(helper_dir):
    namespace: dict = {}
    exec(compile(ENCODER_SOURCE, str(helper_dir / "fake_encoder.py"), "exec"), namespace)
    return namespace["FakeEncoder"]


@pytest.fixture(scope="module")
def corpus():
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig

    return load_benchmark(DataConfig(source="synthetic")).corpus_1


def _log_rows(log: Path) -> list[tuple[int, int, int]]:
    if not log.exists():
        return []
    return [tuple(int(x) for x in line.split()) for line in log.read_text().splitlines() if line.strip()]


def _kill_and_resume(helper_dir, tmp_path, out: str, *, kills: int, seed: int):
    """Run the build, SIGKILL it up to ``kills`` times at seeded random moments, then let it finish.

    Returns the encoder log, the pid of each run in order, the shard-log row count each kill left
    behind, and the finishing run's stdout.
    """
    rng = np.random.default_rng(seed)
    log = tmp_path / "encoded.log"
    argv = ["index", "build", "--model", "fake", "--data", "synthetic", "--out", out, "--batch-size", str(BATCH),
            "--checkpoint-every", str(CHECKPOINT_EVERY), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    work = default_work_dir(out, None)
    pids, left_behind = [], []
    for attempt in range(kills + 1):
        lines_before = len(_log_rows(log))
        proc = subprocess.Popen([sys.executable, str(helper_dir / "runner.py"), str(helper_dir), str(log), "0.04", *argv],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        pids.append(proc.pid)
        if attempt < kills:
            deadline = time.monotonic() + 120
            while len(_log_rows(log)) == lines_before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)  # wait for this run's first encoded batch
            time.sleep(float(rng.uniform(0.0, 0.6)))  # then a random moment: encoding, checkpoint or final save
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=60)
                if not work.exists() and _log_rows(log):  # the build had finished: its shard log is gone
                    return _log_rows(log), pids, left_behind, "killed after it finished"
                progress = work / PROGRESS_FILE
                left_behind.append(json.loads(progress.read_text())["encoded_rows"] if progress.exists() else 0)
                continue
        stdout, stderr = proc.communicate(timeout=300)  # the last run, or one that finished before its kill
        assert proc.returncode == 0, stderr.decode()[-2000:]
        return _log_rows(log), pids, left_behind, stdout.decode()
    raise AssertionError("unreachable")


def _check_kill_run(log_rows, pids, left_behind, n_docs) -> int:
    """Asserts on the encoder log (see the module docstring); returns how many rows were encoded twice."""
    by_pid: dict[int, list[tuple[int, int]]] = {}
    for pid, a, b in log_rows:
        by_pid.setdefault(pid, []).append((a, b))
    runs = [by_pid.get(pid, []) for pid in pids]
    counts = np.zeros(n_docs, dtype=int)
    for _, a, b in log_rows:
        counts[a:b] += 1
    assert counts.min() >= 1, "some document was never encoded"
    for i, resumed_at in enumerate(left_behind):  # kill i ended run i and left `resumed_at` rows checkpointed
        if resumed_at < n_docs:
            assert runs[i + 1] and runs[i + 1][0][0] == resumed_at, (i, runs[i + 1][:2], resumed_at)
        else:
            assert not runs[i + 1], "a run re-encoded rows already in a complete shard log"
        lost = sum(b - a for a, b in runs[i] if a >= resumed_at)
        assert lost <= CHECKPOINT_EVERY * BATCH, f"kill {i}: {lost} encoded rows were not checkpointed"
    for run in runs:
        starts = [a for a, _ in run]
        assert starts == sorted(set(starts)), "a run encoded a batch twice"
    return int((counts - 1).sum())


@pytest.mark.parametrize(("backend", "kills", "seed"), [
    ("faiss", 1, 7),
    pytest.param("faiss", 4, 11, marks=pytest.mark.slow),
    pytest.param("milvus", 3, 7, marks=pytest.mark.slow),
])
def test_sigkilled_builds_resume_to_the_uninterrupted_index(backend, kills, seed, helper_dir, fake_encoder_cls,
                                                            corpus, tmp_path):
    if backend == "milvus":
        pytest.importorskip("milvus_lite")
    out = str(tmp_path / ("hd.db" if backend == "milvus" else "idx"))
    log_rows, pids, left_behind, stdout = _kill_and_resume(helper_dir, tmp_path, out, kills=kills, seed=seed)
    assert ("indexed 300 documents" in stdout or stdout == "killed after it finished") and len(left_behind) >= 1
    twice = _check_kill_run(log_rows, pids, left_behind, len(corpus))
    assert twice <= len(left_behind) * CHECKPOINT_EVERY * BATCH
    assert not default_work_dir(out).exists()  # the shard log is removed once the index is saved

    reference = build_index(fake_encoder_cls(), corpus, tmp_path / "reference", batch_size=BATCH,
                            show_progress=False).index
    index = open_index(out)
    assert len(index) == len(corpus) == len(reference)
    if backend == "faiss":
        lines = (Path(out) / "documents.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["id"] for line in lines) == sorted(corpus.index)  # each id once
    for doc_id, title in corpus["title"].items():
        got, want = index.get(doc_id), reference.get(doc_id)
        np.testing.assert_array_equal(got.vector, want.vector)
        assert got.fields == want.fields == {"title": title}
    q = np.random.default_rng(0).normal(size=(5, DIM))
    assert [[h.doc_id for h in r] for r in index.search(q, 10)] == [[h.doc_id for h in r] for r in reference.search(q, 10)]
    if backend == "milvus":
        index.close()


# ---------------------------------------------------------------------- threads
@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_concurrent_writes_and_searches_leave_a_consistent_index(kind, tmp_path):
    """4 writer threads (add / upsert / delete on disjoint id ranges) and 4 searcher threads at once.

    Afterwards the index equals a single-threaded replay of the writes, every search returned
    well-formed hits of live-or-recently-deleted ids, and nothing raised. Without the index's
    lock, faiss adds racing searches and the id dicts changing under a search fail this test.
    """
    dim, per_writer, n_writers = 16, 150, 4
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n_writers, per_writer, dim)).astype(np.float32)
    index = VectorIndex(dim=dim, kind=kind, hnsw_m=8, ef_construction=40, ef_search=32)
    errors: list[BaseException] = []
    stop = threading.Event()
    all_ids = {f"w{w}-{i}" for w in range(n_writers) for i in range(per_writer)}

    def writer(w: int) -> None:
        try:
            ids = [f"w{w}-{i}" for i in range(per_writer)]
            for i in range(0, per_writer, 10):
                index.add(ids[i : i + 10], vectors[w, i : i + 10], [{"w": w, "i": j} for j in range(i, i + 10)])
            for i in range(0, per_writer, 3):  # replace every third with its negation
                index.upsert([ids[i]], -vectors[w, i], [{"w": w, "i": i, "v": 2}])
            index.delete([ids[i] for i in range(1, per_writer, 3)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def searcher(s: int) -> None:
        r = np.random.default_rng(100 + s)
        try:
            while not stop.is_set():
                hits = index.search(r.normal(size=(4, dim)), 10, filters={"w": str(s)} if s % 2 else None)
                for row in hits:
                    scores = [h.score for h in row]
                    assert scores == sorted(scores, reverse=True)
                    assert all(h.doc_id in all_ids and h.fields["w"] == int(h.doc_id[1]) for h in row)
                index.get(f"w{s}-0")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    searchers = [threading.Thread(target=searcher, args=(s,)) for s in range(4)]
    for t in searchers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    for t in searchers:
        t.join(timeout=60)
    assert not errors, errors[:3]

    expected = {}
    for w in range(n_writers):
        for i in range(per_writer):
            if i % 3 == 1:
                continue
            expected[f"w{w}-{i}"] = (-vectors[w, i] if i % 3 == 0 else vectors[w, i])
    assert len(index) == len(expected)
    for doc_id, v in expected.items():
        np.testing.assert_allclose(index.get(doc_id).vector, v / np.linalg.norm(v), atol=1e-6)
    index.save(tmp_path / "idx")
    again = VectorIndex.load(tmp_path / "idx")  # load() checks faiss labels == documents + tombstones
    assert len(again) == len(expected)
    exact = VectorIndex(dim=dim)
    ids = sorted(expected)
    exact.add(ids, np.stack([expected[d] for d in ids]))
    q = np.random.default_rng(5).normal(size=(20, dim))
    if kind == "exact":
        assert ({h.doc_id for r in again.search(q, 10) for h in r} == {h.doc_id for r in exact.search(q, 10) for h in r})
