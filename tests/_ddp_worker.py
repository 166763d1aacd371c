"""One process of the DDP test (tests/test_distributed.py), launched by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py SPEC.json

(the test starts the two ranks itself with the same environment variables torchrun sets).

``SPEC.json`` holds ``{"out": DIR, "runs": [{"name": ..., "config": <TrainConfig as a dict>}]}``.
For each run this process trains with the config (``Trainer`` joins the gloo process group via
:func:`gcl.training.distributed.init_from_env`, exactly as ``gcl train`` does), and writes
``DIR/<name>-rank<r>.pt`` with the gradients of the first step, the final weights and the result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(spec_path: str) -> int:
    torch.set_num_threads(1)
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig
    from gcl.training.distributed import init_from_env
    from gcl.training.trainer import Trainer

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    info = init_from_env("cpu")
    assert info.world_size == 2, info
    for run in spec["runs"]:
        cfg = from_dict(TrainConfig, run["config"])
        trainer = Trainer(cfg, dist=info)
        trainer.fit(stop_after=1)
        named = list(trainer.model.named_parameters()) + [
            (f"loss.{n}", p) for n, p in trainer.loss_fn.named_parameters()
        ]
        first_grads = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}
        result = trainer.fit()
        state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
        state.update({f"loss.{k}": v for k, v in trainer.loss_fn.state_dict().items()})
        torch.save(
            {"grads": first_grads, "state": state, "steps": result.steps, "stopped_early": result.stopped_early},
            out / f"{run['name']}-rank{info.rank}.pt",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
