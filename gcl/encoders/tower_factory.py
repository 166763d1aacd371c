"""Build, save and reload a tower of any type (:class:`~gcl.encoders.config.TowerConfig` ``type``).

The one place that knows every tower class: text and EfficientNet towers from
:mod:`gcl.encoders.towers`, CLIP-style ones from :mod:`gcl.encoders.clip` (imported only for
those types). Keeping this apart from the tower classes means neither module imports the other
in a cycle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gcl.encoders.config import TowerConfig
from gcl.encoders.towers import TOWER_CONFIG_FILE, EfficientNetTower, TextTower, Tower
from gcl.errors import ConfigError


def build_tower(config: TowerConfig, dim: int | None, *, device: str = "cpu") -> Tower:
    """A fresh tower from its config (``dim=None``: the tower's native width; text towers only)."""
    if config.type == "text":
        return TextTower(config, dim, device=device).to(device)
    if config.type == "efficientnet":
        if dim is None:
            raise ConfigError("an efficientnet tower needs the model's dim (set dim, or add a text tower)")
        return EfficientNetTower(config, dim).to(device)
    from gcl.encoders.clip import build_clip_tower

    return build_clip_tower(config, dim, device=device)


def save_tower(tower: Tower, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tower.save(directory)
    (directory / TOWER_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(tower.config), indent=2))


def load_tower(directory: Path, dim: int, *, device: str = "cpu") -> Tower:
    """Reload a tower written by :func:`save_tower` (weights from ``directory``, no hub access)."""
    cfg_file = directory / TOWER_CONFIG_FILE
    if not cfg_file.is_file():
        raise ConfigError(f"{directory} is not a saved tower (no {TOWER_CONFIG_FILE})")
    config = TowerConfig.from_dict(json.loads(cfg_file.read_text()), source=str(cfg_file))
    if config.type == "text":
        return TextTower.load_saved(directory, config, dim, device=device).to(device)
    if config.type == "efficientnet":
        return EfficientNetTower.load_saved(directory, config, dim, device=device).to(device)
    from gcl.encoders.clip import load_clip_tower

    return load_clip_tower(directory, config, dim, device=device)
