"""Helpers for the multi-field tests (imported explicitly: ``from multimodal_fixtures import ...``).

* :func:`tiny_towers` -- tower configs of a tiny text model (32-d, random BERT) and a tiny random
  EfficientNet (32 x 32 pixels);
* :func:`product_dir` -- the generated product set in the Marqo-GS layout with real PNG files
  (built once per session);
* :func:`mm_config` -- a small multi-field :class:`TrainConfig` on that set.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from conftest_trainer import config_from_items, tiny_model

from gcl.training.config import TrainConfig

_ROOT = Path(tempfile.mkdtemp(prefix="gcl-mm-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
_DIRS: dict[str, Path] = {}

TINY_IMAGE = {"type": "efficientnet", "pretrained": False, "image_size": 32, "width_coefficient": 0.25,
              "depth_coefficient": 0.25}


def tiny_towers(*, freeze_image: bool = True, dropout: float = 0.0) -> dict[str, dict]:
    return {"text": {"model": str(tiny_model(dropout))}, "image": {**TINY_IMAGE, "freeze": freeze_image}}


def product_dir() -> Path:
    """A generated Marqo-GS directory (120 products, 60 queries, 32 px PNGs), built once."""
    if "products" not in _DIRS:
        from gcl.data.synthetic_products import write_marqo_dataset

        _DIRS["products"] = write_marqo_dataset(_ROOT / "products", n_products=120, n_queries=60, image_size=32)
    return _DIRS["products"]


def multifield(*, freeze_image: bool = True, dropout: float = 0.0, image_weight: float = 0.9) -> dict:
    return {
        "towers": tiny_towers(freeze_image=freeze_image, dropout=dropout),
        "query_fields": [{"name": "query"}],
        "doc_fields": [{"name": "image_local", "tower": "image", "weight": image_weight},
                       {"name": "title", "weight": 0.1}],
    }


def mm_config(out_dir: Path | str, *, freeze_image: bool = True, dropout: float = 0.0, **overrides: Any) -> TrainConfig:
    """A multi-field TrainConfig on :func:`product_dir`; keyword names use ``__`` for dots."""
    items: dict[str, Any] = {
        "data.source": str(product_dir()),
        "model.multifield": multifield(freeze_image=freeze_image, dropout=dropout),
        "batch.batch_size": 16,
        "optim.steps": 4,
        "optim.warmup_steps": 1,
        "optim.lr": 3e-3,
        "eval.every": -1,
        "log_every": 1,
        "progress": False,
        "out_dir": str(out_dir),
    }
    return config_from_items(items, overrides)
