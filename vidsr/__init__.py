"""vidsr: video super-resolution with the Real-ESRGAN generators.

import vidsr
result = vidsr.upscale("episode.mkv", model="realesr-animevideov3")
print(result.frames, result.output, result.bound)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "upscale"]


def __getattr__(name: str) -> Any:
    # vidsr.upscale is vidsr.api.upscale, imported on first use (torch loads only when a run
    # needs it), with its full signature for help() and editors.
    if name == "upscale":
        from vidsr.api import upscale

        return upscale
    raise AttributeError(f"module 'vidsr' has no attribute {name!r}")
