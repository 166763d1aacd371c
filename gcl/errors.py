"""User-facing data errors: they name the file, row and field at fault."""

from __future__ import annotations


class GCLError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class DataError(GCLError):
    """Bad input data. ``row`` is 0-based over data rows (the header is not counted)."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.row = row
        self.field = field
        where = []
        if source:
            where.append(str(source))
        if row is not None:
            where.append(f"row {row}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class ConfigError(GCLError):
    """Bad configuration (unknown key, wrong type, incompatible resume)."""
