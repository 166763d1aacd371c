"""The benchmark split builder: partition properties, determinism, the written layout."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gcl.data import ConfigError
from gcl.data.marqo import read_marqo_split
from gcl.data.splits import ALL_SPLITS, SPLIT_FILES, build_splits
from gcl.data.synthetic import make_synthetic

PARTS = ("train", "dev", "novel_query", "novel_corpus", "zero_shot")


def _key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["query_id", "doc_id"]).reset_index(drop=True)


def _check_partition(ds, s) -> None:
    queries, docs = set(ds.queries.index), set(ds.documents.index)
    q0, q1, d0, d1 = set(s.q0), set(s.q1), set(s.d0), set(s.d1)
    assert q0 | q1 == queries and not q0 & q1
    assert d0 | d1 == docs and not d0 & d1
    assert set(s.dev_queries) <= q0
    train_q, train_d = set(s.train.judgments["query_id"]), set(s.train.judgments["doc_id"])
    assert not train_q & q1, "a novel query leaked into train"
    assert not train_d & d1, "a novel-corpus document leaked into train"
    assert not train_q & set(s.dev_queries), "a dev query leaked into train"
    assert set(s.dev.judgments["query_id"]) <= set(s.dev_queries)
    axes = {"novel_query": (q1, d0), "novel_corpus": (q0, d1), "zero_shot": (q1, d1), "in_domain": (q0, d0)}
    for name, (qs, docs_) in axes.items():
        j = getattr(s, name).judgments
        assert set(j["query_id"]) <= qs and set(j["doc_id"]) <= docs_, name
    # every judgment lands in exactly one part
    parts = pd.concat([getattr(s, p).judgments for p in PARTS], ignore_index=True)
    pd.testing.assert_frame_equal(_key(parts), _key(ds.judgments))
    assert sum(v for k, v in s.accounting().items() if k != "source") == len(ds.judgments)
    # in_domain = train + dev
    pd.testing.assert_frame_equal(
        _key(s.in_domain.judgments), _key(pd.concat([s.train.judgments, s.dev.judgments], ignore_index=True))
    )
    # corpora: all of D0 / D1, judged or not; each split is evaluated against its whole corpus
    assert set(s.corpus_1.index) == d0 and set(s.corpus_2.index) == d1
    for name in ("train", "dev", "in_domain", "novel_query"):
        assert getattr(s, name).documents is s.corpus_1
    for name in ("novel_corpus", "zero_shot"):
        assert getattr(s, name).documents is s.corpus_2
    for name in ALL_SPLITS:  # queries table = the judged queries
        split = getattr(s, name)
        assert set(split.queries.index) == set(split.judgments["query_id"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_queries=st.integers(5, 60),
    n_docs=st.integers(12, 120),
    data_seed=st.integers(0, 3),
    seed=st.integers(0, 1000),
    qf=st.floats(0.1, 0.9),
    df=st.floats(0.1, 0.9),
    dev=st.floats(0.0, 0.5),
)
def test_partition_properties(n_queries, n_docs, data_seed, seed, qf, df, dev):
    ds = make_synthetic(n_queries=n_queries, n_docs=n_docs, seed=data_seed)
    s = build_splits(ds, query_frac_train=qf, doc_frac_train=df, dev_frac=dev, seed=seed)
    _check_partition(ds, s)
    assert len(s.q0) == round(qf * n_queries)
    assert len(s.d0) == round(df * n_docs)


def test_default_fractions(tiny_dataset):
    s = build_splits(tiny_dataset)
    assert (len(s.q0), len(s.q1), len(s.dev_queries)) == (32, 8, 2)
    assert (len(s.d0), len(s.d1)) == (60, 60)
    _check_partition(tiny_dataset, s)


def test_deterministic_and_seed_dependent(tiny_dataset):
    a, b = build_splits(tiny_dataset, seed=3), build_splits(tiny_dataset, seed=3)
    for name in ALL_SPLITS:
        pd.testing.assert_frame_equal(getattr(a, name).judgments, getattr(b, name).judgments)
    c = build_splits(tiny_dataset, seed=4)
    assert list(a.q0) != list(c.q0) and list(a.d0) != list(c.d0)


def test_independent_of_row_order(tiny_dataset):
    shuffled = tiny_dataset.subset()
    shuffled.queries = shuffled.queries.sample(frac=1.0, random_state=0)
    shuffled.documents = shuffled.documents.sample(frac=1.0, random_state=0)
    a, b = build_splits(tiny_dataset, seed=1), build_splits(shuffled, seed=1)
    assert list(a.q0) == list(b.q0) and list(a.d0) == list(b.d0)


@pytest.mark.parametrize(
    "kwargs", [{"query_frac_train": 1.0}, {"doc_frac_train": 0.0}, {"dev_frac": 1.0}, {"dev_frac": -0.1}]
)
def test_bad_fractions(tiny_dataset, kwargs):
    with pytest.raises(ConfigError):
        build_splits(tiny_dataset, **kwargs)


def test_write_layout_and_manifest(tiny_dataset, tmp_path, assert_same_dataset):
    s = build_splits(tiny_dataset, seed=7)
    manifest_path = s.write(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "splits.json",
        "corpus_1.json",
        "corpus_2.json",
        "train.csv",
        "dev.csv",
        *(f"{stem}.csv" for stem in SPLIT_FILES.values()),
    }
    manifest = json.loads(manifest_path.read_text())
    assert manifest["seed"] == 7
    assert manifest["sizes"] == s.sizes()
    assert manifest["judgments"]["source"] == len(tiny_dataset.judgments)
    assert manifest["files"]["novel_corpus"] == "query_0_product_id_1.csv"
    for name, corpus in (("train", "corpus_1"), ("in_domain", "corpus_1"), ("zero_shot", "corpus_2")):
        split = getattr(s, name)
        back = read_marqo_split(
            tmp_path / manifest["files"][name], tmp_path / f"{corpus}.json", query_id_col="query_id"
        )
        assert_same_dataset(split, back, doc_fields=["title"])


def test_homedepot_splits(homedepot):
    s = build_splits(homedepot, seed=0)
    _check_partition(homedepot, s)
    sizes = s.sizes()
    # the table in docs/data.md
    assert {k: v["judgments"] for k, v in sizes.items()} == {
        "train": 27965,
        "dev": 1498,
        "in_domain": 29463,
        "novel_query": 7522,
        "novel_corpus": 29438,
        "zero_shot": 7644,
    }
    assert (len(s.q0), len(s.q1), len(s.dev_queries), len(s.d0), len(s.d1)) == (9436, 2359, 472, 27334, 27333)


# ------------------------------------------------------------------ data.dev_frac (training configs)

def test_dev_frac_sizes_dev_and_leaves_the_test_splits_alone():
    """``data.dev_frac`` moves training queries into dev; the four test splits are unchanged."""
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig

    base = load_benchmark(DataConfig(source="synthetic"))
    big = load_benchmark(DataConfig(source="synthetic", dev_frac=0.2))
    n_q0 = len(set(base.train.queries.index) | set(base.dev.queries.index))
    assert len(base.dev.queries) == round(0.05 * n_q0)
    assert len(big.dev.queries) == round(0.2 * n_q0)
    assert set(base.dev.queries.index) < set(big.dev.queries.index)  # the first n of one permutation
    assert set(big.train.queries.index) == set(base.train.queries.index) - set(big.dev.queries.index)
    assert set(big.train.queries.index).isdisjoint(big.dev.queries.index)
    for name, split in base.splits.items():
        other = big.splits[name]
        assert split.judgments.reset_index(drop=True).equals(other.judgments.reset_index(drop=True)), name
        assert split.documents.index.equals(other.documents.index), name


def test_dev_frac_defaults_agree():
    import inspect

    from gcl.cli.main import build_parser
    from gcl.data.splits import DEFAULT_DEV_FRAC
    from gcl.training.config import DataConfig

    assert DataConfig().dev_frac == DEFAULT_DEV_FRAC
    assert inspect.signature(build_splits).parameters["dev_frac"].default == DEFAULT_DEV_FRAC
    args = build_parser().parse_args(["split", "--data", "synthetic", "--out", "x"])
    assert args.dev_frac == DEFAULT_DEV_FRAC


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_dev_frac_out_of_range_is_a_config_error(value, tmp_path, capsys):
    from gcl.cli.main import main

    assert main(["train", "data.source=synthetic", f"data.dev_frac={value}", f"out_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "data.dev_frac" in err and "Traceback" not in err


def test_dev_frac_on_a_split_directory_is_refused(tmp_path):
    from gcl.data.sources import load_benchmark
    from gcl.training.config import DataConfig

    build_splits(make_synthetic(n_queries=40, n_docs=80, seed=0), seed=0).write(tmp_path / "split")
    load_benchmark(DataConfig(source=str(tmp_path / "split")))  # the default: its own dev.csv
    with pytest.raises(ConfigError, match="own dev.csv"):
        load_benchmark(DataConfig(source=str(tmp_path / "split"), dev_frac=0.2))


def test_no_dev_queries_with_dev_evaluation_is_a_config_error(tmp_path, capsys):
    """data.dev_frac=0 leaves no dev queries: evaluating on them is refused up front (it used to
    log nan as the best dev metric); with eval.every=-1 the run trains."""
    from conftest_trainer import tiny_model

    from gcl.cli.main import main

    common = ["train", "data.source=synthetic", "data.dev_frac=0", f"model.text_model={tiny_model(0.1)}",
              "optim.steps=1", "batch.batch_size=8", "progress=false"]
    assert main(common + [f"out_dir={tmp_path / 'a'}"]) == 2  # eval.every 0: evaluate at the end
    err = capsys.readouterr().err
    assert "dev split has no queries" in err and "eval.every=-1" in err and "Traceback" not in err
    assert main(common + ["eval.every=-1", f"out_dir={tmp_path / 'b'}"]) == 0
    assert (tmp_path / "b" / "final").is_dir()
