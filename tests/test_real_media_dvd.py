"""The DVD/TV builders of tests/real_media.py make what they say: true interlaced MPEG-2 (tt and
bb), a hard 2:3 telecine with its film reference, DGPulldown-style soft telecine, anamorphic
720x480 and a letterboxed H.264 capture - checked with PyAV, the MPEG-2 bitstream itself,
libavfilter's cropdetect and vidsr's probe."""

from __future__ import annotations

import itertools
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import real_media as R
from media_factory import ffmpeg_exe

from vidsr.media.probe import probe

NTSC = Fraction(30000, 1001)
FILM = Fraction(24000, 1001)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dvd")


# --- reading the files back -------------------------------------------------------------------


def picture_flags(data: bytes) -> list[dict[str, int]]:
    """Each picture coding extension's fields in ``data`` (an MPEG-2 packet)."""
    out = []
    for at in R._start_codes(data):
        if data[at + 3] == 0xB5 and data[at + 4] >> 4 == 8:
            bits = int.from_bytes(data[at + 4 : at + 9], "big")  # 40 bits, id first
            out.append(
                {
                    "structure": (bits >> 16) & 3,  # 3: frame picture
                    "tff": (bits >> 15) & 1,
                    "rff": (bits >> 9) & 1,
                    "progressive_frame": (bits >> 7) & 1,
                }
            )
    return out


def sequence_fields(data: bytes) -> tuple[int, int, int]:
    """(frame_rate_code, aspect_ratio_information, progressive_sequence) of the first sequence
    header and sequence extension in ``data``."""
    sh = data.find(b"\0\0\1\xb3")
    ext = next(a for a in R._start_codes(data) if data[a + 3] == 0xB5 and data[a + 4] >> 4 == 1)
    return data[sh + 7] & 0xF, data[sh + 7] >> 4, (data[ext + 5] >> 3) & 1


def video_packets(path: Path) -> list[tuple[int, bytes]]:
    """(pts, data) of the main video stream's packets, in presentation order."""
    with av.open(str(path)) as c:
        return sorted((p.pts, bytes(p)) for p in c.demux(c.streams.video[0]) if p.size)


def lumas(path: Path) -> list[np.ndarray]:
    """Every frame's luma plane as stored (limited range: black is 16)."""
    with av.open(str(path)) as c:
        return [
            f.to_ndarray(format="yuv420p")[: f.height].astype(np.float64) for f in c.decode(video=0)
        ]


def stream_kinds(path: Path) -> list[tuple[str, str | None]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams]


def bar_left(rows: np.ndarray) -> int:
    """The column where the bright bar (luma 235, wrapping round the right edge) starts."""
    bright = rows.mean(axis=0) > 200
    (start,) = [x for x in range(len(bright)) if bright[x] and not bright[x - 1]]
    return start


# --- 1. true interlaced ---------------------------------------------------------------------


@pytest.mark.parametrize("tff", [True, False])
def test_interlaced_mpeg2_is_woven_fields(folder: Path, tff: bool) -> None:
    path = R.interlaced_mpeg2(folder, tff=tff, name=f"interlaced_{int(tff)}.vob")
    v = probe(path).video
    assert (v.codec, v.width, v.height, v.frame_count, v.avg_rate) == (
        "mpeg2video", 64, 48, 24, NTSC)  # fmt: skip
    assert v.field_order == ("tt" if tff else "bb") and v.interlaced_frame
    assert (v.pictures, v.interlaced_pictures, v.repeat_fields) == (24, 24, 0)
    with av.open(str(path)) as c:
        assert c.format.name == "mpeg"
        assert c.streams.video[0].codec_context.field_order == (2 if tff else 3)  # AV_FIELD_TT/BB
    assert ("audio", "ac3") in stream_kinds(path)
    flags = [f for _, data in video_packets(path) for f in picture_flags(data)]
    assert len(flags) == 24
    assert all(f["tff"] == tff and not f["progressive_frame"] and f["rff"] == 0 for f in flags)
    # Every frame combs: the first field's bar stands 5 px left of the second field's.
    for k, y in enumerate(lumas(path)):
        top, bottom = bar_left(y[0::2]), bar_left(y[1::2])
        first, second = (top, bottom) if tff else (bottom, top)
        assert (first, second) == (10 * k % 64, (10 * k + 5) % 64)


# --- 2. hard telecine -----------------------------------------------------------------------


def nearest(ref: list[np.ndarray], picture: np.ndarray, parity: int | None = None) -> int:
    """Index of the reference frame nearest ``picture``: a whole frame, or (``parity`` 0 top,
    1 bottom) one field of it."""
    rows = slice(None) if parity is None else slice(parity, None, 2)
    errors = [np.abs(r[rows] - picture).mean() for r in ref]
    return int(np.argmin(errors))


def test_hard_telecine_is_2_3_pulldown_of_its_reference(folder: Path) -> None:
    path, ref = R.hard_telecine_mpeg2(folder, frames=24)
    r = probe(ref).video
    assert (r.codec, r.frame_count, r.avg_rate, r.field_order) == ("ffv1", 24, FILM, "progressive")
    v = probe(path).video
    assert (v.codec, v.frame_count, v.avg_rate, v.field_order) == ("mpeg2video", 30, NTSC, "tt")
    assert (v.pictures, v.interlaced_pictures, v.repeat_fields) == (30, 30, 0)
    assert ("audio", "ac3") in stream_kinds(path)
    film = lumas(ref)
    assert all(np.abs(a - b).mean() > 10 for a, b in itertools.pairwise(film))
    fields = [(nearest(film, y[0::2], 0), nearest(film, y[1::2], 1)) for y in lumas(path)]
    # telecine=pattern=23, top first: AA BB BC CD DD - frames 2 and 3 of every 5 combed.
    cycle = [(0, 0), (1, 1), (1, 2), (2, 3), (3, 3)]
    assert fields == [(4 * n + t, 4 * n + b) for n in range(6) for t, b in cycle]


# --- 3. soft telecine -----------------------------------------------------------------------


def test_soft_telecine_carries_pulldown_flags(folder: Path) -> None:
    path = R.soft_telecine_mpeg2(folder, frames=24)
    packets = video_packets(path)
    assert (len(packets), len(lumas(path))) == (24, 24)  # pictures stored and decoded
    assert sequence_fields(packets[0][1])[::2] == (4, 0)  # 30000/1001, not progressive
    flags = [picture_flags(data) for _, data in packets]
    assert all(len(f) == 1 for f in flags)
    shown = [(f[0]["tff"], f[0]["rff"]) for f in flags]  # display order
    assert shown == list(R.PULLDOWN_23) * 6
    assert all(f[0]["progressive_frame"] and f[0]["structure"] == 3 for f in flags)
    # Each picture lasts its fields (1501.5 ticks of 90 kHz each): 4504/4505 after the
    # pictures that repeat a field, 3003 after the others (the demuxer, interpolating a
    # picture that shares a PES packet, can land one tick off).
    pts = [t for t, _ in packets]
    for (_, rff), a, b in zip(shown, pts, pts[1:], strict=False):
        assert abs((b - a) - (2 + rff) * 1501.5) <= 1
    assert pts[-1] - pts[0] == 58 * 3003 // 2  # 60 fields, the last picture's 2 not yet
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.framerate == NTSC
    v = probe(path).video
    assert (v.codec, v.frame_count, v.pictures, v.repeat_fields) == ("mpeg2video", 24, 24, 12)
    assert (v.interlaced_pictures, v.field_order, v.interlaced_frame) == (0, "progressive", False)
    assert ("audio", "ac3") in stream_kinds(path)
    # The pictures are the film frames themselves, in order.
    film = lumas(R.film_reference(folder, frames=24, name="soft_reference.mkv"))
    for k, y in enumerate(lumas(path)):
        assert nearest(film, y) == k and np.abs(y - film[k]).mean() < 3


# --- 4. anamorphic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dar", "interlaced", "sar", "code", "order"),
    [((16, 9), False, Fraction(32, 27), 3, "progressive"), ((4, 3), True, Fraction(8, 9), 2, "tt")],
)
def test_anamorphic_dvd(
    folder: Path,
    dar: tuple[int, int],
    interlaced: bool,
    sar: Fraction,
    code: int,
    order: str,
) -> None:
    path = R.anamorphic_dvd(folder, dar=dar, interlaced=interlaced, name=f"ana{dar[0]}.vob")
    v = probe(path).video
    assert (v.codec, v.width, v.height, v.frame_count, v.avg_rate) == (
        "mpeg2video", 720, 480, 12, NTSC)  # fmt: skip
    assert v.sample_aspect_ratio == sar and v.display_aspect == Fraction(*dar)
    assert v.field_order == order and v.interlaced_pictures == (12 if interlaced else 0)
    packets = video_packets(path)
    assert sequence_fields(packets[0][1])[1] == code  # aspect_ratio_information 3: 16:9
    assert ("audio", "ac3") in stream_kinds(path)


# --- 5. letterboxed -------------------------------------------------------------------------


def cropdetect(path: Path, options: str = "round=2") -> set[str]:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-vf",
         f"cropdetect={options}", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(re.findall(r"crop=(\d+:\d+:\d+:\d+)", proc.stderr))


@pytest.mark.parametrize(
    ("bars", "box", "exact_black"), [((8, 0), "64:32:0:8", True), ((6, 4), "56:36:4:6", False)]
)
def test_letterboxed_content_box(
    folder: Path, bars: tuple[int, int], box: str, exact_black: bool
) -> None:
    path = R.letterboxed(folder, bars=bars, name=f"lb{bars[0]}x{bars[1]}.mkv")
    v = probe(path).video
    assert (v.codec, v.width, v.height, v.frame_count) == ("h264", 64, 48, 24)
    assert cropdetect(path) == {box}
    if bars == (8, 0):
        assert cropdetect(path, "") == {box}  # the default (round=16) agrees
    w, h, x, y = map(int, box.split(":"))
    for frame in lumas(path):
        inside = frame[y : y + h, x : x + w]
        outside = frame.copy()
        outside[y : y + h, x : x + w] = 16
        assert inside.min() >= 60  # never dark at its border
        assert (outside == 16).all() if exact_black else np.abs(outside - 16).max() <= 12
        assert inside[0].mean() > 100 and inside[-1].mean() > 100
