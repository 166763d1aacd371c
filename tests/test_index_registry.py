"""The vector-database registry (gcl.index.factory): a new backend is its class plus a registration,
and open_index, build_index and the service pick it by location without testing for a database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from gcl.index import factory  # noqa: E402
from gcl.index.store import VectorIndex  # noqa: E402


class MemoryBackend(factory.Backend):
    """A toy database: ``mem://NAME`` locations held in a dict, writes straight through."""

    name, options = "mem", ("collection",)
    store: dict = {}

    def __init__(self, work_root):
        self.work_root = work_root

    def claims(self, location) -> bool:
        return str(location).startswith("mem://")

    def open(self, location, **options):
        return self.store[location]

    def work_dir(self, location, collection=None):
        return self.work_root / (location.split("://", 1)[1] + ".partial")

    def create(self, location, params, **options):
        index = self.store[location] = VectorIndex(**params)
        return index, index.upsert

    def finish(self, index, location) -> None:
        pass  # held in memory

    def describe(self, index, location) -> str:
        return f"mem {len(index)}"


class Encoder:
    doc_field_names, source, dim = ["title"], None, 4

    def field_kinds(self, side):
        return {"title": "text"}

    def encode_documents(self, documents, *, batch_size=1):
        rng = np.random.default_rng(len(documents))
        return rng.normal(size=(len(documents), self.dim)).astype(np.float32)


@pytest.fixture
def mem(monkeypatch, tmp_path):
    monkeypatch.setattr(factory, "BACKENDS", dict(factory.BACKENDS))
    backend = MemoryBackend(tmp_path)
    factory.register_backend(backend)
    yield backend
    MemoryBackend.store.clear()


def test_registered_backend_is_chosen_by_location_before_the_directory_fallback(mem, tmp_path):
    assert list(factory.BACKENDS)[-1] == "faiss"  # the fallback stays last
    assert factory.backend_for("mem://a") is mem
    assert factory.backend_for(tmp_path / "dir").name == "faiss"
    assert factory.backend_for("milvus://h:19530").name == "milvus"


def test_build_and_open_go_through_the_registered_backend(mem, tmp_path):
    from gcl.index.build import build_index

    docs = pd.DataFrame({"title": [f"item {i}" for i in range(7)]}, index=[f"d{i}" for i in range(7)])
    result = build_index(Encoder(), docs, "mem://catalogue", batch_size=3, show_progress=False)
    assert result.n_documents == 7 and len(mem.store["mem://catalogue"]) == 7
    assert factory.open_index("mem://catalogue") is mem.store["mem://catalogue"]
    assert not (tmp_path / "catalogue.partial").exists()  # the shard log is removed after the build
    assert factory.backend_for("mem://catalogue").describe(result.index, "mem://catalogue") == "mem 7"


def test_directory_backend_refuses_database_options(tmp_path):
    from gcl.errors import ConfigError

    with pytest.raises(ConfigError, match="apply to a Milvus index only"):
        factory.open_index(tmp_path / "dir", collection="c")


def test_service_writes_straight_through_a_backend_without_gcl_logging(mem):
    from gcl.service.app import open_store
    from gcl.service.direct import DirectIndex
    from gcl.service.settings import ServiceSettings

    mem.store["mem://live"] = VectorIndex(dim=4)
    store = open_store(ServiceSettings(index_dir="mem://live"))
    assert isinstance(store, DirectIndex) and store.index is mem.store["mem://live"]
