"""Defaults of the evaluation add-ons (ordering ceilings, paired comparison): one place each.

Kept free of numpy/pandas imports so the command line can read the defaults cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CeilingSettings:
    """How the random-order ceiling is drawn: mean of ``n_shuffles`` shuffles from ``seed``."""

    n_shuffles: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_shuffles < 1:
            raise ValueError(f"n_shuffles must be >= 1, got {self.n_shuffles}")


@dataclass(frozen=True)
class CompareSettings:
    """Draw counts and seed of the paired randomisation test and bootstrap interval."""

    n_permutations: int = 10000
    n_bootstrap: int = 10000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.n_permutations < 1 or self.n_bootstrap < 1:
            raise ValueError("n_permutations and n_bootstrap must be >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")
