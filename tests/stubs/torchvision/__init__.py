"""A test-only stand-in for torchvision, exposing only what spandrel 0.4.2 imports.

spandrel imports torchvision at package import (its LaMa and RestoreFormer architectures use
``torchvision.transforms.functional``). On these machines torchvision cannot be installed next
to the local CPU torch build (PyPI's torchvision wheels need their matching CUDA torch), so
the tests that load community models put this folder on the path. Nothing here computes
anything: the architectures the tests run (SPAN, RealPLKSR, ESRGAN, Compact) never call it,
and a call would raise. Users install the real torchvision with ``pip install 'vidsr[models]'``.
"""

__version__ = "0.0.0+vidsr-test-stand-in"
