"""Stand-in: the three names spandrel imports; see ``tests/stubs/torchvision/__init__.py``."""

import enum
from typing import Any


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _absent(*_args: Any, **_kwargs: Any) -> Any:
    raise NotImplementedError("test stand-in for torchvision: not computed here")


normalize = _absent
rotate = _absent
