"""Lazy package attributes (PEP 562): a package names what it exports without importing it.

``__getattr__, __dir__ = lazy_exports(__name__, {"Trainer": "gcl.training.trainer", ...})`` in a
package's ``__init__`` makes ``package.Trainer`` import ``gcl.training.trainer`` on first access
(and cache it in the package), so importing the package itself stays cheap.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``table`` maps an exported name to its module."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
