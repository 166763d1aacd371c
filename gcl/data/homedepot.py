"""The Home Depot Product Search Relevance data (Kaggle, 2016).

``homedepot/train.csv.xz`` (latin-1) has one judgment per row: ``id, product_uid, product_title,
search_term, relevance``. It reads as:

* query id = ``search_term`` stripped of surrounding whitespace (the query text is the id);
* document id = ``str(product_uid)``, document field ``title`` = ``product_title``;
* score = ``relevance``, the mean of at least three raters on 1..3.

Counts (checked by the tests): 74,067 judgments, 11,795 queries (stripping merges none: no
search term has surrounding whitespace), 54,667 products. 15 products appear with two different
titles; the first title is kept and the conflict is counted in ``dataset.notes``.

The data is not redistributed with gcl: download ``train.csv`` from the Kaggle competition
"home-depot-product-search-relevance", compress it with ``xz`` and put it in
``<data_dir>/homedepot/train.csv.xz`` (or pass its path).
"""

from __future__ import annotations

import os
from pathlib import Path

from gcl.errors import DataError
from gcl.data.readers import read_table
from gcl.data.schema import GradedDataset

DATA_DIR_ENV = "GCL_DATA_DIR"
HOMEDEPOT_FILE = Path("homedepot") / "train.csv.xz"


def default_data_dir() -> Path | None:
    """Where the shared data lives: ``$GCL_DATA_DIR``, else ``<repo>/../shared/data``.

    ``<repo>`` is tried relative to the installed ``gcl`` package and then to the working
    directory (the directory itself and its parents). Returns ``None`` when none exists. An
    explicitly set ``GCL_DATA_DIR`` is returned as is, even if missing, so that the error names it.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    cwd = Path.cwd().resolve()
    candidates = [repo.parent / "shared" / "data"]
    candidates += [base.parent / "shared" / "data" for base in (cwd, *cwd.parents)]
    candidates.insert(1, cwd / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def homedepot_path(data_dir: str | Path | None = None) -> Path:
    """The path of ``homedepot/train.csv.xz`` under ``data_dir`` (default :func:`default_data_dir`)."""
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    if base is None:
        raise DataError(
            f"no data directory: set {DATA_DIR_ENV} or pass data_dir= "
            f"(expected <data_dir>/{HOMEDEPOT_FILE.as_posix()})"
        )
    return base / HOMEDEPOT_FILE


def read_homedepot(path: str | Path | None = None, *, data_dir: str | Path | None = None) -> GradedDataset:
    """Read the Home Depot judgments as a :class:`GradedDataset` named ``"homedepot"``."""
    path = Path(path) if path is not None else homedepot_path(data_dir)
    if not path.exists():
        raise DataError(
            "Home Depot file not found; download train.csv from the Kaggle competition "
            "'home-depot-product-search-relevance' and save it xz-compressed at this path",
            source=str(path),
        )
    return read_table(
        path,
        query_col="search_term",
        doc_id_col="product_uid",
        score_col="relevance",
        doc_fields={"title": "product_title"},
        encoding="latin-1",
        duplicates="mean",
        name="homedepot",
    )
