"""`vidsr batch`: inputs (files, folders, globs, list files), output names and folders, a
corrupt file that fails alone, reruns that leave finished outputs untouched, --max-hours stop
and resume, the free-disk check, the report, the log and the exit codes. Real clips, the real
CLI in-process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from helpers import run_cli as run
from media_factory import X264_B, ffmpeg

from vidsr import batch
from vidsr.batch import collect_inputs, order_inputs, output_name
from vidsr.errors import Interrupted, UsageError
from vidsr.media.probe import probe
from vidsr.options import DEFAULT_NAME_TEMPLATE

MODEL = ["--model", "realesr-animevideov3", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # 64x36 frames: one torch thread is faster than two fighting over a busy machine.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clip(path: Path, seconds: float, audio: bool = False) -> Path:
    """A 64x36 24 fps x264 clip (``seconds * 24`` frames), optionally with AAC audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=24:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=sample_rate=48000:duration={seconds}"]
        args += ["-c:a", "aac", "-b:a", "32k"]
    ffmpeg(*args, *X264_B, path)
    return path


def fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def report_of(path: Path) -> dict[str, dict]:
    data = json.loads(path.read_text())
    return {entry["rel"]: entry for entry in data["files"]} | {"_": data}


@pytest.fixture(scope="module")
def shows(tmp_path_factory: pytest.TempPathFactory, media_clips: dict[str, Path]) -> Path:
    """shows/a.mkv (6 frames, audio), shows/sub/b.mp4 (12 frames), shows/bad.mkv (the corrupt
    clip), and things a folder scan must leave alone."""
    root = tmp_path_factory.mktemp("batch") / "shows"
    clip(root / "a.mkv", 0.25, audio=True)
    clip(root / "sub" / "b.mp4", 0.5)
    shutil.copy(media_clips["corrupt"], root / "bad.mkv")
    (root / "notes.txt").write_text("not a video")
    (root / ".hidden.mkv").write_bytes(b"")
    return root


def test_good_and_corrupt_files_then_a_rerun_skips_untouched(
    shows: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    args = ["batch", str(shows), "-r", "-o", str(out), "--report", str(report), *MODEL]
    code, stdout, err = run(capsys, *args)
    assert code == batch.EXIT_FAILED, err

    a = out / "a.realesr-animevideov3.x4.mkv"
    b = out / "sub" / "b.realesr-animevideov3.x4.mkv"  # the folder below the input is kept
    for made, frames in ((a, 6), (b, 12)):
        info = probe(made)
        assert (info.video.frame_count, info.video.width, info.video.height) == (frames, 256, 144)
    assert [s.type for s in probe(a).streams] == ["audio"]
    assert not (out / "a.realesr-animevideov3.x4.mkv.vidsr-work").exists()
    assert not list(out.glob("notes*")) and not list(out.glob(".hidden*"))

    r = report_of(report)
    assert set(r) == {"a.mkv", "sub/b.mp4", "bad.mkv", "_"}
    assert r["a.mkv"]["status"] == "ok" and r["a.mkv"]["frames"] == 6
    assert r["sub/b.mp4"]["status"] == "ok" and r["sub/b.mp4"]["output"] == str(b)
    bad = r["bad.mkv"]
    assert bad["status"] == "failed" and bad["exit_code"] == 3
    assert "bad.mkv" in bad["error"] and "frame 6" in bad["error"]
    assert r["_"]["counts"] == {"ok": 2, "failed": 1} and r["_"]["exit_code"] == 3

    # The summary table on stdout, the log in OUTDIR.
    header = stdout.splitlines()[0].split()
    assert header == ["file", "status", "frames", "time", "fps", "size", "error"]
    assert any(line.startswith("bad.mkv") and " failed " in line for line in stdout.splitlines())
    logs = list(out.glob("vidsr-batch-*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert "FAILED: " in log and "bad.mkv" in log and "ok: 6 frames" in log

    before = {p: fingerprint(p) for p in (a, b)}
    code, stdout, err = run(capsys, *args)
    assert code == batch.EXIT_FAILED, err
    r = report_of(report)
    assert r["a.mkv"]["status"] == "skipped" and r["sub/b.mp4"]["status"] == "skipped"
    assert r["a.mkv"]["frames"] == 6 and r["bad.mkv"]["status"] == "failed"
    assert {p: fingerprint(p) for p in (a, b)} == before  # mtime and bytes unchanged
    assert len(list(out.glob("vidsr-batch-*.log"))) == 2  # one log per batch


def test_collect_inputs(shows: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flat = collect_inputs([str(shows)])
    assert sorted(str(i.rel) for i in flat) == ["a.mkv", "bad.mkv"]
    deep = collect_inputs([str(shows)], recursive=True)
    assert sorted(str(i.rel) for i in deep) == ["a.mkv", "bad.mkv", "sub/b.mp4"]

    # globs keep the folders below their fixed part; duplicates are dropped
    found = collect_inputs([f"{shows}/**/*.mp4", str(shows / "sub" / "b.mp4")])
    assert [(str(i.rel), i.error) for i in found] == [("sub/b.mp4", None)]

    # @list and --from-file: relative to the list's folder, comments and blanks ignored
    lst = shows / "list.txt"
    lst.write_text("# tonight\na.mkv\n\nsub/b.mp4\nmissing.mkv\n")
    try:
        got = collect_inputs([f"@{lst}"])
        assert [str(i.rel) for i in got] == ["a.mkv", "b.mp4", "missing.mkv"]
        assert got[2].error and "no such file" in got[2].error
        assert [str(i.rel) for i in collect_inputs([], from_files=[lst])][:2] == ["a.mkv", "b.mp4"]
    finally:
        lst.unlink()

    # an output folder inside the input folder, and job work folders, are never inputs
    inner = shows / "out"
    (inner / "x.vidsr-work").mkdir(parents=True)
    clip(inner / "done.mkv", 0.1)
    try:
        got = collect_inputs([str(shows)], recursive=True, exclude=[inner])
        assert sorted(str(i.rel) for i in got) == ["a.mkv", "bad.mkv", "sub/b.mp4"]
    finally:
        shutil.rmtree(inner)

    empty = collect_inputs([str(tmp_path / "none" / "*.mkv")])
    assert len(empty) == 1 and "matches no video file" in empty[0].error

    # order: name, size (smallest first), mtime (oldest first), reversed; errors last
    items = collect_inputs([str(shows), "nope.mkv"], recursive=True)
    os.utime(shows / "a.mkv", ns=(1, 3_000_000_000))
    os.utime(shows / "bad.mkv", ns=(1, 1_000_000_000))
    os.utime(shows / "sub" / "b.mp4", ns=(1, 2_000_000_000))
    names = lambda xs: [str(i.rel) for i in xs]  # noqa: E731
    assert names(order_inputs(items, "name")) == ["a.mkv", "bad.mkv", "sub/b.mp4", "nope.mkv"]
    assert names(order_inputs(items, "mtime")) == ["bad.mkv", "sub/b.mp4", "a.mkv", "nope.mkv"]
    assert names(order_inputs(items, "name", reverse=True))[:3] == [
        "sub/b.mp4",
        "bad.mkv",
        "a.mkv",
    ]
    sizes = [(shows / n).stat().st_size for n in names(order_inputs(items, "size"))[:3]]
    assert sizes == sorted(sizes)


def test_output_names(shows: Path) -> None:
    item = collect_inputs([str(shows)], recursive=True)[-1]  # sub/b.mp4
    kw = {"model": "realesr-animevideov3", "scale": 2.0, "codec": "libx265"}
    assert output_name(DEFAULT_NAME_TEMPLATE, item, **kw) == Path(
        "sub/b.realesr-animevideov3.x2.mkv"
    )
    got = output_name("{name}-{codec}.x{scale}.{ext}.mkv", item, **kw)
    assert got == Path("sub/b.mp4-libx265.x2.mp4.mkv")
    assert output_name("hd/{stem}.mp4", item, model="x.pth", scale=1.5, codec="c") == Path(
        "sub/hd/b.mp4"
    )
    with pytest.raises(UsageError, match=r"unknown field \{title\}"):
        output_name("{title}.mkv", item, **kw)
    with pytest.raises(UsageError, match="must end in one of"):
        output_name("{stem}.avi", item, **kw)
    with pytest.raises(UsageError, match="inside the output folder"):
        output_name("../{stem}.mkv", item, **kw)


def test_dry_run_missing_inputs_and_clashing_names(shows: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    report = tmp_path / "r.json"
    other = clip(tmp_path / "more" / "a.mp4", 0.1)
    code, stdout, err = run(
        capsys,
        "batch",
        str(shows / "a.mkv"),
        str(other),
        str(tmp_path / "missing.mkv"),
        str(tmp_path / "nothing" / "*.mkv"),
        "-o",
        str(out),
        "--name",
        "{stem}.mkv",
        "--dry-run",
        "--report",
        str(report),
        *MODEL,
    )
    assert code == batch.EXIT_FAILED, err
    assert not out.exists()  # a dry run creates nothing
    assert "input:     " in stdout and f"output:    {out / 'a.mkv'}" in stdout
    r = report_of(report)
    assert r["a.mkv"]["status"] == "planned" and r["a.mkv"]["source_frames"] == 6
    clash = next(e for e in r["_"]["files"] if e["input"] == str(other))
    assert clash["status"] == "failed" and "also the output of" in clash["error"]
    assert "no such file" in r["missing.mkv"]["error"]
    assert "matches no video file" in r["*.mkv"]["error"]

    code, _, err = run(capsys, "batch", str(shows), *MODEL)
    assert code == 2 and "batch needs --output (the folder for every output)" in err
    code, _, err = run(capsys, "batch", str(shows), "-o", str(out), "--name", "{x}.mkv")
    assert code == 2 and "unknown field {x}" in err
    (tmp_path / "empty-dir").mkdir()
    code, _, err = run(capsys, "batch", str(tmp_path / "empty-dir"), "-o", str(out))
    assert code == 2 and "no input videos found" in err


def test_max_hours_stops_between_chunks_then_resumes(
    media_clips: dict[str, Path], shows: Path, tmp_path: Path, capsys
) -> None:
    from vidsr.run.events import ChunkDone, InFile
    from vidsr.settings import make_settings

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(media_clips["no_audio"], src / "1-long.mkv")  # 24 frames: 3 chunks of 8
    shutil.copy(shows / "a.mkv", src / "2-short.mkv")
    out, report = tmp_path / "out", tmp_path / "r.json"
    args = ["batch", str(src), "-o", str(out), "--chunk-frames", "8", "--report", str(report)]
    # The batch's clock: the first chunk takes an hour, past --max-hours 0.5.
    now = [0.0]

    def on_event(event: object) -> None:
        if isinstance(event, InFile) and isinstance(event.event, ChunkDone):
            now[0] += 3600

    settings = make_settings(
        "batch",
        {"output": out, "chunk_frames": 8, "report": report, "max_hours": 0.5, "device": "cpu"},
    )
    items = order_inputs(collect_inputs([str(src)]), "name")
    result = batch.run_batch(items, settings, on_event=on_event, clock=lambda: now[0])
    assert result.exit_code == batch.EXIT_STOPPED
    r = report_of(report)
    assert r["1-long.mkv"]["status"] == "stopped" and r["1-long.mkv"]["frames"] == 8
    assert r["2-short.mkv"]["status"] == "pending"
    assert r["_"]["stopped"] == "max-hours"
    work = out / "1-long.realesr-animevideov3.x4.mkv.vidsr-work"
    state = json.loads((work / "job.json").read_text())
    assert list(state["done"]) == ["0"]  # the finished chunk is recorded
    assert not (out / "1-long.realesr-animevideov3.x4.mkv").exists()
    assert "resume" in batch.format_summary(result).splitlines()[-1]

    code, stdout, err = run(capsys, *args, *MODEL, "--json")
    assert code == 0, err
    events = [json.loads(line) for line in stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "file_start" and kinds[-1] == "batch_done"
    start = next(e for e in events if e["event"] == "start" and e["file"] == "1-long.mkv")
    assert start["frames_done"] == 8 and start["chunks_todo"] == 2
    r = report_of(report)
    assert r["1-long.mkv"]["status"] == "ok" and r["1-long.mkv"]["resumed_frames"] == 8
    assert r["2-short.mkv"]["status"] == "ok"
    assert probe(out / "1-long.realesr-animevideov3.x4.mkv").video.frame_count == 24
    assert not work.exists()
    assert events[-1]["counts"] == {"ok": 2}


def test_existing_output_with_wrong_frames_is_not_touched(
    shows: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    wrong = out / "a.realesr-animevideov3.x4.mkv"
    clip(wrong, 0.1)  # 2 or 3 frames, not 6
    before = fingerprint(wrong)
    args = ["batch", str(shows / "a.mkv"), "-o", str(out), *MODEL, "--report", str(tmp_path / "r")]
    code, _stdout, _ = run(capsys, *args)
    assert code == batch.EXIT_FAILED
    entry = report_of(tmp_path / "r")["a.mkv"]
    assert entry["status"] == "failed" and "--overwrite" in entry["error"]
    assert "the source 6" in entry["error"]
    assert fingerprint(wrong) == before
    code, _, err = run(capsys, *args, "--overwrite")
    assert code == 0, err
    assert probe(wrong).video.frame_count == 6


def test_free_disk_check(shows: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(batch.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    out = tmp_path / "out"
    code, _stdout, _ = run(
        capsys, "batch", str(shows / "a.mkv"), "-o", str(out), *MODEL, "--report", str(out / "r")
    )
    assert code == batch.EXIT_FAILED
    entry = report_of(out / "r")["a.mkv"]
    assert "not enough free disk space" in entry["error"] and "4.0K free" in entry["error"]
    assert not list(out.glob("*.mkv"))


def test_estimates_grow_with_quality(media_clips: dict[str, Path], tmp_path: Path) -> None:
    from helpers import video_plan

    def estimate(**enc) -> int:
        plan, _ = video_plan(media_clips["cfr"], tmp_path / "o.mkv", overwrite=True, **enc)
        return batch.estimate_video_bytes(plan)

    x264, x264_hq, ffv1 = estimate(), estimate(crf=12), estimate(codec="ffv1")
    assert 0 < x264 < x264_hq < ffv1
    assert x264_hq == pytest.approx(2 * x264, rel=0.01)  # 6 crf lower: twice the bits


def test_interrupt_writes_the_report_and_exits_130(
    shows: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import vidsr.run.job

    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted (Ctrl-C)")

    monkeypatch.setattr(vidsr.run.job, "run_job", interrupted)
    out, report = tmp_path / "out", tmp_path / "r.json"
    code, _stdout, err = run(
        capsys, "batch", str(shows), "-o", str(out), *MODEL, "--report", str(report)
    )
    assert code == 130
    r = report_of(report)
    assert r["a.mkv"]["status"] == "stopped" and r["bad.mkv"]["status"] == "pending"
    assert r["_"]["stopped"] == "interrupted"
    assert "interrupted" in err


def test_a_model_that_cannot_load_stops_the_batch(shows: Path, tmp_path: Path, capsys) -> None:
    # RealESRGAN_x2plus is not offline and the download URL is unreachable: every file would
    # fail the same way, so the batch stops at the first with the model's exit code.
    out, report = tmp_path / "out", tmp_path / "r.json"
    code, stdout, _ = run(
        capsys,
        "batch",
        str(shows),
        "-o",
        str(out),
        "--model",
        "RealESRGAN_x2plus",
        "--device",
        "cpu",
        "--report",
        str(report),
    )
    assert code == 4
    r = report_of(report)
    assert r["a.mkv"]["status"] == "failed" and "RealESRGAN_x2plus" in r["a.mkv"]["error"]
    assert r["bad.mkv"]["status"] == "pending" and r["_"]["stopped"] == "fatal"
    assert "model or device cannot be used" in stdout
