"""Chunked, resumable jobs: plans, equality with one-chunk runs, kill -9 anywhere and resume,
refusals, SIGTERM, and several worker processes (one killed mid-chunk)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path

import helpers
import numpy as np
import psutil
import pytest

from vidsr.errors import UsageError
from vidsr.jobs.plan import plan_chunks
from vidsr.media.decode import decode_frames
from vidsr.media.probe import probe

VIDSR = str(Path(sys.executable).with_name("vidsr"))
COMMON = ["--device", "cpu", "--codec", "ffv1", "--chunk-frames", "10", "--json"]


@pytest.fixture(scope="module")
def home(shared_home: Path) -> Path:
    from vidsr.models.loader import load_network

    load_network("realesr-animevideov3")  # convert once, before any subprocess
    return shared_home


def frames_of(path: Path) -> tuple[list[int], np.ndarray]:
    frames = list(decode_frames(path))
    return [f.pts for f in frames], np.stack([f.rgb for f in frames]).astype(np.int16)


def assert_same_video(a: Path, b: Path) -> None:
    pts_a, px_a = frames_of(a)
    pts_b, px_b = frames_of(b)
    assert pts_a == pts_b
    assert px_a.shape == px_b.shape
    assert np.abs(px_a - px_b).max() <= 1  # float noise across processes: at most 1 level


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict], str]:
    code, out, err = helpers.run_cli(capsys, *args)
    return code, helpers.json_events(out), err


@pytest.fixture(scope="module")
def reference(home: Path, media_clips: dict[str, Path], tmp_path_factory) -> Path:
    """An uninterrupted chunked run of the cfr clip (48 frames, 5 chunks)."""
    out = tmp_path_factory.mktemp("ref") / "ref.mkv"
    proc = subprocess.run(
        [VIDSR, "upscale", str(media_clips["cfr"]), "-o", str(out), *COMMON],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out


# --- plans ------------------------------------------------------------------------------


def test_plan_by_frames_and_by_seconds() -> None:
    pts = list(range(0, 100 * 1001, 1001))  # 100 frames at 30000/1001
    tb = Fraction(1, 30000)
    chunks = plan_chunks(pts, tb, chunk_frames=30)
    assert [(c.start, c.end) for c in chunks] == [(0, 30), (30, 60), (60, 90), (90, 100)]
    by_time = plan_chunks(pts, tb, chunk_seconds=1.0)
    assert [c.frames for c in by_time] == [30, 30, 30, 10]
    assert sum(c.frames for c in by_time) == 100 and by_time[-1].end == 100
    # VFR: the first half at 10 fps, the second at 50 fps: seconds cut by time, not count.
    vfr = [i * 100 for i in range(10)] + [1000 + i * 20 for i in range(50)]
    cuts = plan_chunks(vfr, Fraction(1, 1000), chunk_seconds=1.0)
    assert [c.frames for c in cuts] == [10, 50]
    with pytest.raises(ValueError):
        plan_chunks(pts, tb, chunk_frames=0)
    with pytest.raises(ValueError):
        plan_chunks(pts, tb, chunk_frames=5, chunk_seconds=1.0)
    # The option table refuses both before any plan, the caller's way:
    with pytest.raises(UsageError, match=r"chunk_frames= must be at least 1"):
        helpers.upscale_settings(chunk_frames=0)
    with pytest.raises(UsageError, match=r"give chunk_frames= or chunk_seconds=, not both"):
        helpers.upscale_settings(chunk_frames=5, chunk_seconds=1.0)


# --- equality ---------------------------------------------------------------------------


def test_chunked_equals_one_chunk(home, media_clips, reference, tmp_path, capsys) -> None:
    whole = tmp_path / "whole.mkv"
    code, events, err = run_cli(
        [
            "upscale",
            str(media_clips["cfr"]),
            "-o",
            str(whole),
            "--device",
            "cpu",
            "--codec",
            "ffv1",
            "--chunk-frames",
            "1000",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert [e["event"] for e in events].count("chunk_done") == 1
    assert_same_video(whole, reference)
    assert not (tmp_path / "whole.mkv.vidsr-work").exists()  # cleared after success


def test_chunked_vfr_keeps_times(home, media_clips, tmp_path, capsys) -> None:
    out = tmp_path / "vfr.mkv"
    code, _, err = run_cli(
        [
            "upscale",
            str(media_clips["vfr"]),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--codec",
            "ffv1",
            "--chunk-frames",
            "7",
            "--keep-work",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    src = probe(media_clips["vfr"]).video
    got = probe(out).video
    assert got.frame_count == src.frame_count
    src_t = [float(src.frame_time(i) - src.frame_time(0)) for i in range(src.frame_count)]
    got_t = [float(got.frame_time(i) - got.frame_time(0)) for i in range(got.frame_count)]
    assert np.allclose(src_t, got_t, atol=0.0011)  # mkv keeps milliseconds
    work = tmp_path / "vfr.mkv.vidsr-work"
    state = json.loads((work / "job.json").read_text())
    assert len(state["done"]) == len(state["chunks"]) == 6
    assert len(list((work / "segments").iterdir())) == 6


# --- kill -9 and resume ---------------------------------------------------------------------


def _spawn(
    args: list[str], env_extra: dict[str, str], program: tuple[str, ...] = (VIDSR,)
) -> tuple[subprocess.Popen, str]:
    tag = uuid.uuid4().hex
    env = {**os.environ, "VIDSR_TEST_TAG": tag, **env_extra}
    proc = subprocess.Popen(
        [*program, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, tag


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("VIDSR_TEST_TAG") == tag:
                found.append(p)
        except psutil.Error:
            continue
    return found


def _wait_mark(mark: Path, lines: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mark.exists() and len(mark.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before the pause: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("pause never reached")


def _no_orphans(tag: str) -> None:
    deadline = time.monotonic() + 5
    while _tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _tagged(tag), "processes of the killed run are still alive"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "lines", "redone"),
    [
        ("chunk", 3, {2, 3, 4}),  # killed inside chunk 2: chunks 0 and 1 are kept
        ("join", 1, set()),  # killed with the joined file half written
        ("mux", 1, set()),  # killed with the final temp file complete but not renamed
    ],
)
def test_kill_9_then_resume(
    home, media_clips, reference, tmp_path, capsys, phase: str, lines: int, redone: set[int]
) -> None:
    out = tmp_path / "out.mkv"
    mark = tmp_path / "mark"
    args = ["upscale", str(media_clips["cfr"]), "-o", str(out), *COMMON]
    pause = "1" if phase == "chunk" else "30"  # every chunk pauses; join and mux once
    proc, tag = _spawn(
        args, {"VIDSR_TEST_PAUSE": f"{phase}:{pause}", "VIDSR_TEST_PAUSE_MARK": str(mark)}
    )
    _wait_mark(mark, lines, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _no_orphans(tag)
    assert not out.exists()  # nothing under the final name
    work = tmp_path / "out.mkv.vidsr-work"
    state = json.loads((work / "job.json").read_text())
    assert set(map(int, state["done"])) == set(range(5)) - redone

    code, events, err = run_cli(args, capsys)  # the same command again
    assert code == 0, err
    assert {e["index"] for e in events if e["event"] == "chunk_done"} == redone
    start = next(e for e in events if e["event"] == "start")
    assert start["frames_done"] == sum(min(10, 48 - 10 * i) for i in set(range(5)) - redone)
    assert_same_video(out, reference)
    assert not work.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mark", "out.mkv"]  # no temp left


@pytest.mark.slow
def test_changed_source_or_settings_refused_restart_works(
    home, media_clips, tmp_path, capsys
) -> None:
    src = tmp_path / "src.mkv"
    src.write_bytes(media_clips["cfr"].read_bytes())
    out = tmp_path / "out.mkv"
    mark = tmp_path / "mark"
    args = ["upscale", str(src), "-o", str(out), *COMMON]
    proc, tag = _spawn(args, {"VIDSR_TEST_PAUSE": "chunk:1", "VIDSR_TEST_PAUSE_MARK": str(mark)})
    _wait_mark(mark, 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _no_orphans(tag)
    code, _, err = run_cli([*args[:-1], "--crf", "0", "--json"], capsys)  # other settings
    assert code == 8 and "settings differ" in err and len(err.strip().splitlines()) == 1
    os.utime(src, ns=(time.time_ns(), time.time_ns()))  # the source changed
    code, _, err = run_cli(args, capsys)
    assert code == 8 and "source changed" in err and "--restart" in err
    code, events, err = run_cli([*args, "--restart"], capsys)
    assert code == 0, err
    assert [e["event"] for e in events].count("chunk_done") == 5


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_says_how_to_resume(home, media_clips, tmp_path, capsys) -> None:
    out = tmp_path / "out.mkv"
    mark = tmp_path / "mark"
    args = ["upscale", str(media_clips["cfr"]), "-o", str(out), *COMMON[:-1]]
    proc, tag = _spawn(args, {"VIDSR_TEST_PAUSE": "chunk:1", "VIDSR_TEST_PAUSE_MARK": str(mark)})
    _wait_mark(mark, 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143
    last = err.strip().splitlines()[-1]
    assert "run the same command again to resume" in last and "Traceback" not in err
    _no_orphans(tag)
    assert not out.exists()
    code, events, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    assert [e["event"] for e in events].count("chunk_done") == 4  # chunk 0 was kept


# --- resume across front-ends: one fingerprint -----------------------------------------------


def _kill_inside_chunk_2(args: list[str], tmp_path: Path, program: tuple[str, ...]) -> None:
    """Run ``program ARGS`` in a process of its own and kill -9 it inside chunk 2 (chunks 0
    and 1 finished and recorded)."""
    mark = tmp_path / "mark"
    proc, tag = _spawn(
        args,
        {"VIDSR_TEST_PAUSE": "chunk:1", "VIDSR_TEST_PAUSE_MARK": str(mark)},
        program,
    )
    _wait_mark(mark, 3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _no_orphans(tag)
    mark.unlink()


@pytest.mark.slow
def test_killed_cli_job_resumes_through_the_api(home, media_clips, reference, tmp_path) -> None:
    import vidsr
    from vidsr.run.events import ChunkDone, JobStarted

    src, out = media_clips["cfr"], tmp_path / "out.mkv"
    _kill_inside_chunk_2(["upscale", str(src), "-o", str(out), *COMMON], tmp_path, (VIDSR,))
    events: list = []
    # precision="fp32" is what the CLI's default "auto" resolved to on the CPU: the same job.
    result = vidsr.upscale(
        src, out, device="cpu", codec="ffv1", chunk_frames=10, precision="fp32",
        on_event=events.append,
    )  # fmt: skip
    start = next(e for e in events if isinstance(e, JobStarted))
    assert (start.frames_done, start.chunks_todo) == (20, 3)
    assert sorted(e.index for e in events if isinstance(e, ChunkDone)) == [2, 3, 4]
    assert result.frames == 48
    assert_same_video(out, reference)


@pytest.mark.slow
def test_killed_api_job_resumes_on_the_command_line(
    home, media_clips, reference, tmp_path, capsys
) -> None:
    src, out = media_clips["cfr"], tmp_path / "out.mkv"
    script = (
        "import vidsr; vidsr.upscale("
        f"{str(src)!r}, {str(out)!r}, device='cpu', codec='ffv1', chunk_frames=10)"
    )
    _kill_inside_chunk_2(["-c", script], tmp_path, (sys.executable,))
    args = ["upscale", str(src), "-o", str(out), *COMMON]
    # A setting that changes the output's bytes is refused, named the way it was given.
    code, _, err = run_cli([*args, "--tile", "32"], capsys)
    assert code == 8 and len(err.strip().splitlines()) == 1
    assert "settings differ" in err and "--tile was 0, now 32" in err and "--restart" in err
    code, _, err = run_cli([*args, "--device-colour", "on"], capsys)
    assert code == 8 and "--device-colour was 'off', now 'on'" in err
    # Batch size and devices only change how fast: the job resumes.
    code, events, err = run_cli([*args, "--batch-size", "2", "--devices", "cpu,cpu"], capsys)
    assert code == 0, err
    start = next(e for e in events if e["event"] == "start")
    assert (start["frames_done"], start["chunks_todo"]) == (20, 3)
    assert sorted(e["index"] for e in events if e["event"] == "chunk_done") == [2, 3, 4]
    assert_same_video(out, reference)


def test_api_runs_with_other_settings_never_share_a_work_folder(
    home, media_clips, tmp_path
) -> None:
    """Each fingerprinted setting given to the API is part of the job (the API once left the
    denoise strength out): a second run with another value is refused, not mixed in."""
    import vidsr
    from vidsr.errors import JobStateError

    src, out = media_clips["cfr"], tmp_path / "out.mkv"

    def stop_after_first_chunk(event) -> None:
        if event.as_dict()["event"] == "chunk_done":
            raise KeyboardInterrupt

    common = {"device": "cpu", "codec": "ffv1", "chunk_frames": 10}
    with pytest.raises(KeyboardInterrupt):
        vidsr.upscale(src, out, tile=32, on_event=stop_after_first_chunk, **common)
    assert (tmp_path / "out.mkv.vidsr-work" / "job.json").exists()
    with pytest.raises(JobStateError, match=r"tile= was 32, now 0"):
        vidsr.upscale(src, out, **common)
    with pytest.raises(JobStateError, match=r"scale= was 4.0, now 2.0"):
        vidsr.upscale(src, out, tile=32, scale=2, **common)


# --- several workers ----------------------------------------------------------------------


@pytest.mark.slow
def test_two_cpu_workers_same_frames(home, media_clips, reference, tmp_path, capsys) -> None:
    out = tmp_path / "two.mkv"
    code, events, err = run_cli(
        ["upscale", str(media_clips["cfr"]), "-o", str(out), *COMMON, "--devices", "cpu,cpu"],
        capsys,
    )
    assert code == 0, err
    done = [e for e in events if e["event"] == "chunk_done"]
    assert sorted(e["index"] for e in done) == [0, 1, 2, 3, 4]
    assert {e["worker"] for e in done} <= {"cpu#0", "cpu#1"}
    progress = [e["frames"] for e in events if e["event"] == "progress"]
    assert progress[-1] == 48 and progress == sorted(progress)
    assert_same_video(out, reference)


@pytest.mark.slow
def test_worker_killed_mid_chunk_is_replaced(
    home, media_clips, reference, tmp_path, monkeypatch, capsys
) -> None:
    mark = tmp_path / "mark"
    monkeypatch.setenv("VIDSR_TEST_PAUSE", "chunk:2")
    monkeypatch.setenv("VIDSR_TEST_PAUSE_MARK", str(mark))
    killed: list[int] = []

    def kill_first_pausing_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if mark.exists() and mark.read_text().strip():
                pid = int(mark.read_text().splitlines()[0].split()[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_pausing_worker, daemon=True)
    killer.start()
    out = tmp_path / "out.mkv"
    code, events, err = run_cli(
        ["upscale", str(media_clips["cfr"]), "-o", str(out), *COMMON, "--devices", "cpu,cpu"],
        capsys,
    )
    killer.join(timeout=5)
    assert killed and killed[0] != os.getpid()
    assert code == 0, err
    done = [e["index"] for e in events if e["event"] == "chunk_done"]
    assert sorted(done) == [0, 1, 2, 3, 4]  # each chunk exactly once
    assert_same_video(out, reference)
