"""Where the trainer's records go: ``metrics.jsonl`` always, TensorBoard when asked.

Every record is a flat dict with an integer ``step``; the other numeric values become scalars::

    {"step": 10, "loss": 0.52, "lr": 5e-05, "pairs_per_s": 31.0, "temperature": 0.05}
    {"step": 100, "dev/ndcg@10": 0.41, "dev/err": 0.36}

JSONL is appended one line per record (a crashed run keeps every line written before the crash).
TensorBoard (``tensorboard: true`` in the config, ``pip install -e .[tensorboard]``) writes the
same scalars under ``<out_dir>/tensorboard``, tag = key; it is imported only when enabled.
Only the main process logs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gcl.errors import ConfigError


class MetricsLog:
    """``log(record)`` appends to ``<out_dir>/metrics.jsonl`` (and TensorBoard); ``close()`` flushes."""

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # torch raises ImportError when the tensorboard package is absent
                raise ConfigError("tensorboard: true needs the tensorboard package (pip install -e .[tensorboard])") from exc
            self._writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._writer is not None:
            step = int(record["step"])
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
