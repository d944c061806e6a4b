"""Held-frame reuse (``--reuse exact|auto``): the same output as ``off`` (exactly, where every
frame is the same or every frame differs; within a level where some tiles are computed apart),
reused tiles on a held shot with x264 noise, a moving object never left stale, chunked = one
pass. The real pipeline with a small SRVGGNetCompact of random weights (2 convolutions deep:
a receptive field of 4 pixels, so tiles and their margins matter) at frames several tiles
wide."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_video
from real_media import ffmpeg

from vidsr.media.decode import FrameDecoder
from vidsr.models.arch.srvgg import SRVGGNetCompact
from vidsr.models.loader import LoadedNetwork
from vidsr.pipeline.infer import Upscaler
from vidsr.pipeline.reuse import PERIOD, TILE, receptive_margin

W, H = 4 * TILE, 2 * TILE  # 4 x 2 tiles


def small_upscaler() -> Upscaler:
    torch.manual_seed(0)
    module = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2, act_type="prelu").eval()
    net = LoadedNetwork(
        module=module, name="small", arch="SRVGGNetCompact", kwargs={}, scale=2,
        size_multiple=1, params=0,
    )  # fmt: skip
    return Upscaler(net, device=torch.device("cpu"), dtype=torch.float32)


def frames_of(path: Path) -> list[np.ndarray]:
    return [f.rgb.astype(np.int16) for f in FrameDecoder(path)]


def upscale(src: Path, out: Path, **options: object) -> object:
    options = {"pix_fmt": "yuv444p", **options}
    return run_video(
        src, out, upscaler=small_upscaler(), scale=2, codec="ffv1", overwrite=True, **options
    )


#: Anime-like: a flat background with an outlined shape held for whole shots, and a small
#: outlined ball that moves 4 px on twos (every second frame) over it. (drawbox evaluates its
#: position once: the ball is overlaid, evaluated per frame.)
CARTOON = (
    "color=c=0x4a7fbf:size={w}x{h}:rate=24,format=yuv420p,"
    "drawbox=x=30:y=20:w=90:h=70:color=0xf0d090:t=fill,drawbox=x=30:y=20:w=90:h=70:"
    "color=black:t=3[bg];color=c=black:size=14x14:rate=24,"
    "drawbox=x=2:y=2:w=10:h=10:color=0xe04040:t=fill[ball];"
    "[bg][ball]overlay=x='40+4*floor(t*12+0.01)':y=60:eval=frame:shortest=1"
)
#: What a broadcast capture adds: a little grain, different in every frame.
GRAIN = ",noise=alls=5:allf=t"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reuse")
    out = {
        "still": folder / "still.mkv",  # every frame the same (lossless)
        "noise": folder / "noise.mkv",  # every frame different everywhere
        "cartoon": folder / "cartoon.mkv",  # a held shot, a moving ball, grain; x264 crf 23
        "lossless": folder / "cartoon_ffv1.mkv",  # the same content, lossless
    }
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate=24", "-vf",
           "trim=end_frame=1,loop=23:1:0", "-c:v", "ffv1", out["still"])  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:size={W}x{H}:rate=24,noise=alls=80:allf=t",
           "-frames:v", 24, "-c:v", "ffv1", out["noise"])  # fmt: skip
    cartoon = CARTOON.format(w=W, h=H)
    ffmpeg("-f", "lavfi", "-i", cartoon + GRAIN, "-frames:v", 2 * PERIOD, "-c:v", "libx264",
           "-crf", 23, "-preset", "veryfast", "-x264-params", "log-level=error",
           out["cartoon"])  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", cartoon, "-frames:v", 24, "-c:v", "ffv1", out["lossless"])
    out["deep"] = folder / "cartoon10.mkv"  # 10-bit: the YUV planes path with device colour
    ffmpeg("-f", "lavfi", "-i", cartoon, "-frames:v", 24, "-c:v", "ffv1", "-pix_fmt",
           "yuv420p10le", out["deep"])  # fmt: skip
    return out


def test_receptive_margin_counts_the_convolutions() -> None:
    assert receptive_margin(small_upscaler().net.module, "SRVGGNetCompact") == 4
    assert receptive_margin(SRVGGNetCompact(num_conv=16), "SRVGGNetCompact") == 18
    assert receptive_margin(torch.nn.Identity(), "RRDBNet") is None


@pytest.mark.parametrize("name", ["still", "noise"])
def test_exact_is_bit_identical_where_all_or_nothing_repeats(
    clips: dict[str, Path], tmp_path: Path, name: str
) -> None:
    off = upscale(clips[name], tmp_path / "off.mkv", batch_size=1)
    exact = upscale(clips[name], tmp_path / "exact.mkv", batch_size=1, reuse="exact")
    a, b = frames_of(off.output), frames_of(exact.output)
    assert len(a) == len(b) == 24
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    expected = 23 * 8 if name == "still" else 0  # all but the first frame's 8 tiles / none
    assert round(exact.reused * 24 * 8) == expected
    assert off.reused is None


def test_exact_equals_off_within_a_level_where_some_tiles_repeat(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    off = upscale(clips["lossless"], tmp_path / "off.mkv")
    exact = upscale(clips["lossless"], tmp_path / "exact.mkv", reuse="exact")
    assert exact.reused > 0.3  # the ball moves over 1-2 tiles of 8
    diffs = [
        np.abs(x - y) for x, y in zip(frames_of(off.output), frames_of(exact.output), strict=True)
    ]
    assert max(int(d.max()) for d in diffs) <= 1
    assert np.mean([float((d > 0).mean()) for d in diffs]) < 0.01


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_auto_reuses_a_held_shot_under_x264_noise(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["cartoon"]  # grain in every frame: x264 leaves no tile exactly as it was
    off = upscale(src, tmp_path / "off.mkv")
    exact = upscale(src, tmp_path / "exact.mkv", reuse="exact")
    auto = upscale(src, tmp_path / "auto.mkv", reuse="auto")
    assert exact.reused < 0.2 and auto.reused > 0.3  # the ball's tiles change on twos
    a, b = frames_of(off.output), frames_of(auto.output)
    assert min(psnr(x, y) for x, y in zip(a, b, strict=True)) >= 40


def test_a_moving_ball_is_never_left_stale(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["lossless"]  # a static background: every tile but the ball's is held
    frames = frames_of(src)
    assert sum(not np.array_equal(a, b) for a, b in itertools.pairwise(frames)) == 11
    off = upscale(src, tmp_path / "off.mkv")
    auto = upscale(src, tmp_path / "auto.mkv", reuse="auto")
    assert 0.5 < auto.reused < 1
    for n, (x, y) in enumerate(zip(frames_of(off.output), frames_of(auto.output), strict=True)):
        bx = 40 + 4 * (n // 2)  # the ball and what the network sees around it, output pixels
        box = (slice(2 * 56, 2 * 78), slice(2 * (bx - 4), 2 * (bx + 18)))
        assert int(np.abs(x[box] - y[box]).max()) <= 1, n


def test_a_chunk_boundary_inside_a_held_shot_changes_nothing(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    src = clips["cartoon"]  # 96 frames: chunks start at multiples of PERIOD (48)
    one = upscale(src, tmp_path / "one.mkv", reuse="auto")
    cut = upscale(src, tmp_path / "cut.mkv", reuse="auto", chunk_frames=20)
    a, b = frames_of(one.output), frames_of(cut.output)
    assert len(a) == len(b) == 2 * PERIOD
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert cut.reused == one.reused


def test_reuse_on_yuv_planes_at_10_bits(clips: dict[str, Path], tmp_path: Path) -> None:
    """With device colour the decoder hands out YUV planes (10-bit codes here): the threshold
    is in their scale and chroma's reach counts, so exact stays exact and auto is not frozen."""
    src = clips["deep"]
    runs = {}
    for mode in ("off", "exact", "auto"):
        runs[mode] = upscale(
            src, tmp_path / f"{mode}.mkv", reuse=mode, device_colour="on", pix_fmt="yuv444p16le"
        )
    off, exact, auto = (frames_of(runs[m].output) for m in ("off", "exact", "auto"))
    assert 0.5 < runs["exact"].reused < 1 and 0.5 < runs["auto"].reused < 1
    assert all(np.array_equal(a, b) for a, b in zip(off, exact, strict=True))
    worst = max(int(np.abs(a.astype(np.int32) - b).max()) for a, b in zip(off, auto, strict=True))
    assert worst <= 257  # a level of 8 bits, in 16-bit RGB: the ball moved in every frame
