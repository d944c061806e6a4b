"""vidsr: video super-resolution with the Real-ESRGAN generators.

import vidsr
result = vidsr.upscale("episode.mkv", model="realesr-animevideov3")
print(result.frames, result.output, result.bound)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "upscale"]


def upscale(*args: Any, **kwargs: Any) -> Any:
    """See ``vidsr.api.upscale`` (imported on first use: torch loads only when needed)."""
    from vidsr.api import upscale as _upscale

    return _upscale(*args, **kwargs)


upscale.__doc__ = "Upscale a video or image; see vidsr.api.upscale for every option."
