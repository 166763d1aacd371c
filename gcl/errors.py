"""User-facing errors and the one error rule (every layer imports them from here; importing this
module is free). The rule, with what the CLI and the service do with each kind, is ``docs/errors.md``:

* :class:`GCLError` -- any error caused by user input; the CLI prints it as one ``error:`` line
  and exits with status 2, the service answers it with a 422;
* :class:`DataError` -- bad input data: names the file (``source``), the row and the field;
* :class:`ConfigError` -- bad configuration or request: an unknown key or option, a wrong value,
  a model or index that does not fit the request, a file that is not what it should be;
* ``ValueError`` / ``TypeError`` -- a program passing a wrong argument to a library function
  (metrics, exact search, the loss): a bug of the caller, shown with its traceback;
* anything else (out of memory, a full disk, a bug) keeps its own type: code that turns a
  library's exception into a ``GCLError`` names the types it expects and lets the rest through.
"""

from __future__ import annotations

from numbers import Integral


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


def check_k(k: object, *, error: type[Exception] = ConfigError) -> int:
    """``k`` (a result count or metric cut-off) as an ``int``; ``error`` unless it is an integer >= 1.

    The index and the service raise :class:`ConfigError` (``k`` comes from a request); the metric
    functions pass ``error=ValueError`` (``k`` is a caller's argument, see the module docstring).
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise error(f"k must be a positive integer, got {k!r}")
    return int(k)
