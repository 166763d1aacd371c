"""Models: one protocol (:class:`EmbeddingModel`) and one loader (:func:`load_model`) for every kind.

``BiEncoder`` (text fields, one shared text tower) and ``MultiFieldModel`` (text and image fields,
per-field towers) both implement :class:`EmbeddingModel`. Importing this package is cheap: the
model classes (torch, sentence-transformers) are imported when first named.
"""

from gcl.encoders.base import MODEL_CONFIG_FILE, EmbeddingModel, load_model
from gcl.encoders.config import BiEncoderConfig, FieldConfig, MultiFieldConfig, TowerConfig
from gcl.lazy import lazy_exports

__all__ = ["MODEL_CONFIG_FILE", "EmbeddingModel", "load_model", "BiEncoderConfig", "FieldConfig", "MultiFieldConfig",
           "TowerConfig", "BiEncoder", "MultiFieldModel"]


__getattr__, __dir__ = lazy_exports(__name__, {"BiEncoder": "gcl.encoders.model", "MultiFieldModel": "gcl.encoders.multifield"})
