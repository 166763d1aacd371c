"""The shared on-disk row store (gcl/row_store.py) through both of its users, against a naive
reference: a dict of arrays.

:class:`EmbeddingCache` keeps a key's first vector, :class:`HiddenStore` its last states; both
must give back exactly what the reference holds after puts spread over several parts, after a
reopen, and never serve a truncated part or a corrupt index as data; two writers on one
directory add to each other, serialised by their lock. Directories written in the layout of the
code before the shared base (built here by hand, byte for byte) are read as before.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import warnings

import numpy as np
import pytest

from gcl.embedding_cache import EmbeddingCache
from gcl.hidden_store import HiddenStore
from gcl.row_store import put_or_warn
from read_only import no_flock, read_only

WIDTH = 4


class Cache:
    """EmbeddingCache as a dict of (WIDTH,) vectors; a key's first vector wins."""

    label = "embedding cache"
    keep_first = True

    @staticmethod
    def open(root):
        return EmbeddingCache(root, namespace="ns")

    @staticmethod
    def open_or_warn(root):
        return EmbeddingCache.open_or_warn(root, namespace="ns")

    @staticmethod
    def args(items: dict):
        return list(items), np.stack(list(items.values()))

    @staticmethod
    def value(rng):
        return rng.standard_normal(WIDTH).astype(np.float32)

    @staticmethod
    def put(store, items: dict):
        store.put(list(items), np.stack(list(items.values())))

    @staticmethod
    def get(store, keys, ref):
        return store.get(keys)


class Hidden:
    """HiddenStore as a dict of (n, WIDTH) arrays, n varying by key; a key's last states win."""

    label = "hidden-state cache"
    keep_first = False

    @staticmethod
    def open(root):
        return HiddenStore(root, "fp")

    @staticmethod
    def open_or_warn(root):
        return HiddenStore.open_or_warn(root, "fp")

    @staticmethod
    def args(items: dict):
        return list(items), np.concatenate(list(items.values())), np.array([len(v) for v in items.values()])

    @staticmethod
    def value(rng):
        return rng.standard_normal((int(rng.integers(1, 6)), WIDTH)).astype(np.float32)

    @staticmethod
    def put(store, items: dict):
        store.put(list(items), np.concatenate(list(items.values())), np.array([len(v) for v in items.values()]))

    @staticmethod
    def get(store, keys, ref):
        lengths = np.array([len(ref[k]) if k in ref else 1 for k in keys])
        found, states = store.lookup(keys, lengths)
        return {k: np.asarray(s) for k, s in zip((k for k, f in zip(keys, found) if f), states)}


KINDS = [Cache, Hidden]


def naive_put(ref: dict, items: dict, keep_first: bool) -> None:
    for k, v in items.items():
        if not (keep_first and k in ref):
            ref[k] = v


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def start(kind, root, seed):
    """``(store, ref, rng)``: an opened store, its empty reference, a seeded generator."""
    return kind.open(root), {}, np.random.default_rng(seed)


def put_both(kind, store, ref, items: dict) -> None:
    kind.put(store, items)
    naive_put(ref, items, kind.keep_first)


def fill(kind, store, ref, rng, *, puts=5, pool=30):
    """``puts`` puts of random keys from a pool of ``pool`` (repeats across puts included)."""
    for _ in range(puts):
        keys = [f"k{i}" for i in rng.choice(pool, size=int(rng.integers(1, 10)), replace=False)]
        put_both(kind, store, ref, {k: kind.value(rng) for k in keys})


def parts_of(store):
    return sorted(store.path.glob("part-*.npy"))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_dict_across_parts_and_after_reopen(tmp_path, kind, seed):
    store, ref, rng = start(kind, tmp_path, seed)
    probe = [f"k{i}" for i in range(40)]  # ten of them never stored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fill(kind, store, ref, rng)
        assert len(parts_of(store)) > 1 and len(store) == len(ref)
        assert_same(kind.get(store, probe, ref), ref)
        del store
        again = kind.open(tmp_path)  # another process, later
        assert len(again) == len(ref)
        assert_same(kind.get(again, probe, ref), ref)
        fill(kind, again, ref, rng, puts=3)  # appending to a reopened store
        assert_same(kind.get(kind.open(tmp_path), probe, ref), ref)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("damage", ["truncated", "fewer rows", "other dtype", "not npy"])
def test_a_damaged_part_is_warned_about_and_its_keys_are_not_served(tmp_path, kind, damage):
    store, ref, rng = start(kind, tmp_path, 3)
    first = {f"a{i}": kind.value(rng) for i in range(6)}
    put_both(kind, store, ref, first)
    put_both(kind, store, ref, {f"b{i}": kind.value(rng) for i in range(6)})
    index = json.loads((store.path / "index.json").read_text())
    part = store.path / index["parts"][0]  # holds the a-keys
    arr = np.load(part)
    if damage == "truncated":
        part.write_bytes(part.read_bytes()[:150])
    elif damage == "fewer rows":
        np.save(part, arr[:-1])  # a valid file that no longer holds every row the index names
    elif damage == "other dtype":
        np.save(part, arr.astype(np.float64))
    else:
        part.write_bytes(b"garbage")
    reopened = kind.open(tmp_path)
    with pytest.warns(UserWarning, match=f"{kind.label} file .*{part.name} is unreadable"):
        got = kind.get(reopened, list(ref), ref)
    assert_same(got, {k: v for k, v in ref.items() if k.startswith("b")})  # the a-keys: missing, not garbage
    kind.put(reopened, first)  # recomputed by the caller and written anew
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(kind.get(kind.open(tmp_path), list(ref), ref), ref)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("damage", ["not json", "missing field", "entry outside the parts", "not utf-8"])
def test_a_corrupt_index_is_warned_about_and_nothing_is_served(tmp_path, kind, damage):
    store, ref, rng = start(kind, tmp_path, 4)
    fill(kind, store, ref, rng, puts=2)
    index = store.path / "index.json"
    raw = json.loads(index.read_text())
    if damage == "not json":
        index.write_text("{not json")
    elif damage == "missing field":
        del raw["parts"]
        index.write_text(json.dumps(raw))
    elif damage == "entry outside the parts":
        key = next(iter(raw["keys"]))
        raw["keys"][key][0] = len(raw["parts"])
        index.write_text(json.dumps(raw))
    else:
        index.write_bytes(b"\xff\xfe{")
    with pytest.warns(UserWarning, match=f"{kind.label} index .*index.json is unreadable"):
        broken = kind.open(tmp_path)
    assert len(broken) == 0 and kind.get(broken, list(ref), ref) == {}
    with warnings.catch_warnings():  # (the hidden-state store re-reads the index under its lock: warned again)
        warnings.simplefilter("ignore")
        kind.put(broken, ref)  # rewritten whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(kind.get(kind.open(tmp_path), list(ref), ref), ref)


def test_the_old_layouts_written_by_hand_are_read(tmp_path):
    """The files as the code before gcl/row_store.py wrote them (index bytes included)."""
    vecs = np.arange(9, dtype=np.float32).reshape(3, 3)
    ns = tmp_path / "docs-x"
    ns.mkdir()
    np.save(ns / "part-00000.npy", vecs[:2])
    np.save(ns / "part-00001.npy", vecs[2:])
    old_index = (b'{"dim": 3, "parts": ["part-00000.npy", "part-00001.npy"], '
                 b'"keys": {"a": [0, 0], "b": [0, 1], "c": [1, 0]}}')
    (ns / "index.json").write_bytes(old_index)
    cache = EmbeddingCache(tmp_path, namespace="docs-x")
    assert_same(cache.get(["a", "b", "c", "d"]), {"a": vecs[0], "b": vecs[1], "c": vecs[2]})
    # and the new code writes that layout: a fresh directory given the same puts has the same bytes
    fresh = EmbeddingCache(tmp_path / "new", namespace="docs-x")
    fresh.put(["a", "b"], vecs[:2])
    fresh.put(["b", "c"], np.stack([vecs[0], vecs[2]]))  # "b" kept as first stored
    assert (fresh.path / "index.json").read_bytes() == old_index
    for name in ("part-00000.npy", "part-00001.npy"):
        assert (fresh.path / name).read_bytes() == (ns / name).read_bytes()

    states = np.arange(12, dtype=np.float32).reshape(6, 2)
    hs = tmp_path / "hidden-fp"
    hs.mkdir()
    np.save(hs / "part-0123456789abcdef.npy", states[:5])
    np.save(hs / "part-fedcba9876543210.npy", states[5:])
    (hs / "index.json").write_text(json.dumps({
        "width": 2, "dtype": "float32", "parts": ["part-0123456789abcdef.npy", "part-fedcba9876543210.npy"],
        "keys": {"k1": [0, 0, 2], "k2": [0, 2, 3], "k3": [1, 0, 1]}}))
    found, got = HiddenStore(tmp_path, "fp").lookup(["k1", "k2", "k3", "k4"], np.array([2, 3, 1, 1]))
    assert found.tolist() == [True, True, True, False]
    for g, w in zip(got, [states[:2], states[2:5], states[5:]]):
        np.testing.assert_array_equal(g, w)
    store = HiddenStore(tmp_path, "fp")
    store.put(["k4"], states[:1], np.array([1]))
    written = json.loads((hs / "index.json").read_text())
    assert list(written) == ["width", "dtype", "parts", "keys"] and written["keys"]["k4"] == [2, 0, 1]


def test_hidden_store_writers_are_serialised_by_the_lock(tmp_path):
    """A writer waits while another holds ``index.lock``, then merges instead of overwriting."""
    a, b = HiddenStore(tmp_path, "fp"), HiddenStore(tmp_path, "fp")
    x = np.ones((2, WIDTH), np.float32)
    y = np.full((3, WIDTH), 2.0, np.float32)
    done = threading.Event()

    def write_b():
        b.put(["y"], y, np.array([3]))
        done.set()

    a.put(["x"], x, np.array([2]))
    with open(a.path / "index.lock", "a+b") as fh:  # the lock protocol on disk: flock on index.lock
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # another writer's index rewrite in progress
        t = threading.Thread(target=write_b)
        t.start()
        time.sleep(0.3)
        assert not done.is_set()  # b waits for the lock
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    t.join(timeout=30)
    assert done.is_set()  # and b, opened before a wrote, re-read a's entry under the lock: both kept
    found, got = HiddenStore(tmp_path, "fp").lookup(["x", "y"], np.array([2, 3]))
    assert found.all()
    np.testing.assert_array_equal(got[0], x)
    np.testing.assert_array_equal(got[1], y)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_two_writers_on_one_directory_add_to_each_other(tmp_path, kind):
    """Two runs opened on the same state, their puts interleaved: the directory then holds what one
    writer doing every put would hold. (The embedding cache before its lock: the second writer's
    part took the first one's file name, so the first writer's next index pointed its keys at the
    second one's vectors, served without a warning.)"""
    a, ref, rng = start(kind, tmp_path, 5)
    b = kind.open(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(6):
            fill(kind, a if step % 2 == 0 else b, ref, rng, puts=1, pool=12)
        assert_same(kind.get(kind.open(tmp_path), list(ref), ref), ref)


def test_embedding_cache_writers_are_serialised_by_a_lock_on_the_directory(tmp_path):
    a = EmbeddingCache(tmp_path, namespace="ns")
    done = threading.Event()

    def write():
        a.put(["x"], np.ones((1, 3)))
        done.set()

    fd = os.open(a.path, os.O_RDONLY)  # another writer between reading the index and rewriting it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = threading.Thread(target=write)
        t.start()
        time.sleep(0.3)
        assert not done.is_set()  # waits for the lock
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    t.join(timeout=30)
    assert done.is_set()
    assert sorted(p.name for p in a.path.iterdir()) == ["index.json", "part-00000.npy"]  # no lock file


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("how", ["chmod", "erofs"])
def test_a_read_only_directory_is_read_and_a_write_only_warns(tmp_path, kind, how, monkeypatch):
    """``GCL_CACHE_DIR`` on a read-only mount: what is there is served, a put and a namespace that
    would have to be created are warned about and nothing raises (the caller computes instead)."""
    store, ref, rng = start(kind, tmp_path, 6)
    fill(kind, store, ref, rng, puts=2)
    new = {"fresh": kind.value(rng)}
    with read_only(tmp_path, how, monkeypatch):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = kind.open(tmp_path)
            assert_same(kind.get(again, list(ref), ref), ref)
        with pytest.warns(UserWarning, match=f"could not write the {kind.label} at .*Read-only file system|"
                                             f"could not write the {kind.label} at .*Permission denied"):
            assert put_or_warn(again, *kind.args(new)) is False
        with pytest.warns(UserWarning, match=f"cannot use the {kind.label} at "):
            assert kind.open_or_warn(tmp_path / "elsewhere") is None
        assert_same(kind.get(kind.open(tmp_path), list(ref) + ["fresh"], ref), ref)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_without_flock_a_put_warns_and_still_writes(tmp_path, kind, monkeypatch):
    """A file system that refuses ``flock`` (ENOLCK): the put goes on unlocked, with a warning
    naming the lock, and the store still equals the dict (before: the OSError ended the put)."""
    no_flock(monkeypatch)
    store, ref, rng = start(kind, tmp_path, 7)
    with pytest.warns(UserWarning, match=f"{kind.label}: cannot flock .*No locks available"):
        fill(kind, store, ref, rng, puts=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(kind.get(kind.open(tmp_path), list(ref), ref), ref)


def test_unlocked_embedding_cache_writers_never_serve_each_others_vectors(tmp_path, monkeypatch):
    """Two writers at once without ``flock``: each may lose the other's new keys from the index, but
    a key that is served has its own vector (a part name is never shared, so no index can point a
    key at the other writer's rows)."""
    no_flock(monkeypatch)

    def vec(key):
        return np.full(WIDTH, float(int(key[1:])), dtype=np.float32)

    def writer(tag, offset):
        cache = EmbeddingCache(tmp_path, namespace="ns")
        for step in range(15):
            keys = [f"{tag}{offset + 100 * step + i}" for i in range(3)]
            cache.put(keys, np.stack([vec(k) for k in keys]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "cannot flock", once per put
        threads = [threading.Thread(target=writer, args=("a", 0)), threading.Thread(target=writer, args=("b", 50))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        keys = [f"{t}{o + 100 * s + i}" for t, o in (("a", 0), ("b", 50)) for s in range(15) for i in range(3)]
        got = EmbeddingCache(tmp_path, namespace="ns").get(keys)
    assert got  # the last index holds at least its own writer's keys
    for k, v in got.items():
        np.testing.assert_array_equal(v, vec(k))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_namespace_deleted_and_written_anew_is_not_read_through_old_parts(tmp_path, kind):
    """A run holds a store; the directory is deleted (the documented way to clear the cache) and
    another run writes it anew, reusing part names (``part-00000.npy`` for the embedding cache).
    After its next put re-reads the index, the first run must serve the new parts' rows, not the
    ones it held under the same names (before: the other run's keys got the first run's vectors)."""
    import shutil

    a, _, rng = start(kind, tmp_path, 8)
    kind.put(a, {"x": kind.value(rng)})
    kind.get(a, ["x"], {"x": kind.value(rng)})  # held (written or mapped) by a
    shutil.rmtree(a.path)
    b, ref, _ = start(kind, tmp_path, 9)
    put_both(kind, b, ref, {"y": kind.value(rng)})
    put_both(kind, a, ref, {"z": kind.value(rng)})  # a re-reads b's index under the lock
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(kind.get(a, ["y", "z"], ref), ref)
