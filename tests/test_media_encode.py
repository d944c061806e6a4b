"""VideoEncoder: source pts kept, codec defaults, 10-bit, tags, errors, atomic output; ffmpeg runner."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from vidsr.errors import PipelineError, UsageError
from vidsr.media import colour
from vidsr.media.decode import decode_frames
from vidsr.media.encode import CODEC_DEFAULTS, VideoEncoder, choose_pix_fmt, encoder_available
from vidsr.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from vidsr.media.probe import probe


def _frames(n: int, h: int = 36, w: int = 64, dtype=np.uint8) -> list[np.ndarray]:
    peak = 255 if dtype == np.uint8 else 65535
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        (np.stack([(xx + 3 * i) % w / w, yy / h, np.full_like(xx, i / n, dtype=float)], -1) * peak)
        .round()
        .astype(dtype)
        for i in range(n)
    ]


def test_vfr_pts_and_start_offset_survive(tmp_path):
    pts = [500, 540, 560, 580, 700, 1000, 1010]  # ms: starts at 0.5 s, irregular
    out = tmp_path / "v.mkv"
    with VideoEncoder(
        out, width=64, height=36, time_base=Fraction(1, 1000), codec="libx264", preset="ultrafast"
    ) as enc:
        for frame, p in zip(_frames(len(pts)), pts, strict=True):
            enc.write(frame, p)
    assert enc.frames_written == len(pts)
    info = probe(out)
    assert list(info.video.frame_pts) == pts and info.video.is_vfr
    assert info.video.start_time == Fraction(1, 2)
    assert [s.type for s in info.streams] == []  # video only


def test_fine_time_base_in_mp4(tmp_path):
    tb = Fraction(1, 90000)
    pts = [133500 + 3750 * i for i in range(5)]
    out = tmp_path / "v.mp4"
    with VideoEncoder(
        out, width=64, height=36, time_base=tb, codec="libx264", preset="ultrafast"
    ) as e:
        for frame, p in zip(_frames(5), pts, strict=True):
            e.write(frame, p)
    v = probe(out).video
    assert [v.frame_time(i) for i in range(5)] == [p * tb for p in pts]


def test_defaults_per_codec():
    assert CODEC_DEFAULTS["libx264"] == {"crf": "18", "preset": "medium"}
    assert CODEC_DEFAULTS["libx265"]["crf"] == "20"
    assert (CODEC_DEFAULTS["libsvtav1"]["crf"], CODEC_DEFAULTS["libsvtav1"]["preset"]) == (
        "28",
        "8",
    )
    for codec in ("libx264", "libx265", "libsvtav1", "ffv1"):
        assert choose_pix_fmt(codec, "yuv420p", 8) == "yuv420p"
        assert choose_pix_fmt(codec, "yuv420p10le", 10) == "yuv420p10le"
    assert choose_pix_fmt("libx264", "yuvj420p", 8) == "yuv420p"
    assert choose_pix_fmt("libsvtav1", "yuv444p", 8) == "yuv420p"  # svt-av1 is 4:2:0 only
    assert choose_pix_fmt("ffv1", "yuv444p12le", 12) == "yuv444p12le"
    assert encoder_available("libx264") and not encoder_available("no_such_codec")


def test_options_override_defaults(tmp_path):
    enc = VideoEncoder(
        tmp_path / "v.mkv",
        width=64,
        height=36,
        time_base=Fraction(1, 24),
        crf=23,
        preset="ultrafast",
        options={"tune": "zerolatency"},
    )
    assert enc.options == {"crf": "23", "preset": "ultrafast", "tune": "zerolatency"}
    enc.abort()
    assert list(tmp_path.iterdir()) == []


def test_10bit_x264_from_source(media_clips, tmp_path):
    src = media_clips["hevc10"]
    info = probe(src)
    out = tmp_path / "v.mkv"
    with VideoEncoder.from_source(out, info, scale=2, codec="libx264", preset="ultrafast") as enc:
        for f in decode_frames(src, 0, 4, info=info):
            enc.write(np.repeat(np.repeat(f.rgb, 2, 0), 2, 1), f.pts)  # a "x2 upscale"
    o = probe(out).video
    assert (o.width, o.height, o.pix_fmt, o.bit_depth) == (128, 72, "yuv420p10le", 10)
    assert o.colour == info.video.colour  # bt2020 / HLG / bt2020nc / tv
    assert list(o.frame_pts) == list(info.video.frame_pts[:4])


def test_untagged_sd_source_is_tagged_on_hd_output(media_clips, tmp_path):
    src = media_clips["vfr"]  # 64x36, untagged -> BT.601 was used to decode it
    info = probe(src)
    out = tmp_path / "v.mkv"
    with VideoEncoder.from_source(
        out, info, width=1280, height=720, codec="libx264", preset="ultrafast"
    ) as enc:
        enc.write(np.zeros((720, 1280, 3), np.uint8), 0)
    o = probe(out).video
    # a player would pick BT.709 for untagged 720p: the tag must say BT.601
    assert (o.colour.matrix, o.colour.range) == (colour.MATRIX_SMPTE170M, colour.RANGE_LIMITED)


def test_svtav1_and_x265_encode(tmp_path):
    for codec in ("libx265", "libsvtav1"):
        out = tmp_path / f"{codec}.mkv"
        with VideoEncoder(
            out,
            width=64,
            height=64,
            time_base=Fraction(1, 25),
            codec=codec,
            source_pix_fmt="yuv420p10le",
            source_bit_depth=10,
            preset="ultrafast" if codec == "libx265" else "12",
        ) as enc:
            for i, frame in enumerate(_frames(3, 64, 64, np.uint16)):
                enc.write(frame, i)
        v = probe(out).video
        assert v.frame_count == 3 and v.bit_depth == 10


def test_errors_and_atomicity(tmp_path):
    out = tmp_path / "v.mkv"
    with pytest.raises(UsageError, match="odd size"):
        VideoEncoder(out, width=63, height=35, time_base=Fraction(1, 24), codec="libx264")
    with pytest.raises(UsageError, match="unknown video encoder"):
        VideoEncoder(out, width=64, height=36, time_base=Fraction(1, 24), codec="nope")
    enc = VideoEncoder(out, width=63, height=35, time_base=Fraction(1, 24), codec="ffv1")
    frames = _frames(2, 35, 63)
    enc.write(frames[0], 10)
    with pytest.raises(PipelineError, match="must increase"):
        enc.write(frames[1], 10)
    with pytest.raises(PipelineError, match="expects 63x35"):
        enc.write(np.zeros((36, 64, 3), np.uint8), 11)
    enc.abort()
    assert list(tmp_path.iterdir()) == []
    with (
        pytest.raises(RuntimeError),
        VideoEncoder(out, width=64, height=36, time_base=Fraction(1, 24), codec="ffv1") as enc,
    ):
        enc.write(_frames(1)[0], 0)
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []  # nothing partial under any name


def test_ffmpeg_runner(tmp_path, monkeypatch):
    assert ffmpeg_exe()
    with pytest.raises(PipelineError, match=r"ffmpeg failed: .*No such file") as err:
        run_ffmpeg(["-i", str(tmp_path / "missing.mkv"), str(tmp_path / "out.mkv")])
    assert "\n" not in str(err.value)
    monkeypatch.setenv("VIDSR_FFMPEG", str(tmp_path / "no-ffmpeg"))
    with pytest.raises(PipelineError, match="VIDSR_FFMPEG"):
        ffmpeg_exe()
