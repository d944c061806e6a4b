"""Colour policy: the one module that decides how YUV becomes RGB and back.

Policy
------
* The YUV->RGB matrix and range come from the source's tags. An untagged (or unusable) matrix
  falls back by resolution: HD (height >= 720 or width >= 1280) -> BT.709, else BT.601.
  An untagged range is limited ("tv"); ``yuvj*``, RGB and grey formats are full range.
* RGB->YUV uses the same matrix and range, and the output is tagged with them (see
  :func:`output_tags`), so a player never has to guess - an untagged SD source upscaled to HD
  would otherwise be shown with BT.709 and shift colour.
* Transfer and primaries are only tags: no transfer/gamut conversion is done, the values are
  passed through as they are (an HDR source stays HDR-coded, and is tagged as such).

Array contracts
---------------
* RGB arrays are ``(H, W, 3)`` (or ``(N, H, W, 3)`` for batches), channel order R, G, B,
  C-contiguous, full range: ``uint8`` 0..255 for 8-bit sources, ``uint16`` 0..65535 for
  sources with more than 8 bits, ``float32`` 0..1 where the name says float.
* Torch tensors are ``(N, 3, H, W)`` float32 in [0, 1] on the requested device.

How (and why not swscale's YUV<->RGB)
-------------------------------------
swscale (FFmpeg 8.1 in the PyAV 18.1 wheel) only resamples chroma here (4:2:0 <-> 4:4:4 at the
same bit depth, ``BILINEAR|ACCURATE_RND``: MPEG-2/H.264 siting, left horizontally and centred
vertically - measured exact on even sizes); the matrix and range are applied in numpy (float32),
exactly as written in the standards. Measured reasons, on real decoded frames:

* ``rgb24`` output wraps around for extreme (illegal but decodable) YUV values: Y=247, U=250
  in limited BT.709 gives blue 0 instead of 255, with every flag combination tried.
* ``rgb24`` output from 4:2:0 without ``FULL_CHR_H_INT`` is off by up to 3 levels on flat
  colours; with it, the 10-bit BT.2020 path wraps.
* ``rgb48le`` output is scaled by bit shifts, not to 0..65535 (limited white -> 65283, full
  10-bit white -> 65472, 8-bit grey -> 65280), and with ``BILINEAR`` alone, with
  ``FULL_CHR_H_INT``, or at odd widths it returned garbage on testsrc2 frames (mean error 37).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

if TYPE_CHECKING:
    import torch

# FFmpeg's AVColorSpace / AVColorRange / AVColorPrimaries / AVColorTransferCharacteristic codes.
MATRIX_RGB = 0
MATRIX_BT709 = 1
MATRIX_UNSPECIFIED = 2
MATRIX_FCC = 4
MATRIX_BT470BG = 5
MATRIX_SMPTE170M = 6
MATRIX_SMPTE240M = 7
MATRIX_BT2020_NCL = 9
MATRIX_BT2020_CL = 10

RANGE_UNSPECIFIED = 0
RANGE_LIMITED = 1  # "tv", MPEG
RANGE_FULL = 2  # "pc", JPEG

PRIMARIES_UNSPECIFIED = 2
TRANSFER_UNSPECIFIED = 2

MATRIX_NAMES = {
    0: "gbr",
    1: "bt709",
    2: "unknown",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
}
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}
PRIMARIES_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
TRANSFER_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}


@dataclass(frozen=True)
class ColourTags:
    """FFmpeg colour codes: ``primaries``, ``transfer``, ``matrix`` (AVColorSpace), ``range``
    (0 unspecified, 1 limited/tv, 2 full/pc)."""

    primaries: int = PRIMARIES_UNSPECIFIED
    transfer: int = TRANSFER_UNSPECIFIED
    matrix: int = MATRIX_UNSPECIFIED
    range: int = RANGE_UNSPECIFIED

    def names(self) -> dict[str, str]:
        """The ffmpeg names (``bt709``, ``tv`` ...), for messages and ffmpeg options."""
        return {
            "primaries": PRIMARIES_NAMES.get(self.primaries, str(self.primaries)),
            "transfer": TRANSFER_NAMES.get(self.transfer, str(self.transfer)),
            "matrix": MATRIX_NAMES.get(self.matrix, str(self.matrix)),
            "range": RANGE_NAMES.get(self.range, str(self.range)),
        }


def is_hd(width: int, height: int) -> bool:
    """The resolution fallback's notion of HD: height >= 720 or width >= 1280."""
    return height >= 720 or width >= 1280


def is_rgb_format(pix_fmt: str) -> bool:
    """True for pixel formats that hold RGB (or palette/grey) rather than YUV."""
    fmt = av.VideoFormat(pix_fmt)
    return bool(fmt.is_rgb or fmt.has_palette or pix_fmt.startswith(("gray", "ya", "gbr")))


def bit_depth(pix_fmt: str) -> int:
    """Bits per component of ``pix_fmt`` (8 for yuv420p, 10 for yuv420p10le, ...)."""
    fmt = av.VideoFormat(pix_fmt)
    return max((c.bits for c in fmt.components), default=8)


def effective_matrix(matrix: int, width: int, height: int, pix_fmt: str = "yuv420p") -> int:
    """The matrix actually used: the tag if it is a YUV matrix we know, else BT.709 for HD and
    BT.601 (smpte170m) for SD. RGB pixel formats need none and report ``MATRIX_RGB``."""
    if is_rgb_format(pix_fmt):
        return MATRIX_RGB
    if matrix in _KRKB:
        return matrix
    return MATRIX_BT709 if is_hd(width, height) else MATRIX_SMPTE170M


def effective_range(colour_range: int, pix_fmt: str = "yuv420p") -> int:
    """The range actually used: full for ``yuvj*``/RGB formats (whatever the tag says), else
    the tag, else limited."""
    if pix_fmt.startswith("yuvj") or is_rgb_format(pix_fmt):
        return RANGE_FULL
    if colour_range in (RANGE_LIMITED, RANGE_FULL):
        return colour_range
    return RANGE_LIMITED


def output_tags(source: ColourTags, *, width: int, height: int, pix_fmt: str) -> ColourTags:
    """Tags for the upscaled output: the source's primaries/transfer, and the matrix/range
    the conversion really used (so an untagged source gets explicit tags; ``width``/``height``
    are the SOURCE size, which decided the fallback)."""
    if is_rgb_format(pix_fmt):  # an RGB source encoded to YUV: matrix by size, limited range
        matrix = MATRIX_BT709 if is_hd(width, height) else MATRIX_SMPTE170M
        colour_range = RANGE_LIMITED
    else:
        matrix = effective_matrix(source.matrix, width, height, pix_fmt)
        colour_range = effective_range(source.range, pix_fmt)
    return ColourTags(
        primaries=source.primaries, transfer=source.transfer, matrix=matrix, range=colour_range
    )


# Luma coefficients (kr, kb) per matrix.
_KRKB = {
    MATRIX_BT709: (0.2126, 0.0722),
    MATRIX_FCC: (0.30, 0.11),
    MATRIX_BT470BG: (0.299, 0.114),
    MATRIX_SMPTE170M: (0.299, 0.114),
    MATRIX_SMPTE240M: (0.212, 0.087),
    MATRIX_BT2020_NCL: (0.2627, 0.0593),
    MATRIX_BT2020_CL: (0.2627, 0.0593),  # constant luminance approximated by the NCL matrix
}
_FLAGS = int(Interpolation.BILINEAR | Interpolation.ACCURATE_RND)


def _planar444(bits: int) -> tuple[str, int]:
    """The planar 4:4:4 format (and its bit depth) that holds ``bits``-bit YUV losslessly."""
    if bits <= 8:
        return "yuv444p", 8
    if bits <= 10:
        return "yuv444p10le", 10
    if bits <= 12:
        return "yuv444p12le", 12
    return "yuv444p16le", 16


def _levels(bits: int, colour_range: int) -> tuple[float, float, float]:
    """(black, luma span, chroma span) in ``bits``-bit codes; chroma is centred at 2**(bits-1)."""
    if colour_range == RANGE_FULL:
        peak = float((1 << bits) - 1)
        return 0.0, peak, peak
    s = float(1 << (bits - 8))
    return 16.0 * s, 219.0 * s, 224.0 * s


def _plane(plane: Any, dtype: Any, width: int | None = None) -> np.ndarray:
    """A writable ``(height, width)`` view of a frame plane (``width`` samples a row: more
    than the plane's own width for interleaved chroma, whose plane width counts pairs)."""
    itemsize = np.dtype(dtype).itemsize
    arr = np.frombuffer(plane, dtype)
    return arr.reshape(plane.height, plane.line_size // itemsize)[:, : width or plane.width]


def _quantise(x: np.ndarray, peak: float, dtype: Any) -> np.ndarray:
    """Float in units of ``peak`` -> rounded, clipped integers (in place on ``x``)."""
    np.rint(x, out=x)
    np.clip(x, 0.0, peak, out=x)
    return x.astype(dtype)


def _kind(pix_fmt: str) -> str:
    """Which conversion a pixel format needs: ``yuv`` (a matrix), ``gray`` or ``rgb``."""
    if pix_fmt.startswith(("gray", "ya")):
        return "gray"
    return "rgb" if is_rgb_format(pix_fmt) else "yuv"


class ToRGB:
    """Decoded frames -> RGB ndarray, with an explicit matrix and range.

    ``__call__(frame)`` returns ``(H, W, 3)`` RGB, full range, C-contiguous: ``uint8`` 0..255
    when ``high_bit_depth`` is false, else ``uint16`` 0..65535 (``to_float=True`` gives float32
    0..1 instead, skipping the quantisation). The frame's own tags are ignored: ``matrix`` and
    ``colour_range`` (normally the stream's :func:`effective_matrix`/:func:`effective_range`)
    are used. One instance per stream reuses its swscale context.
    """

    def __init__(
        self, *, matrix: int, colour_range: int, high_bit_depth: bool, to_float: bool = False
    ) -> None:
        self.matrix = matrix if matrix in _KRKB else MATRIX_BT709
        self.colour_range = RANGE_FULL if colour_range == RANGE_FULL else RANGE_LIMITED
        self.high_bit_depth = high_bit_depth
        self.to_float = to_float
        self.peak = 65535.0 if high_bit_depth else 255.0
        self.dtype = np.uint16 if high_bit_depth else np.uint8
        self._rf = VideoReformatter()

    def _finish(self, x: np.ndarray) -> np.ndarray:
        """float32 RGB in [0, 1] (unclipped) -> the output contract."""
        if self.to_float:
            return np.clip(x, 0.0, 1.0, out=x)
        x *= self.peak
        return _quantise(x, self.peak, self.dtype)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        name = frame.format.name
        kind = _kind(name)
        bits = bit_depth(name)
        if kind == "rgb":
            fmt = "rgb24" if bits <= 8 else "rgb48le"
            rgb = self._rf.reformat(frame, format=fmt).to_ndarray()
            if not self.to_float and (rgb.dtype == np.uint8) == (not self.high_bit_depth):
                return np.ascontiguousarray(rgb)
            x = rgb.astype(np.float32) * np.float32(1.0 / (255 if bits <= 8 else 65535))
            return self._finish(x)
        if kind == "gray":
            gray_fmt = "gray" if bits <= 8 else "gray16le" if bits > 12 else f"gray{bits}le"
            if name != gray_fmt:
                frame = self._rf.reformat(frame, format=gray_fmt)
                bits = bit_depth(gray_fmt)
            y = _plane(frame.planes[0], np.uint8 if bits <= 8 else np.dtype("<u2"))
            x = y.astype(np.float32) * np.float32(1.0 / ((1 << bits) - 1))
            return self._finish(np.repeat(x[:, :, None], 3, axis=2))
        fmt444, bits = _planar444(bits)
        if name.startswith("yuvj"):  # keep swscale from converting the (full) range
            fmt444 = "yuvj444p"
        if name != fmt444:
            frame = self._rf.reformat(frame, format=fmt444, interpolation=_FLAGS)
        dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        y, u, v = (_plane(p, dtype) for p in frame.planes[:3])
        kr, kb = _KRKB[self.matrix]
        kg = 1.0 - kr - kb
        black, yspan, cspan = _levels(bits, self.colour_range)
        mid = float(1 << (bits - 1))
        scale = 1.0 if self.to_float else self.peak  # fold the output scale into the matrix
        yf = y.astype(np.float32)
        yf -= np.float32(black)
        yf *= np.float32(scale / yspan)
        uf = u.astype(np.float32)
        uf -= np.float32(mid)
        uf *= np.float32(scale / cspan)
        vf = v.astype(np.float32)
        vf -= np.float32(mid)
        vf *= np.float32(scale / cspan)
        out = np.empty((*yf.shape, 3), np.float32)
        np.add(yf, np.float32(2 * (1 - kr)) * vf, out=out[..., 0])
        np.add(yf, np.float32(2 * (1 - kb)) * uf, out=out[..., 2])
        uf *= np.float32(2 * (1 - kb) * kb / kg)
        vf *= np.float32(2 * (1 - kr) * kr / kg)
        yf -= uf
        yf -= vf
        out[..., 1] = yf
        if self.to_float:
            return np.clip(out, 0.0, 1.0, out=out)
        np.clip(out, 0.0, self.peak, out=out)
        out += np.float32(0.5)  # round half up, then truncate
        return out.astype(self.dtype)


class FromRGB:
    """RGB ndarray -> a ``VideoFrame`` in ``pix_fmt`` with an explicit matrix and range.

    ``__call__(rgb)`` takes ``(H, W, 3)`` RGB, full range, as ``uint8``, ``uint16`` (0..65535)
    or float (0..1, clipped). The matrix is applied in numpy into planar 4:4:4 at the target's
    bit depth; swscale then subsamples chroma (4:2:0 etc.). The returned frame is tagged with
    the matrix and range (its pts is left for the caller).
    """

    def __init__(self, *, pix_fmt: str, matrix: int, colour_range: int) -> None:
        self.pix_fmt = pix_fmt
        self.kind = _kind(pix_fmt)
        self.matrix = matrix if matrix in _KRKB else MATRIX_BT709
        full = colour_range == RANGE_FULL or pix_fmt.startswith("yuvj")
        self.colour_range = RANGE_FULL if full else RANGE_LIMITED
        self._rf = VideoReformatter()
        self.bits = bit_depth(pix_fmt)

    def __call__(self, rgb: np.ndarray) -> av.VideoFrame:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        if self.kind == "rgb" and self.pix_fmt.startswith("gbrp") and 8 < self.bits < 16:
            return self._planar_gbr(rgb)
        if self.kind != "yuv":
            if rgb.dtype != np.uint8 and self.bits <= 8:
                rgb = float_to_rgb(rgb_to_float(rgb), np.uint8)
            elif rgb.dtype != np.uint16 and self.bits > 8:
                rgb = float_to_rgb(rgb_to_float(rgb), np.uint16)
            src = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb), format="rgb24" if rgb.dtype == np.uint8 else "rgb48le"
            )
            return self._rf.reformat(src, format=self.pix_fmt)
        x = rgb_to_float(rgb)
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        kr, kb = _KRKB[self.matrix]
        kg = 1.0 - kr - kb
        fmt444, bits = _planar444(self.bits)
        if self.pix_fmt.startswith("yuvj"):
            fmt444 = "yuvj444p"
        black, yspan, cspan = _levels(bits, self.colour_range)
        mid = float(1 << (bits - 1))
        peak = float((1 << bits) - 1)
        dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        y = np.float32(kr) * r + np.float32(kg) * g + np.float32(kb) * b
        frame = av.VideoFrame(w, h, fmt444)
        planes = [_plane(p, dtype) for p in frame.planes[:3]]
        cu = (b - y) * np.float32(cspan / (2 * (1 - kb)))
        cu += mid
        cv = (r - y) * np.float32(cspan / (2 * (1 - kr)))
        cv += mid
        y *= np.float32(yspan)
        y += black
        for plane, values in zip(planes, (y, cu, cv), strict=True):
            plane[...] = _quantise(values, peak, dtype)
        if fmt444 != self.pix_fmt:
            frame = self._rf.reformat(frame, format=self.pix_fmt, interpolation=_FLAGS)
        frame.colorspace = self.matrix
        frame.color_range = self.colour_range
        return frame

    def _planar_gbr(self, rgb: np.ndarray) -> av.VideoFrame:
        """9..15-bit planar RGB (gbrp10le ...), rounded here: swscale truncates 16-bit values
        to the target depth (measured: rgb48le -> gbrp10le is ``v >> 6``, 0.5 codes dark on
        average)."""
        h, w = rgb.shape[:2]
        peak = float((1 << self.bits) - 1)
        unit = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(rgb.dtype, 1.0)
        x = np.asarray(rgb, dtype=np.float64) * (peak / unit)  # float64: exact rounding
        frame = av.VideoFrame(w, h, self.pix_fmt)
        for plane, channel in zip(frame.planes[:3], (1, 2, 0), strict=True):  # G, B, R
            _plane(plane, np.dtype("<u2"))[...] = _quantise(x[..., channel], peak, np.uint16)
        return frame


# --- float / torch helpers --------------------------------------------------------------------


def rgb_to_float(rgb: np.ndarray) -> np.ndarray:
    """uint8/uint16 RGB ``(..., 3)`` -> float32 in [0, 1], same shape."""
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) * np.float32(1 / 255)
    if rgb.dtype == np.uint16:
        return rgb.astype(np.float32) * np.float32(1 / 65535)
    return np.asarray(rgb, dtype=np.float32)


def float_to_rgb(x: np.ndarray, dtype: Any = np.uint8) -> np.ndarray:
    """float RGB in [0, 1] (clipped) -> ``dtype`` (uint8 or uint16) full range, rounded."""
    peak = 255.0 if np.dtype(dtype) == np.uint8 else 65535.0
    return np.clip(np.rint(np.asarray(x, dtype=np.float32) * peak), 0, peak).astype(dtype)


def rgb_to_tensor(
    rgb: np.ndarray | list[np.ndarray], device: Any = "cpu", dtype: Any = None
) -> torch.Tensor:
    """RGB ``(H, W, 3)``, ``(N, H, W, 3)`` or a list of ``(H, W, 3)`` (uint8/uint16) ->
    a ``(N, 3, H, W)`` tensor in [0, 1] (float32 unless ``dtype``) on ``device``.
    The integer-to-float scaling runs on ``device`` (cheap on a GPU)."""
    import torch

    arr = np.stack(rgb) if isinstance(rgb, list) else rgb
    if arr.ndim == 3:
        arr = arr[None]
    peak = 255.0 if arr.dtype == np.uint8 else 65535.0 if arr.dtype == np.uint16 else 1.0
    if arr.dtype == np.uint16:  # torch has limited uint16 support: go through int32
        t = torch.from_numpy(arr.astype(np.int32))
    else:
        t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype or torch.float32)
    return t.mul_(1.0 / peak) if peak != 1.0 else t.contiguous()


def tensor_to_rgb(t: torch.Tensor, dtype: Any = np.uint8) -> np.ndarray:
    """A ``(N, 3, H, W)`` or ``(3, H, W)`` tensor in [0, 1] (clipped) -> ``(N, H, W, 3)``
    (or ``(H, W, 3)``) numpy ``dtype`` (uint8 or uint16), rounded; quantised on the tensor's
    device before the copy to host."""
    import torch

    peak = 255.0 if np.dtype(dtype) == np.uint8 else 65535.0
    squeeze = t.dim() == 3
    if squeeze:
        t = t[None]
    q = t.detach().float().mul(peak).round_().clamp_(0, peak)
    q = q.to(torch.uint8) if peak == 255.0 else q.to(torch.int32)
    out = q.permute(0, 2, 3, 1).contiguous().cpu().numpy().astype(dtype, copy=False)
    return out[0] if squeeze else out


# --- planar YUV on the device (torch) ----------------------------------------------------------
#
# The same matrices and ranges as ToRGB/FromRGB, applied in torch where the model runs: decoded
# planes are uploaded as they are (1.5 bytes a pixel for 4:2:0 instead of 3), converted to float
# RGB on the device without a uint8 round trip, and the result is converted back to planar YUV
# there and quantised once, so the encoder process only wraps the planes in a frame. Decoded
# chroma is upsampled bilinearly at the siting swscale uses for the stream in ToRGB (left for
# H.264/HEVC, centred when untagged: see chroma_siting); output chroma is centred, as FromRGB's
# untagged frames get from swscale, with the matching triangle filter (1/8 3/8 3/8 1/8).
# Edges are replicated. Odd sizes differ slightly: swscale stretches ceil(W/2) chroma samples
# over W, here chroma is placed as the standards say (doubled, then cropped).


@dataclass(frozen=True)
class PlanarLayout:
    """A planar YUV pixel format: ``bits`` per sample (stored in uint8 up to 8 bits, else
    little-endian uint16) and chroma subsampling as shifts (``sx``, ``sy``: 1 = halved).

    Semi-planar formats (NVENC's own nv12, p010le, p016le ...) are layouts too, for encoders:
    ``interleaved`` chroma (one plane, U and V alternating) and samples stored ``shift`` bits
    up (p010le keeps 10 bits in the top of 16). Their packed form is Y, then the UV plane."""

    pix_fmt: str
    bits: int
    sx: int
    sy: int
    interleaved: bool = False
    shift: int = 0

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bits <= 8 else np.dtype("<u2")

    def chroma_size(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // (1 << self.sy)), -(-width // (1 << self.sx))

    def sizes(self, height: int, width: int) -> tuple[int, int]:
        """(luma, chroma) sample counts of one frame."""
        ch, cw = self.chroma_size(height, width)
        return height * width, ch * cw

    def frame_elements(self, height: int, width: int) -> int:
        """Samples in one frame, Y then U then V packed: the encoder ring's slot size."""
        luma, chroma = self.sizes(height, width)
        return luma + 2 * chroma


#: Semi-planar formats an encoder may take: (bits, sx, sy, shift). nv21 (V first) is not one.
_SEMI_PLANAR = {
    "nv12": (8, 1, 1, 0),
    "nv16": (8, 1, 0, 0),
    "p010le": (10, 1, 1, 6),
    "p016le": (16, 1, 1, 0),
    "p210le": (10, 1, 0, 6),
    "p216le": (16, 1, 0, 0),
}


def output_layout(pix_fmt: str) -> PlanarLayout | None:
    """The layout :func:`rgb_to_planes` can pack for an encoder taking ``pix_fmt``: any
    :func:`planar_layout`, and the semi-planar formats NVENC takes (nv12, p010le ...)."""
    if pix_fmt in _SEMI_PLANAR:
        bits, sx, sy, shift = _SEMI_PLANAR[pix_fmt]
        return PlanarLayout(pix_fmt, bits, sx, sy, interleaved=True, shift=shift)
    return planar_layout(pix_fmt)


def planar_layout(pix_fmt: str) -> PlanarLayout | None:
    """The layout of ``pix_fmt`` if it is planar YUV (``yuv420p``, ``yuv422p10le``, ``yuvj444p``
    ...) with at most 16 bits little-endian, else None (RGB, grey, semi-planar, alpha...)."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, TypeError):
        return None
    if not pix_fmt.startswith(("yuv", "yuvj")) or pix_fmt.endswith("be"):
        return None
    comps = fmt.components
    if len(comps) != 3 or any(c.is_alpha for c in comps) or fmt.is_rgb:
        return None
    if {c.plane for c in comps} != {0, 1, 2}:
        return None
    bits = comps[0].bits
    if bits > 16 or any(c.bits != bits for c in comps):
        return None
    probe_w, probe_h = 64, 64
    sized = av.VideoFormat(pix_fmt, probe_w, probe_h)
    sx = {probe_w: 0, probe_w // 2: 1}.get(sized.chroma_width())
    sy = {probe_h: 0, probe_h // 2: 1}.get(sized.chroma_height())
    if sx is None or sy is None:  # 4:1:1, 4:1:0: not handled here
        return None
    return PlanarLayout(pix_fmt, bits, sx, sy)


def frame_from_planes(packed: np.ndarray, layout: PlanarLayout, width: int, height: int) -> Any:
    """A ``layout.pix_fmt`` frame holding ``packed`` (:func:`rgb_to_planes`' codes: Y, U, V,
    or Y then interleaved UV; uint8, or uint16 bit patterns in any 2-byte dtype)."""
    luma, chroma = layout.sizes(height, width)
    ch, cw = layout.chroma_size(height, width)
    flat = packed.reshape(-1).view(layout.dtype)
    frame = av.VideoFrame(width, height, layout.pix_fmt)
    if layout.interleaved:  # Y, then one plane of U and V alternating
        parts: tuple[np.ndarray, ...] = (
            flat[:luma].reshape(height, width),
            flat[luma:].reshape(ch, 2 * cw),
        )
    else:
        parts = (
            flat[:luma].reshape(height, width),
            flat[luma : luma + chroma].reshape(ch, cw),
            flat[luma + chroma :].reshape(ch, cw),
        )
    for plane, part in zip(frame.planes[: len(parts)], parts, strict=True):
        _plane(plane, layout.dtype, part.shape[1])[...] = part
    return frame


@dataclass(frozen=True)
class YUVPlanes:
    """One frame's planes as decoded: ``y`` (H, W), ``u`` and ``v`` (chroma size), uint8 or
    uint16, in ``layout``; ``cosited`` says, per axis (horizontal, vertical), whether chroma
    sits on the first luma sample it covers rather than between its samples."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    layout: PlanarLayout
    cosited: tuple[bool, bool] = (False, False)


def chroma_siting(frame: av.VideoFrame) -> tuple[bool, bool]:
    """(horizontal, vertical) co-siting of ``frame``'s chroma as swscale - ToRGB - treats it.
    **Overwrites the frame's pixels** (after ``make_writable``, so a decoder's reference
    frames are untouched): call it on a frame whose planes were already copied.

    Decoders tag frames with a chroma location (H.264/HEVC: left, i.e. co-sited horizontally
    and centred vertically; untagged: centred both ways) that PyAV does not expose; swscale
    honours it. So ask swscale: the frame's chroma is set to alternate by column (U) and by
    row (V), resampled to 4:4:4, and the value at an even luma position tells co-sited (the
    high sample itself) from centred (3/4 of it)."""
    name = frame.format.name
    layout = planar_layout(name)
    if layout is None or (layout.sx == 0 and layout.sy == 0):
        return False, False
    if frame.width < 8 or frame.height < 8:
        return False, False
    frame.make_writable()
    hi = (1 << layout.bits) - 1
    u = _plane(frame.planes[1], layout.dtype)
    v = _plane(frame.planes[2], layout.dtype)
    u[...], v[...] = 0, 0
    u[:, 1::2] = hi  # varies with the column
    v[1::2, :] = hi  # varies with the row
    fmt444, _ = _planar444(layout.bits)
    if name.startswith("yuvj"):
        fmt444 = "yuvj444p"
    full = VideoReformatter().reformat(frame, format=fmt444, interpolation=_FLAGS)
    # Luma (4, 4) is covered by chroma column/row 2 (low) ... with the high column 1 and 3
    # around it: co-sited gives the low sample itself (0), centred 1/4 of a high one.
    hu = _plane(full.planes[1], layout.dtype)[4, 4] / hi
    hv = _plane(full.planes[2], layout.dtype)[4, 4] / hi
    return bool(layout.sx and hu < 0.125), bool(layout.sy and hv < 0.125)


class ToPlanes:
    """Decoded frames -> ``YUVPlanes`` copies in ``layout`` (frames in another planar format of
    the same kind are rearranged by swscale first, without changing values). The chroma
    siting is found once, from the first frame (:func:`chroma_siting`)."""

    def __init__(self, layout: PlanarLayout) -> None:
        self.layout = layout
        self._rf = VideoReformatter()
        self._cosited: tuple[bool, bool] | None = None

    def __call__(self, frame: av.VideoFrame) -> YUVPlanes:
        if frame.format.name != self.layout.pix_fmt:
            frame = self._rf.reformat(frame, format=self.layout.pix_fmt)
        dtype = self.layout.dtype
        y, u, v = (_plane(p, dtype).copy() for p in frame.planes[:3])
        if self._cosited is None:
            self._cosited = chroma_siting(frame)  # overwrites the frame: copied above
        return YUVPlanes(y, u, v, self.layout, self._cosited)


def _matrix_terms(matrix: int) -> tuple[float, float, float]:
    kr, kb = _KRKB.get(matrix, _KRKB[MATRIX_BT709])
    return kr, kb, 1.0 - kr - kb


def _up_axis(c: torch.Tensor, dim: int, size: int, cosited: bool) -> torch.Tensor:
    """Double ``c`` along ``dim``, linearly, edges replicated, and crop to ``size``. Centred
    siting: 3/4 1/4 of the two nearest samples; co-sited: the sample, then the mean of it
    and the next."""
    import torch

    c = c.movedim(dim, -1)
    nxt = torch.cat([c[..., 1:], c[..., -1:]], dim=-1)
    if cosited:
        pair = [c, (c + nxt) * 0.5]
    else:
        prev = torch.cat([c[..., :1], c[..., :-1]], dim=-1)
        pair = [c * 0.75 + prev * 0.25, c * 0.75 + nxt * 0.25]
    out = torch.stack(pair, dim=-1).flatten(-2)
    return out[..., :size].movedim(-1, dim)


def _upsample(
    c: torch.Tensor,
    height: int,
    width: int,
    sy: int,
    sx: int,
    cosited: tuple[bool, bool] = (False, False),
) -> torch.Tensor:
    """Chroma (N, h, w) float -> (N, height, width): bilinear at the stream's siting
    (``cosited`` per axis, horizontal first), as swscale resamples it in ToRGB."""
    if sx:
        c = _up_axis(c, -1, width, cosited[0])
    if sy:
        c = _up_axis(c, -2, height, cosited[1])
    return c


def _down_axis(c: torch.Tensor, dim: int) -> torch.Tensor:
    """Halve ``c`` along ``dim`` (centred siting: 1/8 3/8 3/8 1/8, edges replicated; an odd
    length is padded by replication)."""
    import torch

    c = c.movedim(dim, -1)
    if c.shape[-1] % 2:
        c = torch.cat([c, c[..., -1:]], dim=-1)
    even, odd = c[..., 0::2], c[..., 1::2]
    before = torch.cat([even[..., :1], odd[..., :-1]], dim=-1)
    after = torch.cat([even[..., 1:], odd[..., -1:]], dim=-1)
    out = (even + odd) * 0.375 + (before + after) * 0.125
    return out.movedim(-1, dim)


def _downsample(c: torch.Tensor, sy: int, sx: int) -> torch.Tensor:
    """Chroma (N, H, W) float at luma size -> subsampled, the filter matching
    :func:`_upsample`'s siting."""
    if sx:
        c = _down_axis(c, -1)
    if sy:
        c = _down_axis(c, -2)
    return c


def samples_to_int(t: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 samples, or uint16 ones carried in an int16 tensor (torch has no uint16
    arithmetic), -> int32 codes with the bit patterns kept; ``bits`` > 8 for the latter."""
    import torch

    t = t.to(torch.int32)
    return t & 0xFFFF if bits > 8 else t


def planes_to_rgb(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    layout: PlanarLayout,
    *,
    matrix: int,
    colour_range: int,
    cosited: tuple[bool, bool] = (False, False),
) -> torch.Tensor:
    """Planes (N, H, W) and (N, h, w) as uint8, or uint16 samples held in int16 tensors, on any
    device -> (N, 3, H, W) float32 RGB in [0, 1] there (ToRGB's matrix and range; chroma
    siting ``cosited`` as :attr:`YUVPlanes.cosited`)."""
    import torch

    height, width = y.shape[-2:]
    black, yspan, cspan = _levels(layout.bits, colour_range)
    mid = float(1 << (layout.bits - 1))
    kr, kb, kg = _matrix_terms(matrix)
    yf = (samples_to_int(y, layout.bits).to(torch.float32) - black) * (1.0 / yspan)
    uf = (samples_to_int(u, layout.bits).to(torch.float32) - mid) * (1.0 / cspan)
    vf = (samples_to_int(v, layout.bits).to(torch.float32) - mid) * (1.0 / cspan)
    uf = _upsample(uf, height, width, layout.sy, layout.sx, cosited)
    vf = _upsample(vf, height, width, layout.sy, layout.sx, cosited)
    r = yf + 2 * (1 - kr) * vf
    b = yf + 2 * (1 - kb) * uf
    g = yf - (2 * (1 - kb) * kb / kg) * uf - (2 * (1 - kr) * kr / kg) * vf
    return torch.stack([r, g, b], dim=1).clamp_(0.0, 1.0)


def rgb_to_planes(
    x: torch.Tensor, layout: PlanarLayout, *, matrix: int, colour_range: int
) -> torch.Tensor:
    """(N, 3, H, W) float RGB in [0, 1] -> (N, frame_elements) codes, Y then U then V packed
    (Y then UV interleaved for a semi-planar layout, shifted up where it stores its bits at
    the top), rounded once and clipped: uint8 for 8-bit layouts, else int16 holding the uint16
    bit pattern (FromRGB's matrix and range; chroma filtered in float before rounding)."""
    import torch

    n = x.shape[0]
    black, yspan, cspan = _levels(layout.bits, colour_range)
    mid = float(1 << (layout.bits - 1))
    peak = float((1 << layout.bits) - 1)
    kr, kb, kg = _matrix_terms(matrix)
    x = x.float().clamp(0.0, 1.0)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    luma = kr * r + kg * g + kb * b
    cu = (b - luma) * (cspan / (2 * (1 - kb)))
    cv = (r - luma) * (cspan / (2 * (1 - kr)))
    cu = _downsample(cu, layout.sy, layout.sx) + mid
    cv = _downsample(cv, layout.sy, layout.sx) + mid
    luma = luma * yspan + black
    chroma = (cu, cv) if not layout.interleaved else (torch.stack([cu, cv], dim=-1),)
    packed = torch.cat([t.reshape(n, -1) for t in (luma, *chroma)], dim=1)
    packed = packed.round_().clamp_(0.0, peak)
    if layout.bits <= 8:
        return packed.to(torch.uint8)
    if layout.shift:
        packed = packed.mul_(float(1 << layout.shift))
    return packed.to(torch.int32).to(torch.int16)  # wraps above 32767: the uint16 pattern
