"""Colour policy: the right matrix and range, numerically; round trips stay within a few levels."""

from __future__ import annotations

import av
import numpy as np
import pytest

from vidsr.media import colour
from vidsr.media.colour import ColourTags, FromRGB, ToRGB


def _flat_yuv(w: int, h: int, yuv: tuple[int, int, int], fmt: str = "yuv420p") -> av.VideoFrame:
    frame = av.VideoFrame(w, h, fmt)
    dtype = np.uint8 if colour.bit_depth(fmt) <= 8 else np.dtype("<u2")
    for plane, value in zip(frame.planes, yuv, strict=True):
        n = plane.buffer_size // np.dtype(dtype).itemsize
        plane.update(np.full(n, value, dtype).tobytes())
    return frame


def _reference(yuv, kr, kb, bits=8, full=False):
    """RGB in [0, 1] from the standards' formulas (unclipped)."""
    y, u, v = (float(c) for c in yuv)
    s = 2 ** (bits - 8)
    if full:
        peak = 2**bits - 1
        yn, un, vn = y / peak, (u - 128 * s) / peak, (v - 128 * s) / peak
    else:
        yn, un, vn = (y - 16 * s) / (219 * s), (u - 128 * s) / (224 * s), (v - 128 * s) / (224 * s)
    r = yn + 2 * (1 - kr) * vn
    b = yn + 2 * (1 - kb) * un
    g = (yn - kr * r - kb * b) / (1 - kr - kb)
    return np.array([r, g, b])


BT709 = (0.2126, 0.0722)
BT601 = (0.299, 0.114)


def test_hd_bt709_limited_uses_709_not_601():
    yuv = (100, 90, 200)
    frame = _flat_yuv(1280, 720, yuv)
    v709 = np.clip(_reference(yuv, *BT709), 0, 1) * 255
    v601 = np.clip(_reference(yuv, *BT601), 0, 1) * 255
    assert np.abs(v709 - v601).max() > 10  # the test can tell them apart
    rgb = ToRGB(matrix=colour.MATRIX_BT709, colour_range=1, high_bit_depth=False)(frame)
    assert rgb.shape == (720, 1280, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[360, 640].astype(float) - v709).max() <= 0.51
    assert np.abs(rgb.astype(int) - rgb[0, 0]).max() == 0  # flat in, flat out


@pytest.mark.parametrize(
    ("matrix", "krkb", "full"),
    [
        (colour.MATRIX_BT709, BT709, False),
        (colour.MATRIX_BT709, BT709, True),
        (colour.MATRIX_SMPTE170M, BT601, False),
        (colour.MATRIX_BT470BG, BT601, True),
        (colour.MATRIX_BT2020_NCL, (0.2627, 0.0593), False),
    ],
)
def test_matrices_and_ranges_8_and_10_bit(matrix, krkb, full):
    rng = np.random.default_rng(matrix * 2 + full)
    for fmt, bits in (("yuv420p", 8), ("yuv420p10le", 10), ("yuv444p", 8)):
        for _ in range(5):
            lo, hi = (0, 2**bits) if full else (16 << (bits - 8), 236 << (bits - 8))
            yuv = tuple(int(x) for x in rng.integers(lo, hi, 3))
            frame = _flat_yuv(64, 36, yuv, fmt)
            want = np.clip(_reference(yuv, *krkb, bits=bits, full=full), 0, 1)
            hi_bits = bits > 8
            rgb = ToRGB(matrix=matrix, colour_range=2 if full else 1, high_bit_depth=hi_bits)(frame)
            peak = 65535 if hi_bits else 255
            assert np.abs(rgb[10, 10] / peak - want).max() <= 0.51 / peak, (fmt, yuv)


def test_extreme_yuv_does_not_wrap():
    # swscale's rgb24 output turns this blue 255 into 0 (see colour.py); ours must clip.
    frame = _flat_yuv(64, 36, (247, 250, 168), "yuv444p")
    rgb = ToRGB(matrix=colour.MATRIX_BT709, colour_range=1, high_bit_depth=False)(frame)
    want = np.clip(_reference((247, 250, 168), *BT709), 0, 1) * 255
    assert np.abs(rgb[0, 0].astype(float) - want).max() <= 0.51
    assert rgb[0, 0, 2] == 255


def _smooth(h=72, w=128):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1)


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv420p", "yuv422p", "yuv420p10le", "nv12"])
@pytest.mark.parametrize("matrix", [colour.MATRIX_BT709, colour.MATRIX_SMPTE170M])
@pytest.mark.parametrize("colour_range", [colour.RANGE_LIMITED, colour.RANGE_FULL])
def test_rgb_yuv_rgb_round_trip(pix_fmt, matrix, colour_range):
    high = colour.bit_depth(pix_fmt) > 8
    dtype = np.uint16 if high else np.uint8
    rgb = colour.float_to_rgb(_smooth(), dtype)
    frame = FromRGB(pix_fmt=pix_fmt, matrix=matrix, colour_range=colour_range)(rgb)
    assert frame.format.name == pix_fmt
    assert (frame.colorspace, frame.color_range) == (matrix, colour_range)
    back = ToRGB(matrix=matrix, colour_range=colour_range, high_bit_depth=high)(frame)
    diff = np.abs(back.astype(float) - rgb) / (65535 if high else 255) * 255
    assert diff.max() <= 4.0 and diff.mean() <= 1.0


def test_float_input_and_to_float_output():
    x = _smooth().astype(np.float32)
    frame = FromRGB(pix_fmt="yuv444p10le", matrix=1, colour_range=1)(x)
    back = ToRGB(matrix=1, colour_range=1, high_bit_depth=True, to_float=True)(frame)
    assert back.dtype == np.float32 and np.abs(back - x).max() < 2 / 255


def test_odd_size_round_trip():
    rgb = colour.float_to_rgb(_smooth(35, 63))
    frame = FromRGB(pix_fmt="yuv420p", matrix=6, colour_range=1)(rgb)
    assert (frame.width, frame.height) == (63, 35)
    back = ToRGB(matrix=6, colour_range=1, high_bit_depth=False)(frame)
    diff = np.abs(back.astype(int) - rgb)
    # swscale maps 32 chroma samples onto 63 pixels (not exactly x2): a slight chroma drift
    assert diff.max() <= 6 and diff.mean() <= 1.5


def test_effective_matrix_and_range_fallback():
    unspec = colour.MATRIX_UNSPECIFIED
    assert colour.effective_matrix(unspec, 1280, 720) == colour.MATRIX_BT709
    assert colour.effective_matrix(unspec, 1280, 536) == colour.MATRIX_BT709  # scope 1280 wide
    assert colour.effective_matrix(unspec, 960, 720) == colour.MATRIX_BT709
    assert colour.effective_matrix(unspec, 720, 576) == colour.MATRIX_SMPTE170M
    assert colour.effective_matrix(colour.MATRIX_BT470BG, 1920, 1080) == colour.MATRIX_BT470BG
    assert colour.effective_matrix(unspec, 640, 360, "gbrp") == colour.MATRIX_RGB
    assert colour.effective_range(0) == colour.RANGE_LIMITED
    assert colour.effective_range(2) == colour.RANGE_FULL
    assert colour.effective_range(0, "yuvj420p") == colour.RANGE_FULL
    # an untagged SD source gets explicit BT.601 tags on the (HD) output
    tags = colour.output_tags(ColourTags(), width=640, height=360, pix_fmt="yuv420p")
    assert (tags.matrix, tags.range) == (colour.MATRIX_SMPTE170M, colour.RANGE_LIMITED)
    src = ColourTags(9, 18, 9, 1)
    assert colour.output_tags(src, width=64, height=36, pix_fmt="yuv420p10le") == src


def test_tensor_helpers():
    torch = pytest.importorskip("torch")
    rgb = colour.float_to_rgb(_smooth(8, 12))
    t = colour.rgb_to_tensor([rgb, rgb])
    assert t.shape == (2, 3, 8, 12) and t.dtype == torch.float32
    assert float(t.max()) <= 1.0
    assert np.array_equal(colour.tensor_to_rgb(t)[1], rgb)
    rgb16 = colour.float_to_rgb(_smooth(8, 12), np.uint16)
    t16 = colour.rgb_to_tensor(rgb16)
    assert np.array_equal(colour.tensor_to_rgb(t16[0], np.uint16), rgb16)
