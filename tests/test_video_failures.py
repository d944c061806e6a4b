"""A failure anywhere in the video pipeline stops the run promptly with one clear line and
leaves nothing behind: no process, no partial file, nothing under the output name.

Real processes and real files throughout. Only CUDA is simulated (there is no GPU here): a
module that raises ``torch.cuda.OutOfMemoryError``. Library and in-process CLI tests use a
pointwise stand-in network (fast, and exact under any batching or tiling, so the OOM fallbacks
can be held to the very same pixels); the signal tests run the real console script with the
real model on a longer clip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import pytest
import torch
from helpers import run_cli, run_video
from media_factory import ffmpeg
from standins import Hook, fail_after, fake_upscaler, oom_when

from vidsr.errors import PipelineError, UsageError
from vidsr.pipeline.encoder_process import EncoderProcess
from vidsr.pipeline.infer import Upscaler, scaled_size
from vidsr.pipeline.step import ResilientStep
from vidsr.run.events import Progress

VIDSR = str(Path(sys.executable).with_name("vidsr"))
PROMPT = 5.0  # seconds: "promptly"


# --- environment -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _sigterm_handler() -> Iterator[None]:
    handler = signal.getsignal(signal.SIGTERM)  # main() installs its own
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x36, 20 s (480 frames): minutes of work for the real model, killed mid-run."""
    out = tmp_path_factory.mktemp("long") / "long.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=24:duration=20"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", out),
    )
    return out


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320x150, 12 frames: larger than the smallest OOM tile, with an odd height at x1.7."""
    out = tmp_path_factory.mktemp("big") / "big.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=320x150:rate=24", "-frames:v", "12"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", out),
    )
    return out


@pytest.fixture
def cli_model(monkeypatch: pytest.MonkeyPatch) -> Callable[[Hook | None], None]:
    """Make the CLI build the x4 stand-in (with ``hook``) instead of the real model."""

    def use(hook: Hook | None = None) -> None:
        monkeypatch.setattr(
            "vidsr.pipeline.infer.build_upscaler", lambda config, **kw: fake_upscaler(4, hook)
        )

    return use


# --- checks ----------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _live(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(root: int | None = None) -> list[psutil.Process]:
    """Live processes below ``root`` (this one), except multiprocessing's resource tracker:
    one per interpreter, shared by every run."""
    found = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if _live(p) and "resource_tracker" not in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def encoder_children() -> list[psutil.Process]:
    """This process's live encoder processes (started with ``python -c ... child_main()``)."""
    found = []
    for p in descendants():
        with contextlib.suppress(psutil.Error):
            if "encoder_process import child_main" in " ".join(p.cmdline()):
                found.append(p)
    return found


def wait_gone(procs: list[psutil.Process], timeout: float = 3.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while any(_live(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in procs if _live(p)]


def assert_nothing_running(before: set[int]) -> None:
    """No process this run started is left, and no pipeline thread."""
    new = [p for p in descendants() if p.pid not in before]
    assert not wait_gone(new), f"processes left: {[p.cmdline() for p in new]}"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        threads = [t.name for t in threading.enumerate() if t.name.startswith("vidsr-")]
        if not threads:
            break
        time.sleep(0.05)
    assert not threads, f"threads left: {threads}"


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name]


def upscale_video(
    src: Path, out: Path, upscaler: Upscaler, *, batch_size: int, on_event: Any = None
) -> Any:
    """A run of ``src`` into ``out`` at x2 (lossless ffv1) with the stand-in ``upscaler``."""
    return run_video(
        src, out, upscaler=upscaler, on_event=on_event, scale=2.0, codec="ffv1",
        batch_size=batch_size,
    )  # fmt: skip


def frames_of(path: Path) -> tuple[list[int], list[np.ndarray]]:
    """Every frame's pts and raw planes (ffv1 is lossless: equal planes, equal pixels)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return [f.pts for f in frames], [f.to_ndarray() for f in frames]


def assert_same_video(got: Path, want: Path) -> None:
    pts_got, px_got = frames_of(got)
    pts_want, px_want = frames_of(want)
    assert pts_got == pts_want  # every frame exactly once, in order
    assert len(px_got) == len(px_want)
    for i, (a, b) in enumerate(zip(px_got, px_want, strict=True)):
        assert np.array_equal(a, b), f"frame {i} differs"


def assert_one_line(err: str, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], err
    assert "Traceback" not in err


# --- the encoder process dies, the model fails ------------------------------------------------


def test_encoder_killed_mid_run_fails_promptly_and_leaves_nothing(
    media_clips: dict[str, Path], tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cfr.x2.mkv"
    before = {p.pid for p in descendants()}
    killed: list[float] = []

    def on_event(event: Any) -> None:
        if not isinstance(event, Progress) or killed:
            return
        (child,) = encoder_children()
        deadline = time.monotonic() + 10  # until the child has its partial segment open
        while not list(out_dir.rglob("*.part*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(out_dir.rglob("*.part*")), "the encoder never started writing"
        os.kill(child.pid, signal.SIGKILL)
        killed.append(time.monotonic())

    with pytest.raises(PipelineError, match="encoder process died"):
        upscale_video(media_clips["cfr"], out, fake_upscaler(2), batch_size=1, on_event=on_event)
    assert killed and time.monotonic() - killed[0] < PROMPT
    assert_nothing_running(before)
    assert list(out_dir.iterdir()) == []  # no output, no hidden video file, no partial file


def test_model_failure_mid_stream_surfaces_and_stops_everything(
    media_clips: dict[str, Path], tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cfr.x2.mkv"
    before = {p.pid for p in descendants()}
    boom = RuntimeError("CUDA error: an illegal memory access was encountered")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="illegal memory access"):
        upscale_video(media_clips["cfr"], out, fake_upscaler(2, fail_after(5, boom)), batch_size=1)
    assert time.monotonic() - t0 < PROMPT
    assert_nothing_running(before)
    assert list(out_dir.iterdir()) == []


def test_model_failure_through_the_cli_is_one_line(
    media_clips: dict[str, Path], tmp_path: Path, capfd, cli_model
) -> None:
    cli_model(fail_after(5, RuntimeError("CUDA error: an illegal memory access")))
    out = tmp_path / "out.mkv"
    before = {p.pid for p in descendants()}
    code, _, err = run_cli(capfd, "upscale", media_clips["cfr"], "-o", out, "--json")
    assert code == 70
    assert_one_line(err, "illegal memory access")
    assert not out.exists() and not partial_files(tmp_path)
    assert_nothing_running(before)


# --- the encoder cannot start -----------------------------------------------------------------


def test_encoder_setup_failure_is_prompt_and_keeps_its_class(tmp_path: Path) -> None:
    target = tmp_path / "odd.mkv"
    kwargs = {"path": target, "width": 63, "height": 35, "time_base": Fraction(1, 24)}
    before = {p.pid for p in descendants()}
    t0 = time.monotonic()
    with (
        pytest.raises(UsageError, match="odd size 63x35"),
        EncoderProcess(kwargs, shape=(35, 63, 3), slots=4) as encoder,
    ):
        for i in range(10_000):  # far more than the ring holds: it must notice the failure
            slot, view = encoder.acquire()
            view[...] = i % 256
            encoder.submit(slot, i)
        encoder.finish()
    assert time.monotonic() - t0 < PROMPT
    assert_nothing_running(before)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--codec", "nope"], 2, "unknown video encoder 'nope'"),  # refused before any work
        (["--pix-fmt", "rgb48le"], 2, "libx264 cannot encode rgb48le"),
        # Only the encoder itself knows; x264 also prints its reason to stderr directly.
        (["--encoder-opt", "profile=nonsense"], 7, "invalid profile: nonsense"),
    ],
    ids=["unknown-codec", "pix-fmt", "bad-option"],
)
def test_encoder_setup_failure_through_the_cli(
    media_clips: dict[str, Path], tmp_path: Path, capfd, cli_model, args, code, needle
) -> None:
    cli_model()
    out = tmp_path / "out.mkv"
    before = {p.pid for p in descendants()}
    got, _, err = run_cli(capfd, "upscale", media_clips["cfr"], "-o", out, "--json", *args)
    assert got == code, err
    assert_one_line(err, needle)
    assert not out.exists() and not partial_files(tmp_path)
    assert_nothing_running(before)


# --- CUDA out of memory -----------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2.0, 1.7])
def test_oom_fallback_gives_the_same_pixels(scale: float) -> None:
    x = torch.rand((4, 3, 150, 320), generator=torch.Generator().manual_seed(0))
    size = scaled_size(150, 320, scale, 2, even=True)  # as a video plan sizes it
    want = fake_upscaler(2)(x, size)
    # Whole 150x320 frames (48000 px) and 256-pixel tiles (up to 150x266) run out of memory;
    # 128-pixel tiles (up to 138x148 with their padding) do not.
    net = fake_upscaler(2, oom_when(batch_over=1, pixels_over=30_000))
    infer = ResilientStep(net, lambda b, n: n(b, size), (150, 320))
    parts = infer(x)
    assert [p.shape[0] for p in parts] == [1, 1, 1, 1]  # every frame once, in order
    got = torch.cat(parts)
    assert infer.max_batch == 1
    assert infer.tiled is not None and infer.tiled.tile == 128
    assert got.shape == want.shape  # x1.7: 255 rows rounded down to an even 254, as planned
    assert torch.equal(got, want)
    assert torch.equal(infer(x[:1])[0], want[:1])  # later batches go straight to what worked
    # ... and so does the next chunk's step: what was learned is the network's
    again = ResilientStep(net, lambda b, n: n(b, size), (150, 320))
    assert again.max_batch == 1 and again.tiled is infer.tiled


def test_oom_on_batches_retries_smaller_with_every_frame_once(
    media_clips: dict[str, Path], tmp_path: Path
) -> None:
    src = media_clips["cfr"]
    want = upscale_video(src, tmp_path / "want.mkv", fake_upscaler(2), batch_size=4)
    ran: list[int] = []
    faulty = fake_upscaler(2, oom_when(batch_over=1, ran=ran))
    got = upscale_video(src, tmp_path / "got.mkv", faulty, batch_size=4)
    assert got.frames == want.frames == 48
    assert ran == [1] * 48  # the model completed each frame exactly once
    assert_same_video(tmp_path / "got.mkv", tmp_path / "want.mkv")


def test_oom_on_large_frames_falls_back_to_tiles(big_clip: Path, tmp_path: Path) -> None:
    want = upscale_video(big_clip, tmp_path / "want.mkv", fake_upscaler(2), batch_size=3)
    faulty = fake_upscaler(2, oom_when(batch_over=1, pixels_over=30_000))
    got = upscale_video(big_clip, tmp_path / "got.mkv", faulty, batch_size=3)
    assert got.frames == want.frames == 12
    assert_same_video(tmp_path / "got.mkv", tmp_path / "want.mkv")


def test_oom_everywhere_fails_the_run(media_clips: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cfr.x2.mkv"
    before = {p.pid for p in descendants()}
    t0 = time.monotonic()
    with pytest.raises(PipelineError, match="out of GPU memory even for one frame"):
        upscale_video(
            media_clips["cfr"], out, fake_upscaler(2, oom_when(always=True)), batch_size=4
        )
    assert time.monotonic() - t0 < PROMPT
    assert_nothing_running(before)
    assert list(out_dir.iterdir()) == []


# --- signals to the real command line ---------------------------------------------------------


@pytest.fixture(scope="module")
def converted(shared_home: Path) -> Path:
    """Convert the default model once in this process, so subprocesses start quickly."""
    from vidsr.models.loader import load_network

    load_network("realesr-animevideov3")
    return shared_home


class Cli:
    """``vidsr upscale ... --json`` in its own session (a signal can go to its whole process
    group, as Ctrl-C does); JSON events are read from stdout in a thread."""

    def __init__(self, *args: str | Path) -> None:
        self.proc = subprocess.Popen(
            [VIDSR, "upscale", *map(str, args), "--device", "cpu", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))
        self.events.put(None)

    def wait_frames(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event is None:
                self.proc.wait(timeout=10)
                raise AssertionError(f"vidsr ended before frame {n}: {self.stderr()}")
            if event["event"] == "progress" and event["frames"] >= n:
                return

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def cli_runs() -> Iterator[list[Cli]]:
    runs: list[Cli] = []
    yield runs
    for run in runs:
        if run.proc.poll() is None:
            run.kill()


@pytest.mark.slow
def test_parent_killed_leaves_no_orphan_encoder(
    converted: Path, long_clip: Path, tmp_path: Path, cli_runs: list[Cli]
) -> None:
    out = tmp_path / "long.x4.mkv"
    run = Cli(long_clip, "-o", out)
    cli_runs.append(run)
    run.wait_frames(6)  # past the 4-slot ring: the encoder is writing its partial segment
    children = psutil.Process(run.proc.pid).children(recursive=True)
    assert any("encoder_process import child_main" in " ".join(p.cmdline()) for p in children)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(timeout=5)
    left = wait_gone(children, timeout=3)
    assert not left, f"orphans: {[p.cmdline() for p in left]}"
    assert not out.exists()
    assert not partial_files(tmp_path)  # the orphaned encoder deleted its partial segment


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"),
    [
        pytest.param(signal.SIGINT, 130, id="SIGINT"),
        pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
    ],
)
def test_signal_stops_cleanly(
    converted: Path,
    long_clip: Path,
    tmp_path: Path,
    cli_runs: list[Cli],
    sig: signal.Signals,
    code: int,
) -> None:
    out = tmp_path / "long.x4.mkv"
    run = Cli(long_clip, "-o", out)
    cli_runs.append(run)
    run.wait_frames(6)
    children = psutil.Process(run.proc.pid).children(recursive=True)
    t0 = time.monotonic()
    os.killpg(run.proc.pid, sig)  # the whole group, as a terminal or a service manager does
    run.proc.wait(timeout=15)
    assert time.monotonic() - t0 < PROMPT
    err = run.stderr()
    assert not wait_gone(children, timeout=3)
    assert not out.exists() and not partial_files(tmp_path)
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1
    assert run.proc.returncode == code, err
    assert "run the same command again to resume" in err


# --- bad input, bad output --------------------------------------------------------------------


def _bad_input(name: str, media: dict[str, Path], folder: Path) -> Path:
    """The file for case ``name`` in ``folder`` (a copy: its bytes are checked afterwards)."""
    sources = {
        "garbage": ("garbage.mkv", media["garbage"].read_bytes()),
        "empty": ("empty.mp4", b""),
        "text": ("notes.mp4", media["text"].read_bytes()),
        "audio_only": ("audio.mka", media["audio_only"].read_bytes()),
        "undecodable": ("undecodable.mkv", media["undecodable"].read_bytes()),
        "corrupt": ("corrupt.mkv", media["corrupt"].read_bytes()),
        "good": ("good.mkv", media["cfr"].read_bytes()),
    }
    if name == "missing":
        return folder / "missing.mkv"
    file_name, data = sources[name]
    path = folder / file_name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("case", "output", "extra", "code", "needle"),
    [
        ("missing", "out.mkv", [], 3, "no such file"),
        ("garbage", "out.mkv", [], 3, "not a media file"),
        ("empty", "out.mkv", [], 3, "not a media file"),
        ("text", "out.mkv", [], 3, "not a media file"),
        ("audio_only", "out.mkv", [], 3, "no video stream"),
        ("undecodable", "out.mkv", [], 3, "can be decoded"),
        ("corrupt", "out.mkv", [], 3, "cannot decode frame 6"),
        ("good", "good.mkv", [], 2, "is the input file"),
        ("good", "good.mkv", ["--overwrite"], 2, "is the input file"),
        ("good", "no/such/folder/out.mkv", [], 5, "does not exist"),
    ],
    ids=[
        "missing",
        "garbage",
        "empty",
        "text",
        "audio-only",
        "undecodable",
        "corrupt",
        "output-is-input",
        "output-is-input-overwrite",
        "no-output-folder",
    ],
)
def test_bad_input_or_output_is_one_line(
    media_clips: dict[str, Path],
    tmp_path: Path,
    capfd,
    cli_model,
    case: str,
    output: str,
    extra: list[str],
    code: int,
    needle: str,
) -> None:
    cli_model()
    src = _bad_input(case, media_clips, tmp_path)
    out = tmp_path / output
    before = sha(src) if src.exists() else None
    got, stdout, err = run_cli(capfd, "upscale", src, "-o", out, "--json", *extra)
    assert got == code, err
    assert_one_line(err, needle)
    assert "Traceback" not in stdout
    if before is not None:
        assert sha(src) == before
    if out != src:
        assert not out.exists()
    assert not partial_files(tmp_path)


def test_damaged_file_with_ignore_errors_keeps_what_decodes(
    media_clips: dict[str, Path], tmp_path: Path, capfd, cli_model
) -> None:
    from vidsr.media.probe import probe

    cli_model()
    src = _bad_input("corrupt", media_clips, tmp_path)
    before = sha(src)
    out = tmp_path / "out.mkv"
    code, stdout, err = run_cli(capfd, "upscale", src, "-o", out, "--json", "--ignore-errors")
    assert code == 0, err
    done = [json.loads(ln) for ln in stdout.splitlines() if '"done"' in ln][-1]
    lost = probe(src).video.frame_count - probe(out).video.frame_count
    assert lost == 5 and done["frames"] == probe(out).video.frame_count  # frames 6-10
    assert len(done["damaged"]) == 5  # the damage is reported
    assert "Traceback" not in err
    assert sha(src) == before
    assert not partial_files(tmp_path)


def test_damaged_file_leaves_nothing_so_ignore_errors_can_follow(
    media_clips: dict[str, Path], tmp_path: Path, capfd, cli_model
) -> None:
    cli_model()
    src = _bad_input("corrupt", media_clips, tmp_path)
    out = tmp_path / "out.mkv"
    code, _, err = run_cli(capfd, "upscale", src, "-o", out, "--json")
    assert code == 3, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]
    code, _, err = run_cli(capfd, "upscale", src, "-o", out, "--json", "--ignore-errors")
    assert code == 0, err


# --- an unwritable folder, a full disk --------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int, *, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only; the test is skipped where mounting is refused)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(folder: Path, leave_kb: int) -> None:
    """Fill ``folder``'s file system but ``leave_kb`` KiB."""
    free = shutil.disk_usage(folder).free
    (folder / "filler").write_bytes(b"\0" * (free - leave_kb * 1024))
    assert abs(shutil.disk_usage(folder).free - leave_kb * 1024) <= 4096


def test_read_only_output_folder(media_clips: dict[str, Path], tmp_path: Path, capfd) -> None:
    with tmpfs(tmp_path / "ro", 64, read_only=True) as folder:
        src = media_clips["cfr"]
        before = sha(src)
        code, _, err = run_cli(capfd, "upscale", src, "-o", folder / "out.mkv", "--json")
        assert code == 5
        assert_one_line(err, "not writable")
        assert sha(src) == before
        assert list(folder.iterdir()) == []


def _blocks(n: int) -> int:
    return math.ceil(n / 4096) * 4


@pytest.fixture
def sizes(media_clips: dict[str, Path], tmp_path: Path, capfd, cli_model) -> dict[str, int]:
    """Bytes of the segment and of the output a normal run writes (to size the full disks)."""
    cli_model()
    out = tmp_path / "sizes" / "out.mkv"
    out.parent.mkdir()
    code, _, err = run_cli(capfd, "upscale", media_clips["cfr"], "-o", out, "--keep-work")
    assert code == 0, err
    (segment,) = (out.parent / "out.mkv.vidsr-work" / "segments").iterdir()
    return {"segment": segment.stat().st_size, "output": out.stat().st_size}


@pytest.mark.parametrize(
    "where",
    [
        "encoder",
        "mux",
    ],
)
def test_full_disk(
    media_clips: dict[str, Path],
    tmp_path: Path,
    capfd,
    cli_model,
    sizes: dict[str, int],
    where: str,
) -> None:
    cli_model()
    src = media_clips["cfr"]
    before = sha(src)
    # encoder: not even room for the segment. mux: room for the segment, its joined copy and
    # job.json (with its temporary twin), not for the final file.
    leave = 8 if where == "encoder" else 2 * _blocks(sizes["segment"]) + 8
    assert where == "encoder" or _blocks(sizes["output"]) > 8
    with tmpfs(tmp_path / "disk", 1024) as folder:
        _fill(folder, leave)
        out = folder / "out.mkv"
        code, _, err = run_cli(capfd, "upscale", src, "-o", out, "--json")
        assert "Traceback" not in err
        assert not out.exists() and not partial_files(folder)
        assert code == 5, err
        assert_one_line(err, "disk full")
    assert sha(src) == before
