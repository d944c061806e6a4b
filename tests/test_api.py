"""The Python API: vidsr.upscale on a video and an image."""

from __future__ import annotations

from pathlib import Path

import pytest

import vidsr
from vidsr.errors import InputError, OutputError
from vidsr.media.probe import probe
from vidsr.run.events import JobDone


def test_upscale_video_returns_result(media_clips: dict[str, Path], tmp_path: Path) -> None:
    events: list = []
    out = tmp_path / "out.mkv"
    result = vidsr.upscale(
        media_clips["cfr"], out, device="cpu", codec="ffv1", on_event=events.append
    )
    src = probe(media_clips["cfr"]).video
    assert result.output == out and out.exists()
    assert result.frames == src.frame_count == probe(out).video.frame_count
    assert set(result.stages) == {"decode", "infer", "encode"}
    assert all(s.frames == result.frames for s in result.stages.values())
    assert result.bound in result.stages and result.fps > 0
    kinds = [e.as_dict()["event"] for e in events]  # typed events; as_dict is the JSON line
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    assert isinstance(events[-1], JobDone) and events[-1].result.frames == src.frame_count
    with pytest.raises(OutputError, match=r"overwrite=True"):  # spelled for Python
        vidsr.upscale(media_clips["cfr"], out, device="cpu")


def test_upscale_image_and_missing_input(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[1] / "samples" / "frame.png"
    result = vidsr.upscale(sample, tmp_path / "x.png", device="cpu", scale=2)
    assert result.frames == 1 and (tmp_path / "x.png").exists()
    with pytest.raises(InputError):
        vidsr.upscale(tmp_path / "nope.mkv")
