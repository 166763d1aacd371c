"""The error classes, kept importable from their old place: they live in :mod:`gcl.errors`."""

from gcl.errors import ConfigError, DataError, GCLError

__all__ = ["ConfigError", "DataError", "GCLError"]
