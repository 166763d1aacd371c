"""Data-parallel training helpers (torchrun; gloo on CPU, NCCL on CUDA).

Every process draws the same global batch (same sampler seed) and encodes its own slice of
rows. Embeddings are gathered so that every process computes the *identical* loss over the
whole global batch (every process sees all rows as negatives). :class:`_GatherRows` passes back
only the gradient of the local rows, so process r's parameter gradient is
∂L/∂e_r · ∂e_r/∂θ; summing parameter gradients over processes (:func:`all_reduce_grads`) gives
exactly the single-process gradient ∂L/∂θ on the same global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def rows(self, n: int) -> slice:
        """This process's slice of a global batch of ``n`` rows (n divisible by world size)."""
        per = n // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def init_from_env(device: str = "cpu") -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), local.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_rows(local: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every process's rows (rank order); gradient flows back to the local rows only."""
    if not info.enabled:
        return local
    return _GatherRows.apply(local)


def all_reduce_grads(params, info: DistInfo) -> None:
    """Sum parameter gradients over processes (see module docstring for why sum is exact)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every process when ``flag`` is True on any of them (a collective: all must call it)."""
    if not info.enabled:
        return bool(flag)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(bool(flag))], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
