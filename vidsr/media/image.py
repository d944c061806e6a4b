"""Still images: reading to and writing from float RGB(A) arrays with Pillow.

Read contract: (H, W, C) float32 in [0, 1], C = 3 (RGB) or 4 (RGBA), plus the source mode so
that a greyscale image is written back as greyscale. 16-bit greyscale PNGs keep 16 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidsr.errors import InputError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_ALPHA_SUFFIXES = (".png", ".webp")


@dataclass(frozen=True)
class ImageData:
    """pixels: (H, W, 3|4) float32 in [0, 1]; mode: "L", "RGB", "LA" or "RGBA" of the
    source; bits: 8 or 16."""

    pixels: np.ndarray
    mode: str
    bits: int

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> ImageData:
    """Read png/jpg/webp. Raises InputError for a missing or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_data(im)
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image (png, jpg or webp)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the image ({exc})") from exc


def _to_data(im: Image.Image) -> ImageData:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32) / 65535.0
        rgb = np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2)
        return ImageData(rgb.astype(np.float32), "L", 16)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    mode = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA"}.get(im.mode)
    if mode is None:
        mode = "RGBA" if "A" in im.getbands() else "RGB"
    target = "RGBA" if mode in ("LA", "RGBA") else "RGB"
    arr = np.asarray(im.convert(target), dtype=np.float32) / 255.0
    return ImageData(arr, mode, 8)


def write_image(path: Path, pixels: np.ndarray, mode: str, bits: int = 8) -> None:
    """Write (H, W, 3|4) float [0, 1] pixels to ``path`` in the format of its suffix,
    rounding as Real-ESRGAN does. The caller owns atomicity (``vidsr.files``)."""
    suffix = Path(path).suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(suffix)
    if fmt is None:
        raise UsageError(
            f"cannot write {suffix or 'files without a suffix'}; use .png, .jpg or .webp"
        )
    has_alpha = pixels.shape[2] == 4
    if has_alpha and suffix not in _ALPHA_SUFFIXES:
        raise UsageError(f"{suffix} cannot keep the alpha channel; write .png or .webp instead")
    if bits == 16 and mode == "L" and fmt == "PNG":
        grey = (np.clip(pixels[..., 0], 0, 1) * 65535.0).round().astype(np.uint16)
        Image.fromarray(grey, mode="I;16").save(path, format=fmt)
        return
    u8 = (np.clip(pixels, 0, 1) * 255.0).round().astype(np.uint8)
    im = Image.fromarray(u8, mode="RGBA" if has_alpha else "RGB")
    if mode in ("L", "LA"):
        im = im.convert("LA" if has_alpha else "L")
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 95
    im.save(path, format=fmt, **options)
