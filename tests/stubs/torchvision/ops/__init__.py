"""TEST STUB of ``torchvision.ops``: only ``misc.FrozenBatchNorm2d``."""

from . import misc  # noqa: F401
