"""Losses and the score-to-weight functions that feed them.

* :class:`GCLLoss` (``gcl.losses.gcl_loss``) -- weighted, masked InfoNCE over graded pairs, or
  with ``targets="soft"`` one soft-target softmax per query (``gcl.losses.soft_targets``), plus
  with ``lambda_weight > 0`` a ΔnDCG-weighted pairwise term (``gcl.losses.lambda_pairs``);
* :func:`get_weight_fn` / :data:`WEIGHT_FUNCTIONS` (``gcl.losses.weights``) -- judgments -> weights.

``GCLLoss`` is imported on first access, so ``gcl.losses.weights`` can be used without torch.
See ``docs/losses.md`` for the equations and masking rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gcl.lazy import lazy_exports
from gcl.losses.weights import (
    WEIGHT_FUNCTIONS,
    WeightFn,
    constant,
    exponential,
    get_weight_fn,
    linear,
    power,
    reciprocal_rank,
)

if TYPE_CHECKING:
    from gcl.losses.gcl_loss import GCLLoss

__all__ = ["GCLLoss", "WEIGHT_FUNCTIONS", "WeightFn", "get_weight_fn", "constant", "linear", "power", "exponential",
           "reciprocal_rank"]


__getattr__, __dir__ = lazy_exports(__name__, {"GCLLoss": "gcl.losses.gcl_loss"})
