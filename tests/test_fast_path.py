"""CPU lanes and the encoder process's life: order and pixels kept over several lanes, one
encoder process reused across a job's chunks, a caller's script never re-imported in it,
and stale shared-memory segments of dead runs removed."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import pytest
import torch
from helpers import run_video, upscale_settings

from vidsr.errors import UsageError
from vidsr.media import colour as C
from vidsr.models.loader import load_network
from vidsr.pipeline import encoder_process
from vidsr.pipeline.encoder_process import EncoderProcess, encoder_pool
from vidsr.pipeline.infer import Upscaler
from vidsr.pipeline.lanes import Lanes, auto_lanes
from vidsr.run.events import Progress

MODEL = "realesr-animevideov3"


def encoder_children() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(p.cmdline())
            if "import child_main" in cmd and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --- lanes ------------------------------------------------------------------------------------


def test_lanes_keep_order_and_run_at_once() -> None:
    running, peak = 0, 0
    lock = threading.Lock()
    threads_seen: set[int] = set()

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        threads_seen.add(torch.get_num_threads())
        time.sleep(random.uniform(0, 0.02))  # finish out of order
        with lock:
            running -= 1
        return i * i

    before = torch.get_num_threads()
    with Lanes(work, 3, 1) as lanes:
        got = list(lanes.map(range(40)))
    assert got == [(i, i * i) for i in range(40)]
    assert peak == 3  # three items in flight at once, never more
    assert threads_seen == {1}  # each lane ran with its share of threads
    assert torch.get_num_threads() == before  # the caller's thread count is untouched


def test_lanes_raise_the_failure_in_order() -> None:
    def work(i: int) -> int:
        if i == 5:
            raise ValueError("bad frame 5")
        return i

    seen = []
    with Lanes(work, 2, 1) as lanes, pytest.raises(ValueError, match="bad frame 5"):
        for i, _ in lanes.map(range(20)):
            seen.append(i)
    assert seen == [0, 1, 2, 3, 4]


def test_auto_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidsr.pipeline import lanes as lanes_mod

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(lanes_mod, "_available_memory", lambda: 16 << 30)
    assert auto_lanes(torch.device("cuda"), 1080, 1920) == 1
    assert auto_lanes(torch.device("cpu"), 72, 128) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert auto_lanes(torch.device("cpu"), 72, 128) == lanes_mod.MAX_AUTO_LANES
    # Memory for one 1080p lane only: one lane.
    one_lane = 1080 * 1920 * (lanes_mod._BYTES_PER_PIXEL_PER_LANE + 48 * 4)
    monkeypatch.setattr(lanes_mod, "_available_memory", lambda: int(one_lane * 2.5))
    assert auto_lanes(torch.device("cpu"), 1080, 1920) == 1
    with pytest.raises(UsageError, match="lanes="):
        upscale_settings(lanes=-1)


def _upscale(src: Path, out: Path, lanes: int, **options: Any) -> Any:
    return run_video(src, out, model=MODEL, codec="ffv1", pix_fmt="bgr0", lanes=lanes, **options)


@pytest.mark.slow
def test_lanes_give_the_same_frames(media_clips: dict[str, Path], tmp_path: Path) -> None:
    src = media_clips["vfr"]
    one = _upscale(src, tmp_path / "one.mkv", 1)
    three = _upscale(src, tmp_path / "three.mkv", 3)
    assert (one.lanes, three.lanes) == (1, 3)
    a, b = frames_of(one.output), frames_of(three.output)
    assert len(a) == len(b) == one.frames > 10
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # Not just equal to each other: the model's own output for the first decoded frame.
    from vidsr.media.decode import decode_frames

    first = next(iter(decode_frames(src))).rgb
    up = Upscaler(load_network(MODEL), device=torch.device("cpu"), dtype=torch.float32)
    with torch.inference_mode():
        x = torch.from_numpy(first[None]).permute(0, 3, 1, 2).float().div_(255)
        want = up(x).mul_(255).round_().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(b[0], want)


# --- the encoder process ----------------------------------------------------------------------


def test_one_encoder_process_serves_every_chunk(
    media_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids: list[int | None] = []
    real_init = EncoderProcess.__init__

    def init(self: EncoderProcess, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        pids.append(self.pid)

    monkeypatch.setattr(EncoderProcess, "__init__", init)
    result = _upscale(media_clips["cfr"], tmp_path / "out.mkv", 1, chunk_frames=8)
    assert len(pids) >= 3 and len(set(pids)) == 1, pids  # every chunk, one process
    assert result.frames == sum(1 for _ in frames_of(result.output))
    assert not encoder_children()  # and it is gone once the job is done


def test_without_a_pool_each_encoder_has_its_own_process(tmp_path: Path) -> None:
    from fractions import Fraction

    pids = []
    for i in range(2):
        kwargs = {"path": tmp_path / f"{i}.mkv", "width": 64, "height": 36,
                  "time_base": Fraction(1, 24), "codec": "ffv1", "pix_fmt": "bgr0"}  # fmt: skip
        with EncoderProcess(kwargs, shape=(36, 64, 3), slots=2) as enc:
            pids.append(enc.pid)
            for pts in range(3):
                slot, view = enc.acquire()
                view[...] = pts * 40
                enc.submit(slot, pts)
            assert enc.finish().frames == 3
        assert not encoder_children()
    assert pids[0] != pids[1]
    assert [len(frames_of(tmp_path / f"{i}.mkv")) for i in range(2)] == [3, 3]


def test_a_failed_encoder_is_not_reused(tmp_path: Path) -> None:
    from fractions import Fraction

    with encoder_pool(prestart=True):
        (first,) = encoder_children()
        bad = {
            "path": tmp_path / "odd.mkv",
            "width": 63,
            "height": 35,
            "time_base": Fraction(1, 24),
        }  # fmt: skip  (x264 refuses odd sizes)
        with (
            pytest.raises(UsageError, match="odd size"),
            EncoderProcess(bad, shape=(35, 63, 3), slots=2) as enc,
        ):
            assert enc.pid == first.pid  # the prestarted process was taken
            for pts in range(50):
                slot, _view = enc.acquire()
                enc.submit(slot, pts)
            enc.finish()
        assert not first.is_running() or first.status() == psutil.STATUS_ZOMBIE
        good = {"path": tmp_path / "ok.mkv", "width": 64, "height": 36,
                "time_base": Fraction(1, 24), "codec": "ffv1"}  # fmt: skip
        with EncoderProcess(good, shape=(36, 64, 3), slots=2) as enc:
            assert enc.pid != first.pid
            slot, view = enc.acquire()
            view[...] = 7
            enc.submit(slot, 0)
            enc.finish()
    assert not encoder_children()
    assert len(frames_of(tmp_path / "ok.mkv")) == 1


@pytest.mark.slow
def test_a_script_without_a_main_guard_can_call_the_api(
    media_clips: dict[str, Path], tmp_path: Path
) -> None:
    """multiprocessing's spawn would re-run this script in the encoder process (it used to
    fail with "the encoder process died"); the encoder never imports the caller's script."""
    out = tmp_path / "out.mkv"
    marker = tmp_path / "imports.txt"
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import torch, vidsr
            with open({str(marker)!r}, "a") as f:
                f.write("imported\\n")
            r = vidsr.upscale({str(media_clips["cfr"])!r}, {str(out)!r}, device="cpu",
                              codec="ffv1", pix_fmt="bgr0")
            print(r.frames)
            """
        )
    )
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert run.returncode == 0, run.stderr
    assert marker.read_text() == "imported\n"  # run once, by us only
    assert int(run.stdout.strip()) == len(frames_of(out)) > 0


def test_stale_segments_of_dead_runs_are_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm here")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = SharedMemory(name=f"vidsr_{dead.pid}_test{os.getpid()}", create=True, size=16)
    mine = SharedMemory(name=f"vidsr_{os.getpid()}_test", create=True, size=16)
    try:
        monkeypatch.setattr(encoder_process, "_swept", False)
        removed = encoder_process._sweep_stale_segments()
        assert stale.name.lstrip("/") in removed
        assert not os.path.exists(f"/dev/shm/{stale.name.lstrip('/')}")
        assert os.path.exists(f"/dev/shm/{mine.name.lstrip('/')}")  # a live process's stays
        assert encoder_process._sweep_stale_segments() == []  # once per process
    finally:
        for shm in (stale, mine):
            shm.close()
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()


# --- YUV<->RGB on the device --------------------------------------------------------------------


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a if a.dtype == np.uint8 else a.view(np.int16))[None]


def _lavfi_frame(tmp: Path, size: str, pix_fmt: str) -> av.VideoFrame:
    """A testsrc2 frame stored losslessly (ffv1) in ``pix_fmt``, decoded back."""
    from media_factory import ffmpeg

    out = tmp / f"{size}.{pix_fmt}.mkv"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=24", "-frames:v", "1",
           "-pix_fmt", pix_fmt, "-c:v", "ffv1", out)  # fmt: skip
    with av.open(str(out)) as c:
        return next(c.decode(video=0))


@pytest.mark.parametrize(
    ("size", "pix_fmt", "matrix", "colour_range"),
    [
        ("64x36", "yuv420p", C.MATRIX_SMPTE170M, C.RANGE_LIMITED),
        ("63x35", "yuv420p", C.MATRIX_BT709, C.RANGE_FULL),  # odd: rounded-up chroma
        ("64x36", "yuv422p10le", C.MATRIX_BT2020_NCL, C.RANGE_LIMITED),
        ("64x36", "yuv444p", C.MATRIX_BT709, C.RANGE_LIMITED),
        ("64x36", "yuv420p10le", C.MATRIX_BT470BG, C.RANGE_FULL),
    ],
)
def test_device_colour_matches_the_cpu_conversion(
    tmp_path: Path, size: str, pix_fmt: str, matrix: int, colour_range: int
) -> None:
    """The torch conversions agree with ToRGB/FromRGB (numpy matrix + swscale chroma) to the
    rounding of swscale's 8/10-bit intermediate planes; 4:4:4 exactly."""
    frame = _lavfi_frame(tmp_path, size, pix_fmt)
    layout = C.planar_layout(pix_fmt)
    assert layout is not None
    to_rgb = C.ToRGB(matrix=matrix, colour_range=colour_range, high_bit_depth=layout.bits > 8,
                     to_float=True)  # fmt: skip
    want = to_rgb(frame)
    planes = C.ToPlanes(layout)(frame)  # (probes the chroma siting: the frame is spent)
    got = C.planes_to_rgb(
        _tensor(planes.y), _tensor(planes.u), _tensor(planes.v), layout,
        matrix=matrix, colour_range=colour_range, cosited=planes.cosited,
    )[0].permute(1, 2, 0).numpy()  # fmt: skip
    assert got.shape == want.shape
    err = np.abs(got - want).max() * 255
    assert err < (1e-3 if layout.sx == layout.sy == 0 else 1.05), err

    # Back: the same RGB to the same planes (chroma within one code of swscale's filter).
    from_rgb = C.FromRGB(pix_fmt=pix_fmt, matrix=matrix, colour_range=colour_range)
    ref = [C._plane(p, layout.dtype).astype(np.int64) for p in from_rgb(want).planes[:3]]
    packed = C.rgb_to_planes(
        torch.from_numpy(want).permute(2, 0, 1)[None], layout,
        matrix=matrix, colour_range=colour_range,
    )[0].numpy()  # fmt: skip
    packed = (packed if packed.dtype == np.uint8 else packed.view(np.uint16)).astype(np.int64)
    h, w = want.shape[:2]
    luma, chroma = layout.sizes(h, w)
    assert packed.size == layout.frame_elements(h, w)
    ch, cw = layout.chroma_size(h, w)
    parts = (packed[:luma].reshape(h, w), packed[luma : luma + chroma].reshape(ch, cw),
             packed[luma + chroma :].reshape(ch, cw))  # fmt: skip
    for name, part, r in zip("yuv", parts, ref, strict=True):
        limit = 0 if name == "y" or layout.sx == layout.sy == 0 else 1
        assert np.abs(part - r).max() <= limit, name


def test_planar_layouts() -> None:
    assert C.planar_layout("yuv420p") == C.PlanarLayout("yuv420p", 8, 1, 1)
    assert C.planar_layout("yuv422p10le") == C.PlanarLayout("yuv422p10le", 10, 1, 0)
    assert C.planar_layout("yuv444p16le").dtype == np.dtype("<u2")
    for fmt in ("rgb24", "gbrp", "gray", "nv12", "yuva420p", "yuv420p10be", "p010le", "yuv411p"):
        assert C.planar_layout(fmt) is None, fmt


def test_decode_planes_and_the_choice_of_path(media_clips: dict[str, Path]) -> None:
    from vidsr.media.decode import decode_frames
    from vidsr.media.probe import probe
    from vidsr.pipeline.video import plan_device_colour

    info = probe(media_clips["hevc10"])
    with decode_frames(media_clips["hevc10"], planes=True) as frames:
        first = next(frames)
    assert first.rgb is None and first.planes is not None
    assert first.planes.y.shape == (36, 64) and first.planes.u.shape == (18, 32)
    assert first.planes.y.dtype == np.dtype("<u2") and first.planes.y.max() < 1024
    kwargs = {"width": 256, "height": 144, "codec": "libx264"}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert plan_device_colour(info, kwargs, cpu, "auto") is None  # numpy on the CPU
    assert plan_device_colour(info, kwargs, cuda, "off") is None
    dc = plan_device_colour(info, kwargs, cuda, "auto")
    assert dc is not None and dc.source == C.planar_layout("yuv420p10le")
    assert dc.output == C.planar_layout("yuv420p10le")  # 10 bits stay 10 bits
    assert (dc.matrix, dc.out_matrix) == (C.MATRIX_BT2020_NCL, C.MATRIX_BT2020_NCL)
    rgb_out = plan_device_colour(info, {**kwargs, "codec": "ffv1", "pix_fmt": "bgr0"}, cpu, "on")
    assert rgb_out is not None and rgb_out.output is None and rgb_out.source is not None
    with pytest.raises(UsageError, match="device_colour= must be one of auto, on, off"):
        upscale_settings(device_colour="sometimes")  # the option's check, before any plan


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["odd", "hevc10", "vfr"])
def test_device_colour_run_keeps_frames_and_pixels(
    media_clips: dict[str, Path], tmp_path: Path, clip: str
) -> None:
    """A whole run with the conversions in torch (here on the CPU, as on a GPU): the same
    frames at the same times as the numpy path, pixels equal to within the rounding of the
    chroma filters (4:2:0 output through lossless ffv1)."""
    from vidsr.media.probe import probe

    src = media_clips[clip]
    runs = {}
    for mode in ("off", "on"):
        out = tmp_path / f"{mode}.mkv"
        runs[mode] = run_video(src, out, model=MODEL, codec="ffv1", device_colour=mode)
    a, b = (probe(r.output).video for r in runs.values())
    assert a.frame_pts == b.frame_pts and a.frame_count == runs["on"].frames
    assert (a.pix_fmt, a.colour) == (b.pix_fmt, b.colour)
    assert b.bit_depth == probe(src).video.bit_depth

    dtype = np.uint8 if b.bit_depth <= 8 else np.dtype("<u2")

    def planes(path: Path) -> np.ndarray:
        with av.open(str(path)) as c:
            frames = list(c.decode(video=0))
        return np.stack(
            [np.concatenate([C._plane(p, dtype).ravel() for p in f.planes[:3]]) for f in frames]
        ).astype(np.int64)

    diff = np.abs(planes(runs["off"].output) - planes(runs["on"].output))
    step = 1 if b.bit_depth <= 8 else 4  # codes per 8-bit level
    if clip == "odd":
        # 63x35 4:2:0: swscale (the numpy path) stretches the 32 chroma columns over 63 luma
        # columns; the device path places chroma as the standards do (2x, then crop), so
        # sharp chroma edges move by a fraction of a pixel. Close, not equal.
        mse = float((diff.astype(np.float64) ** 2).mean())
        assert 10 * np.log10(255**2 / mse) > 30
    else:
        assert diff.mean() < 0.25 * step and np.percentile(diff, 99.9) <= 3 * step, diff.max()


def test_write_planes_checks_its_input(tmp_path: Path) -> None:
    from fractions import Fraction

    from vidsr.errors import PipelineError
    from vidsr.media.encode import VideoEncoder

    enc = VideoEncoder(tmp_path / "p.mkv", width=64, height=36, time_base=Fraction(1, 24),
                       codec="ffv1", pix_fmt="yuv420p")  # fmt: skip
    layout = enc.planar
    assert layout == C.planar_layout("yuv420p")
    packed = np.arange(layout.frame_elements(36, 64), dtype=np.uint32).astype(np.uint8)
    enc.write_planes(packed, 0)
    with pytest.raises(PipelineError, match="samples"):
        enc.write_planes(packed[:-1], 1)
    enc.close()
    with av.open(str(tmp_path / "p.mkv")) as c:
        f = next(c.decode(video=0))
    got = np.concatenate([C._plane(p, np.uint8).ravel() for p in f.planes[:3]])
    assert np.array_equal(got, packed)  # lossless: exactly the planes given
    rgb = VideoEncoder(tmp_path / "r.mkv", width=64, height=36, time_base=Fraction(1, 24),
                       codec="ffv1", pix_fmt="bgr0")  # fmt: skip
    assert rgb.planar is None
    rgb.abort()


def test_chroma_siting_is_read_from_swscale(media_clips: dict[str, Path], tmp_path: Path) -> None:
    """H.264 frames carry "left" chroma (co-sited horizontally, centred vertically), which
    swscale honours; an untagged ffv1 frame is centred both ways. The probe leaves the
    copied planes alone and a decoder's reference frames untouched."""
    from vidsr.media.decode import decode_frames

    with av.open(str(media_clips["cfr"])) as c:  # libx264
        frame = next(c.decode(video=0))
    assert C.chroma_siting(frame) == (True, False)
    assert C.chroma_siting(_lavfi_frame(tmp_path, "64x36", "yuv420p")) == (False, False)
    assert C.chroma_siting(_lavfi_frame(tmp_path, "64x36", "yuv444p")) == (False, False)
    # Decoding with planes: the frames after the probed first one are intact (each equal to
    # the same frame decoded without the probe).
    with decode_frames(media_clips["cfr"], planes=True) as frames:
        planes = [f.planes for f in frames]
    with av.open(str(media_clips["cfr"])) as c:
        plain = [f for _, f in zip(range(len(planes)), c.decode(video=0), strict=False)]
    assert planes[0].cosited == (True, False)
    for p, f in zip(planes, plain, strict=True):
        assert np.array_equal(p.y, C._plane(f.planes[0], np.uint8))
        assert np.array_equal(p.u, C._plane(f.planes[1], np.uint8))


# --- --compile ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_compile_gives_the_same_frames(
    media_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd
) -> None:
    """``--compile`` through the CLI (torch.compile with inductor on the CPU, ~30 s to compile
    on 2 cores): the frames equal the eager run's within float reassociation."""
    from helpers import run_cli

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    src = media_clips["single"]
    outs = {}
    for flag in ("", "--compile"):
        out = tmp_path / f"out{flag}.mkv"
        args = ["upscale", str(src), "-o", str(out), "--device", "cpu", "--codec", "ffv1",
                "--pix-fmt", "bgr0", "--lanes", "2"]  # fmt: skip
        code, _, err = run_cli(capfd, *args, *([flag] if flag else []))
        assert code == 0, err
        outs[flag] = frames_of(out)
    assert any((tmp_path / "inductor").rglob("*.so")), "nothing was compiled"
    a, b = outs[""], outs["--compile"]
    assert len(a) == len(b) >= 1
    diff = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))
    assert diff <= 1


@pytest.mark.slow
def test_compile_failure_is_one_line(media_clips: dict[str, Path], tmp_path: Path) -> None:
    """No working C++ compiler: one line, exit 6 (a DeviceError), no output. In a fresh
    process: inductor caches its compiler check in-process."""
    out = tmp_path / "out.mkv"
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", "from vidsr.cli import main; main()", "upscale",
         str(media_clips["single"]), "-o", str(out), "--device", "cpu", "--compile"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 6, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip() and "frame/s" not in ln]
    assert len(lines) == 1 and "--compile failed" in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists()


# --- NVDEC / NVENC where present, with fallbacks ---------------------------------------------


def test_hw_decode_falls_back_to_software(media_clips: dict[str, Path]) -> None:
    """No NVIDIA device here: asking for NVDEC decodes in software, frame for frame."""
    from vidsr.media.decode import decode_frames

    src = media_clips["cfr"]
    with decode_frames(src, 3, 20, hwaccel=True) as hw:
        got = list(hw)
        if not torch.cuda.is_available():
            assert not hw.hw_used and not hw.hwaccel  # fell back, and will not retry
    with decode_frames(src, 3, 20) as sw:
        want = list(sw)
    assert [f.index for f in got] == list(range(3, 20))
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(got, want, strict=True))


@pytest.mark.slow
def test_hw_decode_option_runs_and_refuses_nonsense(
    media_clips: dict[str, Path], tmp_path: Path
) -> None:
    from vidsr.pipeline.video import use_hw_decode

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (use_hw_decode("auto", cpu), use_hw_decode("auto", cuda)) == (False, True)
    assert (use_hw_decode("on", cpu), use_hw_decode("off", cuda)) == (True, False)
    with pytest.raises(UsageError, match="hw_decode="):
        upscale_settings(hw_decode="maybe")
    src = media_clips["vfr"]
    outs = []
    for mode in ("off", "on"):
        out = tmp_path / f"{mode}.mkv"
        run_video(src, out, model=MODEL, codec="ffv1", pix_fmt="bgr0", hw_decode=mode)
        outs.append(frames_of(out))
    assert len(outs[0]) == len(outs[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*outs, strict=True))


def test_codec_auto_on_this_machine(media_clips: dict[str, Path], capfd) -> None:
    """What --codec auto gives here (the rule against fake GPUs: tests/test_gpu_readiness.py)."""
    from helpers import run_cli

    from vidsr.media import encode

    assert encode.resolve_codec("libx265", "cuda") == "libx265"  # only "auto" is resolved
    assert encode.resolve_codec("auto", "cpu") == "libx264"
    if not torch.cuda.is_available():  # no NVIDIA GPU (CI): NVENC does not open, fall back
        assert not encode.encoder_available("h264_nvenc")
        assert encode.resolve_codec("auto", "cuda") == "libx264"
        assert encode.resolve_codec("auto", "cuda", width=7680, height=4320) == "libx265"
    code, out, err = run_cli(capfd, "upscale", str(media_clips["cfr"]), "--device", "cpu",
                             "--codec", "auto", "--dry-run")  # fmt: skip
    assert code == 0, err
    assert "libx264" in out


# --- chunks encoded at once when the encoder bounds the run ------------------------------------


def test_encode_workers_rule() -> None:
    from vidsr.jobs.chunk import ChunkResult
    from vidsr.jobs.local import encode_workers_for

    def res(infer: float, encode: float, cpu: float) -> ChunkResult:
        return ChunkResult(0, 10, {"infer": (10, infer), "encode": (10, encode)},
                           encoder_cpu_seconds=cpu)  # fmt: skip

    assert encode_workers_for(res(2.0, 1.0, 1.0), cpus=16) == 1  # the model bounds it
    assert encode_workers_for(res(1.0, 4.0, 4.0), cpus=2) == 2  # one core per encoder
    assert encode_workers_for(res(1.0, 4.0, 8.0), cpus=2) == 1  # it already uses both cores
    assert encode_workers_for(res(1.0, 4.0, 12.0), cpus=16) == 4  # 3 cores each, at most 4
    assert encode_workers_for(res(0.1, 4.0, 4.0), cpus=16, limit=8) == 8


@pytest.mark.slow
def test_encoder_bound_run_encodes_chunks_at_once(
    media_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A near-instant model and a slow one-thread encoder (VP9, lossless): after the first
    chunk shows the encoder bounds the run, the next chunks are encoded two at a time (two
    encoder processes alive together), and the output is the same as one at a time."""
    from vidsr.jobs.local import InProcessExecutor
    from vidsr.models.loader import LoadedNetwork

    class Pointwise(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.flip(1) * 0.75 + 0.125
            return y.repeat_interleave(4, -2).repeat_interleave(4, -1)

    net = LoadedNetwork(module=Pointwise(), name="pointwise", arch="SRVGGNetCompact",
                        kwargs={}, scale=4, size_multiple=1, params=0)  # fmt: skip
    seen: list[int] = []
    real_run = InProcessExecutor._run_parallel

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(args[3])  # k
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(InProcessExecutor, "_run_parallel", spy)
    alive: list[int] = []
    src = media_clips["cfr"]
    outputs = {}
    for workers in (1, 0):
        upscaler = Upscaler(net, device=torch.device("cpu"), dtype=torch.float32)
        events: list[dict[str, Any]] = []

        def on_event(e: Any, events: list[dict[str, Any]] = events) -> None:
            events.append(e.as_dict())
            if isinstance(e, Progress):
                alive.append(len(encoder_children()))

        result = run_video(
            src, tmp_path / f"w{workers}.mkv", upscaler=upscaler, on_event=on_event,
            model=MODEL, codec="libvpx-vp9", encoder_opt={"lossless": "1"}, lanes=1,
            chunk_frames=6, encode_workers=workers,
        )  # fmt: skip
        outputs[workers] = frames_of(result.output)
        if workers == 0:
            assert result.encode_workers >= 2 and seen and seen[-1] >= 2
            assert max(alive) >= 2  # two encoders really ran together
            assert events[-1]["encode_workers"] == result.encode_workers
        else:
            assert result.encode_workers == 1 and not seen
        alive.clear()
    a, b = outputs[1], outputs[0]
    assert len(a) == len(b) == probe_frames(src)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def probe_frames(path: Path) -> int:
    from vidsr.media.probe import probe

    return probe(path).video.frame_count
