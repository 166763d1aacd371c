"""``gcl train CONFIG [key=value ...]``: train a GCL model from a YAML config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Iterator

CONFIG_KEYS = "<config keys>"  # the epilog, generated when help is printed (see _TrainHelp)


class _TrainHelp(argparse.RawDescriptionHelpFormatter):
    """Prints the config keys with their defaults in place of the epilog placeholder."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(config_keys_text() if text == CONFIG_KEYS else text)


def config_keys_text() -> str:
    """Every key of :class:`gcl.training.config.TrainConfig` with its default, from the dataclasses."""
    from gcl.training.config import TrainConfig

    lines = ["config keys (YAML sections, or section.key=value overrides), with their defaults:"]
    lines += [f"  {key} = {_yaml_value(value)}" for key, value in config_defaults(TrainConfig())]
    return "\n".join(lines)


def config_defaults(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, default)`` for every leaf setting of a config dataclass instance."""
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from config_defaults(value, f"{key}.")
        else:
            yield key, value


def _yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value, default=str)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model with the GCL loss",
                       description="Train from a YAML config (see configs/). Overrides: section.key=value.",
                       epilog=CONFIG_KEYS, formatter_class=_TrainHelp)
    p.add_argument("config", nargs="?", default=None, help="YAML config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", help="e.g. optim.steps=500 loss.weight_fn=constant")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument("--evaluate", action="store_true", help="evaluate the final model on the four test splits")
    p.set_defaults(func=run)


def run(args) -> int:
    from gcl.cli.options import check_device, check_model, check_out_dir
    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # no file given: `gcl train a.b=1`
        config, overrides = None, [config, *overrides]
    cfg = load_config(TrainConfig, config, overrides)
    check_out_dir(cfg.out_dir, "out_dir")
    check_device(cfg.device, "device")
    if cfg.model.multifield is None:
        check_model(cfg.model.text_model, "model.text_model")
    from gcl.training.distributed import init_from_env  # torch: imported once the config is known good
    from gcl.training.trainer import Trainer

    dist = init_from_env(cfg.device)
    splits = None
    if cfg.model.multifield is None:  # read here so that what reading merged is printed (the trainer is quiet)
        from gcl.data.sources import load_benchmark

        splits = load_benchmark(cfg.data, announce=(lambda m: print(m, file=sys.stderr)) if dist.is_main else None)
    trainer = Trainer(cfg, dist=dist, splits=splits)
    result = trainer.fit(resume=args.resume)
    if dist.is_main:
        best = f", best dev {cfg.eval.metric} {result.best_metric:.4f} at step {result.best_step}" if result.best_metric is not None else ""
        print(f"trained {result.steps} steps{best}; model saved to {result.out_dir / 'final'}", file=sys.stderr)
    if args.evaluate and dist.is_main:
        from gcl.evaluation.run import evaluate_model

        model_dir = result.out_dir / ("best" if cfg.eval.keep_best and (result.out_dir / "best").exists() else "final")
        mf = cfg.model.multifield
        doc_fields = [f.name for f in mf.doc_fields] if mf is not None else \
            [f if isinstance(f, str) else f.name for f in cfg.data.doc_fields]
        device = f"cuda:{dist.local_rank}" if dist.enabled and cfg.device == "cuda" else cfg.device  # as trained
        evaluate_model(model_dir, dataclasses.replace(cfg.data, doc_fields=doc_fields), result.out_dir / "eval",
                       device=device)
    return 0
