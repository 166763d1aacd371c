"""TEST STUB of ``torchvision.transforms``: the names open_clip imports. Building any transform
raises; gcl preprocesses images itself (gcl.data.images) and never uses these."""

from enum import Enum

from . import functional  # noqa: F401


class InterpolationMode(Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(f"torchvision test stub: {type(self).__name__} is not available")


class Normalize(_Unavailable): pass
class Compose(_Unavailable): pass
class Resize(_Unavailable): pass
class CenterCrop(_Unavailable): pass
class RandomResizedCrop(_Unavailable): pass
class ToTensor(_Unavailable): pass
class ColorJitter(_Unavailable): pass
class Grayscale(_Unavailable): pass
