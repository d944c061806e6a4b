"""`vidsr upscale VIDEO` end to end: the acceptance matrix, through the real command line.

Every generated edge clip (tests/media_factory.py) and the bundled samples/clip.mkv is converted
once (module-scoped cache) with ``--model realesr-animevideov3 --device cpu --codec ffv1`` and an
RGB lossless pixel format (bgr0 for 8-bit sources, gbrp10le for 10-bit ones: ffv1 has no 8-bit
gbrp), so the pixels can be compared exactly with the model run here on the decoded source. Then:

* frames: exactly the source's count, each at the source's time relative to the first audio
  packet (the container start without audio); exact where the source is mkv (1 ms time base
  both sides), within 1 ms where the source's finer time base (mp4, MPEG-TS) is rounded to mkv's
  milliseconds;
* streams: type, codec, language, title, default/forced/attached_pic kept; audio, subtitle and
  cover-art packets identical byte for byte; attachments identical; chapters and title kept;
* video: x4 size (odd sizes too), rotation, sample aspect ratio, colour tags, bit depth;
* pixels: the model applied to ``decode_frames`` of the source, quantised as the pipeline does.

Plus the CLI's refusals, naming, --dry-run, --json, --scale, --batch-size and the Python API.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import helpers
import numpy as np
import pytest
import torch

from vidsr.media import colour
from vidsr.media.decode import decode_frames
from vidsr.media.encode import encoder_pix_fmts
from vidsr.media.probe import MediaInfo, probe

MODEL = "realesr-animevideov3"
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "clip.mkv"
CLIPS = (
    "cfr",  # x264 with B-frames, BT.709 tags, AAC
    "vfr",
    "late_video",  # video starts 0.5 s after its audio
    "editlist",  # mp4 with an edit list (discarded leading packets)
    "ts",  # MPEG-TS starting at ~1.4 s
    "hevc10",  # 10-bit HEVC, BT.2020/HLG tags
    "odd",  # 63x35 VP9
    "rotated",  # mp4, display matrix 90 degrees
    "rich",  # 2 audio + ASS + SRT + font + cover art + chapters + title
    "no_audio",
    "single",  # one frame
    "sample",  # samples/clip.mkv: Opus, ASS, font, chapters (the human-readable run)
)
# Sources whose time base is finer than mkv's 1 ms: times may move by < 1 ms.
ROUNDED = {"editlist", "ts", "rotated"}
# Each default-yuv run's PSNR bound (dB) against the model's RGB frames: 4:2:0 chroma costs
# testsrc2's saturated colour edges (measured worst frames: cfr 33.1 dB, hevc10 33.3 dB).
YUV_PSNR = {"cfr": 31.0, "hevc10": 31.0}


@dataclass
class Run:
    """One CLI invocation: its exit code, stdout, stderr and (for --json) events."""

    args: list[str]
    code: int
    out: str
    err: str
    output: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def run_cli(*args: str | Path) -> Run:
    argv = [str(a) for a in args]
    code, out, err = helpers.run_cli(None, *argv)
    run = Run(argv, code, out, err)
    if "--json" in argv:
        run.events = helpers.json_events(out)
    return run


def rgb_pix_fmt(bit_depth: int) -> str:
    """A lossless RGB format ffv1 takes at the source's depth."""
    wanted = ("gbrp", "bgr0") if bit_depth <= 8 else ("gbrp10le", "gbrp16le")
    supported = encoder_pix_fmts("ffv1")
    return next(f for f in wanted if f in supported)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(media_clips: dict[str, Path]) -> dict[str, Path]:
    return {**{k: media_clips[k] for k in CLIPS if k != "sample"}, "sample": SAMPLE}


class Converter:
    """Runs each (clip, options) conversion once and keeps the result."""

    def __init__(self, clips: dict[str, Path], folder: Path) -> None:
        self.clips = clips
        self.folder = folder
        self._runs: dict[tuple[str, ...], Run] = {}

    def __call__(self, name: str, *options: str, pix_fmt: str | None = "rgb") -> Run:
        key = (name, str(pix_fmt), *options)
        if key not in self._runs:
            src = self.clips[name]
            fmt = rgb_pix_fmt(probe(src).video.bit_depth) if pix_fmt == "rgb" else pix_fmt
            out = self.folder / f"{name}.{fmt or 'default'}{''.join(options)}.mkv"
            extra = ["--pix-fmt", fmt] if fmt else []
            if name != "sample":  # the sample run shows the human-readable summary
                extra.append("--json")
            run = run_cli(
                "upscale", src, "-o", out, "--model", MODEL, "--device", "cpu",
                "--codec", "ffv1", *extra, *options,
            )  # fmt: skip
            assert run.code == 0, run.err
            run.output = out
            self._runs[key] = run
        return self._runs[key]


@pytest.fixture(scope="module")
def convert(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Converter:
    return Converter(clips, tmp_path_factory.mktemp("e2e"))


class Reference:
    """The model applied here to ``decode_frames`` of a source, quantised as the pipeline does:
    ``round(y * peak)`` with peak 255 (8-bit sources) or 65535 (deeper ones)."""

    def __init__(self) -> None:
        from vidsr.models.loader import load_network
        from vidsr.pipeline.infer import Upscaler

        self.net = load_network(MODEL)
        self.upscaler = Upscaler(self.net, device=torch.device("cpu"), dtype=torch.float32)
        self._frames: dict[Path, list[np.ndarray]] = {}
        self._cache: dict[tuple[Path, int], np.ndarray] = {}

    def run(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        peak = float(np.iinfo(rgb.dtype).max)
        with torch.inference_mode():
            x = torch.from_numpy(rgb[None]).permute(0, 3, 1, 2).to(torch.float32).div_(peak)
            y = self.upscaler(x, size)
            q = y.mul_(peak).round_().to(torch.int32 if peak > 255 else torch.uint8)
        return q.permute(0, 2, 3, 1).numpy().astype(rgb.dtype)[0]

    def __call__(self, path: Path, indices: list[int] | None = None) -> np.ndarray:
        """The reference frames ``indices`` (default: all) of ``path``, stacked."""
        if path not in self._frames:
            self._frames[path] = [f.rgb for f in decode_frames(path)]
        sources = self._frames[path]
        wanted = range(len(sources)) if indices is None else indices
        for i in wanted:
            if (path, i) not in self._cache:
                self._cache[path, i] = self.run(sources[i])
        return np.stack([self._cache[path, i] for i in wanted])


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


# --- helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    pts: int | None
    time: Fraction | None
    data: bytes
    discard: bool


@lru_cache(maxsize=64)
def packets(path: Path) -> dict[int, list[Packet]]:
    """Every non-empty packet of every stream, by stream index."""
    out: dict[int, list[Packet]] = {}
    with av.open(str(path)) as container:
        for p in container.demux():
            if not p.size:
                continue
            tb = p.stream.time_base
            t = p.pts * tb if p.pts is not None and tb else None
            out.setdefault(p.stream.index, []).append(Packet(p.pts, t, bytes(p), p.is_discard))
    return out


@lru_cache(maxsize=64)
def probed(path: Path) -> MediaInfo:
    return probe(path)


def relative_frame_times(path: Path) -> list[Fraction]:
    """Each frame's time minus the first audio packet's (the earliest pts of the first audio
    stream, discarded packets included: mkv has no discard flag, so an mp4's edit-list audio
    is copied as ordinary packets and the reference must count it on both sides), or minus the
    container start when there is no audio."""
    info = probed(path)
    ref = time_reference(path)
    return [info.video.frame_time(i) - ref for i in range(info.video.frame_count)]


def time_reference(path: Path) -> Fraction:
    info = probed(path)
    audio = [s for s in info.streams if s.type == "audio"]
    if audio:
        return min(p.time for p in packets(path)[audio[0].index] if p.time is not None)
    return info.start_time


def language(s: Any) -> str | None:
    # Matroska's demuxer reports "und" as no language at all.
    return None if s.language in (None, "und") else s.language


def stream_fields(s: Any) -> tuple[Any, ...]:
    return (s.type, s.codec, language(s), s.title, s.default, s.forced, s.dispositions)


def decoded(path: Path) -> np.ndarray:
    return np.stack([f.rgb for f in decode_frames(path)])


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# --- the matrix --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLIPS)
def test_frames_and_timing(name: str, clips: dict[str, Path], convert: Converter) -> None:
    src, out = clips[name], convert(name).output
    assert out is not None
    s, o = probed(src), probed(out)
    assert o.video.frame_count == s.video.frame_count
    src_times, out_times = relative_frame_times(src), relative_frame_times(out)
    assert len(out_times) == len(src_times)
    if name in ROUNDED:
        worst = max(abs(a - b) for a, b in zip(src_times, out_times, strict=True))
        assert worst < Fraction(1, 1000), f"{name}: a frame moved by {float(worst) * 1000:.3f} ms"
    else:
        assert s.format.startswith("matroska")
        assert out_times == src_times
    assert o.video.is_vfr == s.video.is_vfr


@pytest.mark.parametrize("name", CLIPS)
def test_streams_kept(name: str, clips: dict[str, Path], convert: Converter) -> None:
    src, out = clips[name], convert(name).output
    assert out is not None
    s, o = probed(src), probed(out)
    assert [stream_fields(x) for x in o.copied_streams] == [
        stream_fields(x) for x in s.copied_streams
    ]
    video_fields = [(v.title, language(v), v.dispositions) for v in (s.video, o.video)]
    assert video_fields[1] == video_fields[0]
    src_packets, out_packets = packets(src), packets(out)
    for a, b in zip(s.copied_streams, o.copied_streams, strict=True):
        if a.type == "attachment":
            continue
        got = [p.data for p in out_packets.get(b.index, [])]
        want = [p.data for p in src_packets.get(a.index, [])]
        assert got == want, f"{name}: stream #{a.index} ({a.type}) packets differ"
        # ... and at the same times, relative to the first audio packet like the video
        ref_s, ref_o = time_reference(src), time_reference(out)
        times_s = [p.time - ref_s for p in src_packets.get(a.index, []) if p.time is not None]
        times_o = [p.time - ref_o for p in out_packets.get(b.index, []) if p.time is not None]
        assert len(times_o) == len(times_s)
        slack = Fraction(1, 1000) if name in ROUNDED else 0
        assert all(abs(x - y) <= slack for x, y in zip(times_s, times_o, strict=True))
    src_att = attachments(src)
    assert attachments(out) == src_att
    assert o.title == s.title
    assert [(c.start, c.end, c.title) for c in o.chapters] == [
        (c.start, c.end, c.title) for c in s.chapters
    ]
    if name == "rich":  # the matrix really covers what it claims
        kinds = [x.type for x in s.copied_streams]
        assert kinds.count("audio") == 2 and kinds.count("subtitle") == 2
        assert {x.codec for x in s.copied_streams if x.type == "subtitle"} == {"ass", "subrip"}
        assert len(src_att) == 1 and s.cover_art and len(s.chapters) == 2 and s.title


def attachments(path: Path) -> list[tuple[str, str, bytes]]:
    with av.open(str(path)) as container:
        return [(a.name, a.mimetype, bytes(a.data)) for a in container.streams.attachments]


@pytest.mark.parametrize("name", CLIPS)
def test_video_properties(name: str, clips: dict[str, Path], convert: Converter) -> None:
    src, out = clips[name], convert(name).output
    assert out is not None
    s, o = probed(src).video, probed(out).video
    assert (o.width, o.height) == (s.width * 4, s.height * 4)
    assert o.codec == "ffv1" and o.pix_fmt == rgb_pix_fmt(s.bit_depth)
    assert o.bit_depth == (8 if s.bit_depth <= 8 else 10)
    assert o.rotation == s.rotation
    assert o.sample_aspect_ratio == s.sample_aspect_ratio
    # RGB output: the transfer and primaries are the source's; the matrix is "gbr", full range.
    assert (o.colour.primaries, o.colour.transfer) == (s.colour.primaries, s.colour.transfer)
    assert (o.colour.matrix, o.colour.range) == (colour.MATRIX_RGB, colour.RANGE_FULL)
    expected = {"odd": (252, 140), "rotated": (256, 144), "sample": (640, 360)}
    if name in expected:
        assert (o.width, o.height) == expected[name]
    if name == "rotated":
        assert s.rotation == 90
    if name == "hevc10":
        assert s.bit_depth == 10 and o.colour.transfer == 18  # arib-std-b67 (HLG)


@pytest.mark.parametrize("name", CLIPS)
def test_pixels_are_the_model_output(
    name: str, clips: dict[str, Path], convert: Converter, reference: Reference
) -> None:
    src, out = clips[name], convert(name).output
    assert out is not None
    got = decoded(out)
    n = probed(src).video.frame_count
    # Every frame; the sample's 640x360 frames cost 6x more: every 4th, and the last.
    indices = sorted({*range(0, n, 4), n - 1}) if name == "sample" else list(range(n))
    want = reference(src, indices)
    assert len(got) == n
    got = got[indices]
    assert got.shape == want.shape
    if want.dtype == np.uint8:
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        assert diff.max() == 0, f"{name}: {np.count_nonzero(diff)} values differ"
    else:
        # 16-bit pipeline values are stored as 10-bit codes (rounded), and read back by
        # swscale's bit replication (c << 6 | c >> 4), so `>> 6` recovers the codes exactly.
        want10 = np.rint(want.astype(np.float64) * (1023 / 65535)).astype(np.int32)
        got10 = got.astype(np.int32) >> 6
        assert np.array_equal(got.astype(np.int32), (got10 << 6) | (got10 >> 4))
        diff = np.abs(got10 - want10)
        assert diff.max() == 0, f"{name}: {np.count_nonzero(diff)} codes differ"


@pytest.mark.parametrize("name", [n for n in CLIPS if n != "sample"])
def test_json_events(name: str, clips: dict[str, Path], convert: Converter) -> None:
    run = convert(name)
    n = probed(clips[name]).video.frame_count
    events = run.events
    assert [e["event"] for e in events[:1] + events[-1:]] == ["start", "done"]
    start, done = events[0], events[-1]
    assert start["frames"] == n and start["model"] == MODEL
    assert start["output"] == done["output"] == str(run.output)
    progress = [e for e in events if e["event"] == "progress"]
    counts = [e["frames"] for e in progress]
    assert counts == sorted(counts) and counts[-1] == n and len(set(counts)) == len(counts)
    assert all(e["total"] == n for e in progress)
    # chunked runs also report each chunk; together the chunks are every frame once
    chunks = [e for e in events if e["event"] == "chunk_done"]
    assert {e["event"] for e in events[1:-1]} <= {"progress", "chunk_done"}
    assert sum(e["frames"] for e in chunks) in (0, n)
    assert done["frames"] == n
    assert {k: v["frames"] for k, v in done["stages"].items()} == {
        "decode": n,
        "infer": n,
        "encode": n,
    }
    assert done["bound"] in done["stages"] and done["damaged"] == []
    assert run.err == ""  # no progress bar, no summary in JSON mode


def test_human_summary(convert: Converter) -> None:
    run = convert("sample")
    assert run.out == ""
    assert "48 frames in" in run.err and "bound by:" in run.err
    for stage in ("decode", "infer", "encode"):
        assert f"  {stage}" in run.err


@pytest.mark.parametrize("name", sorted(YUV_PSNR))
def test_default_yuv_output(
    name: str, clips: dict[str, Path], convert: Converter, reference: Reference
) -> None:
    """The default pixel format keeps the source's bit depth and colour tags (4:2:0). ffv1 is
    lossless, so the output is exactly the model's frames through the colour module's
    RGB -> YUV 4:2:0 -> RGB; against the model's RGB frames it is a PSNR bound."""
    src = clips[name]
    out = convert(name, pix_fmt=None).output
    assert out is not None
    s, o = probed(src).video, probed(out).video
    assert o.pix_fmt == ("yuv420p" if s.bit_depth == 8 else "yuv420p10le")
    assert o.bit_depth == s.bit_depth
    assert o.colour == s.colour  # both clips are fully tagged: the tags pass through
    assert (o.matrix, o.range) == (s.matrix, s.range)
    assert o.frame_count == s.frame_count
    want, got = reference(src), decoded(out)
    to_yuv = colour.FromRGB(pix_fmt=o.pix_fmt, matrix=o.matrix, colour_range=o.range)
    to_rgb = colour.ToRGB(matrix=o.matrix, colour_range=o.range, high_bit_depth=o.bit_depth > 8)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert np.array_equal(g, to_rgb(to_yuv(w))), f"{name}: frame {i}"
    peak = float(np.iinfo(want.dtype).max)
    worst = min(psnr(g, w, peak) for g, w in zip(got, want, strict=True))
    assert worst > YUV_PSNR[name], f"{name}: worst frame {worst:.1f} dB"


# --- refusals, naming, options -------------------------------------------------------------------


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a model or decoding a frame fail the test."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr("vidsr.pipeline.infer.build_upscaler", forbidden)
    monkeypatch.setattr("vidsr.media.decode.decode_frames", forbidden)
    monkeypatch.setattr("vidsr.pipeline.video.upscale_segment", forbidden)


def test_mp4_refusals_come_before_any_work(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch)
    out = tmp_path / "out.mp4"
    run = run_cli("upscale", clips["rich"], "-o", out, "--device", "cpu", "--codec", "ffv1")
    assert run.code == 2
    lines = run.err.strip().splitlines()
    assert lines == [
        "vidsr: error: the new video cannot go in .mp4: .mp4 cannot hold ffv1 video; choose "
        "another --codec (libvpx-vp9 or libsvtav1 for .webm), or write .mkv"
    ], run.err
    run = run_cli("upscale", clips["rich"], "-o", out, "--device", "cpu")
    lines = run.err.strip().splitlines()
    assert run.code == 2 and len(lines) == 1, run.err
    assert "vidsr: error: .mp4 cannot carry a stream of rich.mkv: #5 attachment" in lines[0]
    assert lines[0].endswith(
        ".mp4 cannot carry attachments (fonts) - write .mkv, or pass --drop-unsupported to "
        "leave it out"
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unsupported_pix_fmt_refused_before_any_work(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch)
    out = tmp_path / "out.mkv"
    run = run_cli(
        "upscale", clips["single"], "-o", out, "--device", "cpu", "--codec", "ffv1",
        "--pix-fmt", "rgb24",
    )  # fmt: skip
    assert run.code == 2, run.err
    assert "rgb24" in run.err and len(run.err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_default_output_name_and_overwrite(clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "single.mkv"
    shutil.copy(clips["single"], src)
    args = ("upscale", src, "--device", "cpu", "--codec", "ffv1", "--json")
    first = run_cli(*args)
    assert first.code == 0, first.err
    out = tmp_path / "single.realesr-animevideov3.x4.mkv"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])
    assert first.events[-1]["output"] == str(out)
    before = out.read_bytes()
    again = run_cli(*args)
    assert again.code == 5 and "--overwrite" in again.err
    assert out.read_bytes() == before
    forced = run_cli(*args, "--overwrite")
    assert forced.code == 0, forced.err
    assert probed(out).video.frame_count == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])


def test_dry_run_prints_the_plan_and_writes_nothing(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch)
    src = tmp_path / "rich.mkv"
    shutil.copy(clips["rich"], src)
    run = run_cli("upscale", src, "--device", "cpu", "--codec", "ffv1", "--dry-run")
    assert run.code == 0, run.err
    out = tmp_path / "rich.realesr-animevideov3.x4.mkv"
    assert str(out) in run.out and "ffv1 256x144" in run.out
    assert "48 frames" in run.out and "CFR" in run.out
    assert "eng 'Stereo'" in run.out and "jpn 'Commentary'" in run.out
    assert "subrip fre 'Plain'" in run.out and "Dummy.ttf" in run.out
    assert "chapters:  2" in run.out and "estimate:" in run.out
    assert [p.name for p in tmp_path.iterdir()] == [src.name]


def test_scale_2_is_half_the_x4_size(
    clips: dict[str, Path], convert: Converter, reference: Reference
) -> None:
    x2 = convert("single", "--scale", "2").output
    x4 = convert("single").output
    assert x2 is not None and x4 is not None
    a, b = probed(x2).video, probed(x4).video
    assert (a.width * 2, a.height * 2) == (b.width, b.height) == (256, 144)
    # The pixels: the x4 network, then the pipeline's antialiased bicubic resize.
    frame = next(iter(decode_frames(clips["single"]))).rgb
    assert np.array_equal(decoded(x2)[0], reference.run(frame, (72, 128)))


def test_batch_size_3_gives_the_same_pixels(convert: Converter) -> None:
    one = convert("no_audio")
    three = convert("no_audio", "--batch-size", "3")
    assert three.events[0]["batch_size"] == 3
    assert one.output is not None and three.output is not None
    a, b = decoded(one.output), decoded(three.output)
    assert a.shape[0] == 24 and np.array_equal(a, b)
    assert relative_frame_times(one.output) == relative_frame_times(three.output)


def test_python_api_result(clips: dict[str, Path], tmp_path: Path, reference: Reference) -> None:
    """``vidsr.upscale``: the same pixels, and the run's figures: frames through each stage,
    the seconds each spent working, and the stage that bounded the run."""
    import vidsr

    src = clips["odd"]
    events: list[dict[str, Any]] = []
    result = vidsr.upscale(
        src,
        tmp_path / "odd.mkv",
        model=MODEL,
        device="cpu",
        codec="ffv1",
        pix_fmt="bgr0",
        on_event=lambda e: events.append(e.as_dict()),
    )
    assert result.frames == 24 and result.output == tmp_path / "odd.mkv"
    assert result.device.startswith("cpu") and result.precision == "fp32"
    assert set(result.stages) == {"decode", "infer", "encode"}
    for name, stage in result.stages.items():
        assert stage.name == name and stage.frames == 24 and stage.busy_seconds > 0
    assert result.bound == max(result.stages.values(), key=lambda st: st.busy_seconds).name
    assert 0 < result.stages["infer"].busy_seconds <= result.seconds
    assert result.fps == pytest.approx(24 / result.seconds)
    as_dict = json.loads(json.dumps(result.as_dict()))
    assert as_dict["bound"] == result.bound and as_dict["stages"]["infer"]["frames"] == 24
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert events[-1]["frames"] == 24 and events[-1]["bound"] == result.bound
    assert [e["frames"] for e in events if e["event"] == "progress"] == list(range(1, 25))
    assert np.array_equal(decoded(result.output), reference(src))
    assert relative_frame_times(result.output) == relative_frame_times(src)
