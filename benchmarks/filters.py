"""Speed of the filter stage at DVD size: decoding a 720x480 MPEG-2 source and running each
field repair and crop through libavfilter (in-process, as a run's decoder thread does), then
converting to RGB for the model - frames a second, on this machine.

Builds the sources the way DVDs hold them (tests/real_media.py: interlaced MPEG-2 woven from
59.94p, and film hard-telecined to 29.97), then times ``FrameDecoder`` alone and
``FilteredFrames`` with each repair, over the whole clip.

    .venv/bin/python benchmarks/filters.py                 # 120 frames each
    .venv/bin/python benchmarks/filters.py --frames 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import real_media as R  # noqa: E402

from vidsr.media.decode import FrameDecoder  # noqa: E402
from vidsr.media.probe import probe  # noqa: E402
from vidsr.media.repair import FilteredFrames, FrameFilters, chunk_span, make_timeline  # noqa: E402


def timed(frames: object) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = sum(1 for _ in frames)  # type: ignore[attr-defined]
    return n, time.perf_counter() - t0


def filtered(path: Path, filters: FrameFilters) -> tuple[int, float]:
    info = probe(path)
    v = info.video
    timeline = make_timeline(v.output_pts(1), 0, v.frame_count, filters.mode, time_base=v.time_base)
    span = chunk_span(timeline, filters, 0, timeline.frames, v.frame_count)
    return timed(FilteredFrames(path, span, filters, 0, timeline.out_pts, info=info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        size = (720, 480)
        interlaced = R.interlaced_mpeg2(folder, frames=args.frames, size=size)
        telecined, _ = R.hard_telecine_mpeg2(folder, frames=args.frames * 4 // 5, size=size)
        rows = [
            ("decode + RGB (no filter)", interlaced, None),
            ("bwdif, frame rate", interlaced, FrameFilters("bwdif")),
            ("yadif, frame rate", interlaced, FrameFilters("yadif")),
            ("bwdif, field rate (2 out per in)", interlaced, FrameFilters("bwdif", True)),
            ("ivtc (fieldmatch, yadif, decimate)", telecined, FrameFilters("ivtc")),
            ("crop 704x464+8+8", interlaced, FrameFilters(crop=(8, 8, 704, 464))),
        ]
        print(f"{'stage':38} {'in':>5} {'out':>5} {'s':>7} {'in fps':>8} {'out fps':>8}")
        for name, path, filters in rows:
            n_in = probe(path).video.frame_count
            if filters is None:
                n, secs = timed(FrameDecoder(path))
            else:
                n, secs = filtered(path, filters)
            print(f"{name:38} {n_in:5d} {n:5d} {secs:7.3f} {n_in / secs:8.1f} {n / secs:8.1f}")


if __name__ == "__main__":
    main()
