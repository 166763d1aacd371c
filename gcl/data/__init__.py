"""Graded relevance data: the in-memory model, readers, splits and a generated dataset."""

from gcl.errors import ConfigError, DataError, GCLError
from gcl.data.homedepot import default_data_dir, read_homedepot
from gcl.data.marqo import (
    QUERY_KEY_SUFFIX,
    query_key,
    read_corpus,
    read_ground_truth,
    read_marqo_parquet,
    read_marqo_split,
    write_ground_truth,
    write_marqo_layout,
)
from gcl.data.readers import dataset_from_frame, read_table
from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, Field, FieldKind, GradedDataset
from gcl.data.splits import SPLIT_FILES, BenchmarkSplits, build_splits
from gcl.data.synthetic import make_synthetic

__all__ = [
    "ConfigError",
    "DataError",
    "GCLError",
    "DOC_ID",
    "QUERY_ID",
    "SCORE",
    "Field",
    "FieldKind",
    "GradedDataset",
    "read_table",
    "dataset_from_frame",
    "read_homedepot",
    "default_data_dir",
    "QUERY_KEY_SUFFIX",
    "query_key",
    "read_corpus",
    "read_marqo_split",
    "read_marqo_parquet",
    "read_ground_truth",
    "write_ground_truth",
    "write_marqo_layout",
    "SPLIT_FILES",
    "BenchmarkSplits",
    "build_splits",
    "make_synthetic",
]
