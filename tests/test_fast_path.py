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

from vidsr.config import InferConfig
from vidsr.errors import UsageError
from vidsr.jobs.runner import JobOptions, run_job
from vidsr.models.loader import load_network
from vidsr.pipeline import encoder_process
from vidsr.pipeline.encoder_process import EncoderProcess, encoder_pool
from vidsr.pipeline.infer import Upscaler
from vidsr.pipeline.lanes import Lanes, auto_lanes
from vidsr.pipeline.video import EncodeConfig, plan_video

MODEL = "realesr-animevideov3"


@pytest.fixture(autouse=True)
def _env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSR_HOME", str(tmp_path_factory.getbasetemp() / "vidsr-home"))
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", "http://127.0.0.1:9/unreachable/")


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
    with pytest.raises(UsageError, match="--lanes"):
        InferConfig(lanes=-1)


def _upscale(src: Path, out: Path, lanes: int, **job: Any) -> Any:
    plan = plan_video(
        src, out, model=MODEL, scale=None, encode=EncodeConfig(codec="ffv1", pix_fmt="bgr0"),
        overwrite=False,
    )  # fmt: skip
    config = InferConfig(model=MODEL, device="cpu", lanes=lanes)
    return run_job(plan, config, JobOptions(**job))


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
