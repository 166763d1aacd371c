"""TEST STUB of ``torchvision.transforms.functional``: any function raises."""


def __getattr__(name):
    def _unavailable(*args, **kwargs):
        raise NotImplementedError(f"torchvision test stub: transforms.functional.{name} is not available")

    return _unavailable
