"""TEST STUB of ``torchvision.ops.misc``: ``FrozenBatchNorm2d`` (imported by open_clip.utils, used
only to freeze ResNet towers; building it raises)."""

import torch


class FrozenBatchNorm2d(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("torchvision test stub: FrozenBatchNorm2d is not available")
