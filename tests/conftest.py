"""Shared fixtures: the real data directory (skipped when absent) and a tiny generated dataset."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from gcl.data.schema import GradedDataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("GCL_DATA_DIR")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$GCL_DATA_DIR`` or ``<repo>/../shared/data``; the test is skipped when it is absent."""
    path = _data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set GCL_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def homedepot(data_dir: Path) -> GradedDataset:
    """The Home Depot judgments, read once per session (do not mutate; deepcopy first)."""
    from gcl.data.homedepot import read_homedepot

    path = data_dir / "homedepot" / "train.csv.xz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return read_homedepot(path)


@pytest.fixture(scope="session")
def _tiny_dataset_shared() -> GradedDataset:
    from gcl.data.synthetic import make_synthetic

    return make_synthetic(n_queries=40, n_docs=120, seed=0)


@pytest.fixture
def tiny_dataset(_tiny_dataset_shared: GradedDataset) -> GradedDataset:
    """A small generated dataset (40 queries, 120 products), a fresh copy per test."""
    return copy.deepcopy(_tiny_dataset_shared)


def _assert_same_dataset(a: GradedDataset, b: GradedDataset, *, doc_fields: list[str] | None = None) -> None:
    """Tables equal (values, order, index); ``doc_fields`` limits the document columns compared."""
    import pandas as pd

    pd.testing.assert_frame_equal(a.queries, b.queries, check_dtype=False)
    pd.testing.assert_frame_equal(a.judgments, b.judgments, check_dtype=False)
    cols = doc_fields if doc_fields is not None else list(a.documents.columns)
    pd.testing.assert_frame_equal(a.documents[cols], b.documents[cols], check_dtype=False)
    assert [f.name for f in a.query_fields] == [f.name for f in b.query_fields]


@pytest.fixture
def assert_same_dataset():
    """``assert_same_dataset(a, b, doc_fields=None)``: the two datasets hold the same tables."""
    return _assert_same_dataset


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tests of small convolutions/encoders on a loaded 2-core machine: 2 OpenMP threads make them
    far slower (barriers), so such test modules run with one torch thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _gcl_cache_dir(tmp_path_factory):
    """``gcl evaluate`` caches document embeddings under ``$GCL_CACHE_DIR``: one directory for the
    session, never the user's ~/.cache."""
    before = os.environ.get("GCL_CACHE_DIR")
    os.environ["GCL_CACHE_DIR"] = str(tmp_path_factory.mktemp("gcl-cache"))
    yield
    if before is None:
        os.environ.pop("GCL_CACHE_DIR", None)
    else:
        os.environ["GCL_CACHE_DIR"] = before
