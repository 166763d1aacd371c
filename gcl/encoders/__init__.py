"""Models: one protocol (:class:`EmbeddingModel`) and one loader (:func:`load_model`) for every kind.

``BiEncoder`` (text fields, one shared text tower) and ``MultiFieldModel`` (text and image fields,
per-field towers) both implement :class:`EmbeddingModel`. Importing this package is cheap: the
model classes (torch, sentence-transformers) are imported when first named.
"""

from gcl.encoders.base import MODEL_CONFIG_FILE, EmbeddingModel, load_model
from gcl.encoders.config import BiEncoderConfig, FieldConfig, MultiFieldConfig, TowerConfig

__all__ = ["MODEL_CONFIG_FILE", "EmbeddingModel", "load_model", "BiEncoderConfig", "FieldConfig", "MultiFieldConfig",
           "TowerConfig", "BiEncoder", "MultiFieldModel"]


def __getattr__(name: str):
    if name == "BiEncoder":
        from gcl.encoders.model import BiEncoder

        return BiEncoder
    if name == "MultiFieldModel":
        from gcl.encoders.multifield import MultiFieldModel

        return MultiFieldModel
    raise AttributeError(f"module 'gcl.encoders' has no attribute {name!r}")
