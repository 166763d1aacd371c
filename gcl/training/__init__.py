"""Training: :class:`Trainer` runs the GCL fine-tuning loop a :class:`TrainConfig` describes.

``load_config(TrainConfig, "configs/x.yaml", ["optim.steps=500"])`` (:func:`gcl.config.load_config`)
fills the config from YAML and ``key=value`` overrides. Names are imported on first access, so
importing this package does not load torch.
"""

from gcl.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["Trainer", "TrainResult"], "gcl.training.trainer"),
    **dict.fromkeys(["TrainConfig", "DataConfig", "ModelConfig", "LossConfig", "BatchConfig", "OptimConfig",
                     "EvalConfig"], "gcl.training.config"),
    "load_config": "gcl.config",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
