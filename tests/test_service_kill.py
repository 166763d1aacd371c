"""SIGKILL at random moments while writes are being acknowledged; after each restart every
acknowledged write must be there (and every acknowledged delete gone), and the index must load.

Two levels, kill times from seeded generators, checkpoints every 3 writes so kills also land
inside full saves of the index, not only between log appends:

* default tier: a bare writer process (``DurableIndex`` only, acks on stdout), killed 6 times --
  seconds, since it imports no model;
* ``-m slow``: the real ``gcl serve`` on 127.0.0.1 with HTTP writes, killed 5 times (each start
  imports sentence-transformers, ~10-25 s on the shared 2-core machine).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

pytest.importorskip("faiss")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from gcl.index.store import VectorIndex  # noqa: E402
from gcl.service.durable import DurableIndex  # noqa: E402
from service_helpers import build_tiny_index, free_port, make_documents, start_server  # noqa: E402


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, one_torch_thread):
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("kill")
    model_dir = make_tiny_sentence_transformer(root / "model")
    build_tiny_index(BiEncoder.load(model_dir), model_dir.resolve(), root / "base", make_documents(30))
    return root / "base"


class Writer(threading.Thread):
    """Sends writes one at a time until the server dies; records what was acknowledged."""

    def __init__(self, url: str, state: dict, rng: random.Random, prefix: str) -> None:
        super().__init__(daemon=True)
        self.url, self.state, self.rng, self.prefix = url, state, rng, prefix

    def run(self) -> None:
        present, deleted, uncertain = self.state["present"], self.state["deleted"], self.state["uncertain"]
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            i = 0
            while True:
                i += 1
                op = self.rng.random()
                try:
                    if op < 0.15 and present:
                        doc_id = self.rng.choice(sorted(present))
                        uncertain.add(doc_id)
                        r = client.delete(f"/documents/{doc_id}")
                        assert r.status_code == 200, r.text
                        present.pop(doc_id)
                        deleted.add(doc_id)
                    elif op < 0.35:
                        batch = {f"{self.prefix}-{i}-{j}": f"batch title {self.prefix} {i} {j}" for j in range(3)}
                        uncertain.update(batch)
                        r = client.post("/documents", json={"documents": [
                            {"id": d, "fields": {"title": t}} for d, t in batch.items()]})
                        assert r.status_code == 200, r.text
                        for d, t in batch.items():
                            present[d] = t
                            deleted.discard(d)
                    else:
                        doc_id = f"{self.prefix}-{i}"
                        title = f"title {self.prefix} {i}"
                        uncertain.add(doc_id)
                        r = client.put(f"/documents/{doc_id}", json={"fields": {"title": title}})
                        assert r.status_code == 201, r.text
                        present[doc_id] = title
                        deleted.discard(doc_id)
                except httpx.HTTPError:
                    return  # the server was killed: the last write was not acknowledged
                self.state["acked"] += 1
                uncertain.clear()


def _check(url: str, state: dict) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for doc_id, title in state["present"].items():
            r = client.get(f"/documents/{doc_id}")
            if doc_id in state["uncertain"] and r.status_code == 404:
                continue  # an unacknowledged delete may have happened
            assert r.status_code == 200 and r.json()["fields"] == {"title": title}, (doc_id, r.text)
        for doc_id in state["deleted"] - state["uncertain"]:
            assert client.get(f"/documents/{doc_id}").status_code == 404, doc_id
        # whatever the unacknowledged write did, the books now follow the server
        for doc_id in state["uncertain"]:
            r = client.get(f"/documents/{doc_id}")
            if r.status_code == 200:
                state["present"][doc_id] = r.json()["fields"]["title"]
                state["deleted"].discard(doc_id)
            else:
                state["present"].pop(doc_id, None)
        state["uncertain"].clear()
        n = client.get("/health").json()["documents"]
        assert n == 30 - len([d for d in state["deleted"] if d.startswith("d0")]) + \
            len([d for d in state["present"] if not d.startswith("d0")])


def _run(tiny_index, tmp_path, kills: int, seed: int) -> dict:
    import shutil

    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)
    rng = random.Random(seed)
    state = {"present": {}, "deleted": set(), "uncertain": set(), "acked": 0}
    args = ["--index", str(index_dir), "--checkpoint-every", "3"]
    log = tmp_path / "server.log"
    for cycle in range(kills):
        port = free_port()
        proc = start_server(args, port=port, log_path=log)
        url = f"http://127.0.0.1:{port}"
        _check(url, state)
        writer = Writer(url, state, rng, prefix=f"k{cycle}")
        writer.start()
        time.sleep(rng.uniform(0.3, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        writer.join(timeout=30)
        assert not writer.is_alive()
    VectorIndex.load(index_dir)  # the directory itself is a loadable index after the last kill
    port = free_port()
    proc = start_server(args, port=port, log_path=log)
    try:
        _check(f"http://127.0.0.1:{port}", state)
    finally:
        proc.terminate()  # a clean stop checkpoints: the saved index alone now holds everything
        proc.wait(timeout=60)
    store = DurableIndex(index_dir)
    assert store.replayed == 0
    assert all(d in store for d in state["present"]) and not any(d in store for d in state["deleted"])
    assert state["acked"] > 0
    return state


@pytest.mark.slow
def test_sigkill_of_the_server_loses_no_acknowledged_write(tiny_index, tmp_path):
    _run(tiny_index, tmp_path, kills=5, seed=0)


WRITER = r"""
import sys
import numpy as np
from gcl.service.durable import DurableIndex
store = DurableIndex(sys.argv[1], checkpoint_every=3)
i = int(sys.argv[2])
while True:
    if i % 5 == 4:
        store.delete([f"x{i - 2}"])
    else:
        store.upsert([f"x{i}"], np.random.default_rng(i).normal(size=(1, 4)), [{"i": i}])
    print(i, flush=True)
    i += 1
"""


def _expected(last_acked: int) -> tuple[set[str], set[str]]:
    puts = {f"x{i}" for i in range(last_acked + 1) if i % 5 != 4}
    dels = {f"x{i - 2}" for i in range(last_acked + 1) if i % 5 == 4}
    return puts - dels, dels


def test_sigkill_of_a_writer_process_loses_no_acknowledged_write(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from service_helpers import REPO_ROOT

    index = VectorIndex(dim=4)
    index.add(["seed"], [[1, 0, 0, 0]])
    index_dir = index.save(tmp_path / "index")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    last = -1
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(index_dir), str(last + 1)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stop_after = rng.randint(3, 40)
        acks = 0
        for line in proc.stdout:  # acknowledged writes, in order
            last, acks = int(line), acks + 1
            if acks >= stop_after:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert acks == stop_after, proc.stderr.read()
        # the writer may have acknowledged more before the kill landed: every printed line counts
        last = max([last, *(int(x) for x in proc.stdout.read().split())])
        store = DurableIndex(index_dir)
        # every acknowledged write is there; the one in flight (last + 1) may or may not be, as it
        # can be logged and fsync'ed before its acknowledgement (a delete of x{last - 1} then shows)
        states = [_expected(n) for n in (last, last + 1)]
        assert any(all(d in store for d in live) and not any(d in store for d in gone) for live, gone in states), last
        assert "seed" in store
        live = states[0][0] & states[1][0]
        for d in rng.sample(sorted(live), min(5, len(live))):
            v = np.random.default_rng(int(d[1:])).normal(size=4)
            np.testing.assert_allclose(store.get(d).vector, v / np.linalg.norm(v), atol=1e-6)
        store.close(checkpoint=False)
    assert last > 30
    VectorIndex.load(index_dir)
