"""Resolve a data source name into the benchmark: train/dev plus the four evaluation splits.

Sources (``DataConfig.source`` / ``--data``):

* ``homedepot`` -- ``<data_dir>/homedepot/train.csv.xz``, split with :func:`build_splits`.
  When no data directory is given (``--data-dir`` / ``$GCL_DATA_DIR``) and the default does not
  exist, falls back to ``synthetic`` and says how to get the file; a given one must hold it.
* ``synthetic`` -- a small generated product-search set (:mod:`gcl.data.synthetic`).
* a directory in the Marqo-GS layout (``query_*_product_id_*.csv`` + ``corpus_1.json`` /
  ``corpus_2.json``, optionally ``train.csv`` / ``dev.csv`` as written by ``gcl split``).
* a CSV / JSONL / Parquet file with the column mapping of ``DataConfig``, then split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from gcl.errors import ConfigError, DataError
from gcl.data.schema import GradedDataset
from gcl.data.splits import DEFAULT_DEV_FRAC, EVAL_SPLITS, SPLIT_FILES, BenchmarkSplits, build_splits

HOMEDEPOT_HINT = (
    "Home Depot data not found. To use it, download train.csv from the Kaggle competition "
    "'home-depot-product-search-relevance', compress it with xz to <data_dir>/homedepot/train.csv.xz "
    "and pass --data-dir (or set GCL_DATA_DIR). Running on the built-in synthetic dataset instead."
)


@dataclass
class Benchmark:
    """Train/dev and evaluation splits; every evaluation split's ``documents`` is its whole corpus."""

    name: str
    train: GradedDataset | None
    dev: GradedDataset | None
    splits: dict[str, GradedDataset]
    corpus_1: pd.DataFrame | None = None
    manifest: dict | None = None

    def eval_split(self, name: str) -> GradedDataset:
        if name not in self.splits:
            raise DataError(f"split {name!r} not available in {self.name}; have {sorted(self.splits)}")
        return self.splits[name]

    def describe(self) -> dict:
        out = {"name": self.name}
        if self.manifest:
            out["seed"] = self.manifest.get("seed")
            out["sizes"] = self.manifest.get("sizes")
        return out

    @classmethod
    def from_splits(cls, s: BenchmarkSplits, name: str) -> "Benchmark":
        return cls(
            name=name,
            train=s.train,
            dev=s.dev,
            splits={n: getattr(s, n) for n in EVAL_SPLITS},
            corpus_1=s.corpus_1,
            manifest=s.manifest(),
        )


def load_dataset(cfg, announce: Callable[[str], None] | None = None) -> tuple[GradedDataset, str]:
    """The unsplit dataset named by ``cfg.source`` (not a Marqo directory)."""
    from gcl.data.homedepot import DATA_DIR_ENV, default_data_dir, read_homedepot
    from gcl.data.readers import read_table
    from gcl.data.synthetic import make_synthetic

    src = cfg.source
    if src == "synthetic":
        return make_synthetic(), "synthetic"
    if src == "homedepot":
        base = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
        if base is None or not (base / "homedepot" / "train.csv.xz").exists():
            env = f"${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV) else None
            given = "--data-dir (data.data_dir)" if cfg.data_dir else env
            if given:  # the user named a directory: do not silently substitute
                what = "holds no" if base.is_dir() else "does not exist; looked for"
                raise DataError(f"the data directory given by {given} {what} homedepot/train.csv.xz", source=str(base))
            if announce:
                announce(HOMEDEPOT_HINT)
            return make_synthetic(), "synthetic"
        return _announced(read_homedepot(data_dir=base), announce, base / "homedepot" / "train.csv.xz"), "homedepot"
    path = Path(src)
    if not path.exists():
        raise DataError("data source not found (use homedepot, synthetic, a Marqo-GS directory or a data file)", source=src)
    ds = read_table(path, query_col=cfg.query_col, doc_id_col=cfg.doc_id_col, score_col=cfg.score_col,
                    doc_fields=list(cfg.doc_fields), encoding=cfg.encoding,
                    allow_negative=cfg.allow_negative)
    return _announced(ds, announce, path), path.name


def _announced(ds: GradedDataset, announce: Callable[[str], None] | None, source: object) -> GradedDataset:
    """Pass on what reading changed (merged or dropped duplicate rows, conflicting fields): every
    note of ``ds`` but the ``read N rows`` line."""
    if announce:
        for note in ds.notes:
            if not note.startswith("read "):
                announce(f"note: {source}: {note}")
    return ds


def load_marqo_dir(directory: Path, doc_fields: list[str], *, encoding: str = "utf-8",
                   announce: Callable[[str], None] | None = None, train: bool = True) -> Benchmark:
    """The benchmark of a Marqo-layout directory. ``train=False`` skips ``train.csv`` and
    ``dev.csv`` (``train``/``dev`` are then ``None``): evaluation needs only the split files, and
    at Marqo-GS scale train.csv alone is ~4M judgments (about a third of the loaded data)."""
    from gcl.data.marqo import load_corpus, read_marqo_split

    def read(csv: Path, corpus) -> GradedDataset:
        return _announced(read_marqo_split(csv, corpus, doc_fields=doc_fields, encoding=encoding), announce, csv)

    corpora = {0: directory / "corpus_1.json", 1: directory / "corpus_2.json"}
    loaded = {}

    def shared(i: int):
        """Corpus ``i`` parsed once; every split evaluated against it shares its documents table
        (so evaluation encodes it once). A missing file stays a path: reading it names the file."""
        if i not in loaded and corpora[i].exists():
            loaded[i] = load_corpus(corpora[i], doc_fields)
        return loaded.get(i, corpora[i])

    splits = {}
    for name, stem in SPLIT_FILES.items():
        csv = directory / f"{stem}.csv"
        if csv.exists():
            i = int(stem[-1])
            splits[name] = read(csv, shared(i) if corpora[i].exists() else None)
    if not splits:
        raise DataError("no query_*_product_id_*.csv split files in the directory", source=str(directory))
    if not train:
        corpus_1 = loaded[0].documents if 0 in loaded else None
        return Benchmark(name=directory.name, train=None, dev=None, splits=splits, corpus_1=corpus_1)
    train_csv = directory / "train.csv"
    train_ds = read(train_csv, shared(0)) if train_csv.exists() else splits.get("in_domain")
    dev_csv = directory / "dev.csv"
    dev = read(dev_csv, shared(0)) if dev_csv.exists() else None
    return Benchmark(name=directory.name, train=train_ds, dev=dev, splits=splits,
                     corpus_1=train_ds.documents if train_ds is not None else None)


def load_benchmark(cfg, announce: Callable[[str], None] | None = None, *, train: bool = True) -> Benchmark:
    """Load and split the data source of ``cfg`` (a :class:`gcl.training.config.DataConfig`).

    ``train=False``: the caller needs only the evaluation splits; a Marqo-layout directory then
    does not read its ``train.csv``/``dev.csv`` (other sources are split in memory either way)."""
    src = Path(cfg.source)
    dev_frac = getattr(cfg, "dev_frac", DEFAULT_DEV_FRAC)
    if cfg.source not in ("homedepot", "synthetic") and src.is_dir():
        if dev_frac != DEFAULT_DEV_FRAC:
            raise ConfigError(f"data.dev_frac={dev_frac}: {src} is a split directory with its own dev.csv; "
                              "data.dev_frac sizes the dev split of a source gcl splits itself (leave it out)")
        return load_marqo_dir(src, list(cfg.doc_fields), encoding=cfg.encoding, announce=announce, train=train)
    ds, name = load_dataset(cfg, announce)
    return Benchmark.from_splits(build_splits(ds, dev_frac=dev_frac, seed=cfg.split_seed), name)
