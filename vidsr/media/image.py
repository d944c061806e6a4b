"""Still images: reading to and writing from float RGB(A) arrays.

Read contract: (H, W, C) float32 in [0, 1], C = 3 (RGB) or 4 (RGBA), plus the source mode so
that a greyscale image is written back as greyscale, and its bit depth: 16-bit PNGs keep 16
bits - grey, grey with alpha, RGB and RGBA alike, as Real-ESRGAN's own script keeps them.
Pillow reads and writes 8-bit images and 16-bit grey; 16-bit colour and grey-with-alpha PNGs
(which Pillow reduces to 8 bits) go through FFmpeg's PNG codec (PyAV).
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


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, or None for anything else."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


#: PNG colour types 2 (RGB), 4 (grey + alpha), 6 (RGBA) at 16 bits: their PyAV formats.
_PNG16 = {2: ("rgb48le", "RGB"), 4: ("ya16le", "LA"), 6: ("rgba64le", "RGBA")}


def _read_png16(path: Path, colour_type: int) -> ImageData:
    import av

    fmt, mode = _PNG16[colour_type]
    with av.open(str(path)) as c:
        frame = next(iter(c.decode(video=0)))
    arr = frame.reformat(format=fmt).to_ndarray().astype(np.float32) / 65535.0
    if mode == "LA":  # (H, W, 2): grey and alpha -> RGBA
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]], axis=2)
    return ImageData(np.ascontiguousarray(arr), mode, 16)


def _write_png16(path: Path, pixels: np.ndarray, mode: str) -> None:
    import av

    u16 = (np.clip(pixels, 0, 1) * 65535.0).round().astype(np.uint16)
    has_alpha = u16.shape[2] == 4
    if mode == "LA":
        u16, fmt, out = np.stack([u16[..., 0], u16[..., 3]], axis=-1), "ya16le", "ya16be"
    else:
        fmt, out = ("rgba64le", "rgba64be") if has_alpha else ("rgb48le", "rgb48be")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(u16), format=fmt)
    with av.open(str(path), "w", format="image2") as o:
        s = o.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = frame.width, frame.height, out
        for packet in [*s.encode(frame.reformat(format=out)), *s.encode(None)]:
            o.mux(packet)


def read_image(path: Path) -> ImageData:
    """Read png/jpg/webp. Raises InputError for a missing or unreadable file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    header = _png_header(path) if path.is_file() else None
    if header is not None and header[0] == 16 and header[1] in _PNG16:
        try:
            return _read_png16(path, header[1])
        except Exception as exc:
            raise InputError(f"{path}: cannot read the image ({exc})") from exc
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
    if bits == 16 and mode == "L" and fmt == "PNG" and not has_alpha:
        grey = (np.clip(pixels[..., 0], 0, 1) * 65535.0).round().astype(np.uint16)
        Image.fromarray(grey, mode="I;16").save(path, format=fmt)
        return
    if bits == 16 and fmt == "PNG":
        _write_png16(Path(path), pixels, mode)
        return
    u8 = (np.clip(pixels, 0, 1) * 255.0).round().astype(np.uint8)
    im = Image.fromarray(u8, mode="RGBA" if has_alpha else "RGB")
    if mode in ("L", "LA"):
        im = im.convert("LA" if has_alpha else "L")
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = 95
    im.save(path, format=fmt, **options)
