"""Chunk plans: a video's frames cut into [start, end) ranges by frame index.

Chunks are plain data (index, start, end). Boundaries come from the packet index (each frame's
own time), never from duration x rate, so VFR sources cut at the right frames.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

#: Default chunk length: short enough that a crash loses little, long enough that the
#: per-chunk costs (a keyframe, an encoder start) stay negligible.
DEFAULT_CHUNK_SECONDS = 30.0


@dataclass(frozen=True, order=True)
class Chunk:
    """Frames [start, end) of the source's main video; ``index`` orders the segments."""

    index: int
    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        """The segment's file stem: ``00000``, ``00001`` ..."""
        return f"{self.index:05d}"

    def as_list(self) -> list[int]:
        return [self.index, self.start, self.end]


def plan_chunks(
    frame_pts: Sequence[int],
    time_base: Fraction,
    *,
    chunk_frames: int | None = None,
    chunk_seconds: float | None = None,
    unit: int = 1,
) -> list[Chunk]:
    """Cut ``len(frame_pts)`` frames into chunks of ``chunk_frames`` frames, or of
    ``chunk_seconds`` of presentation time (default ``DEFAULT_CHUNK_SECONDS``), every chunk
    but the last a whole number of ``unit`` frames (field repair's units: a telecine cycle's
    four frames, a frame's two fields).

    ``frame_pts`` are the frames' pts in presentation order (the probe's packet index). The
    values were checked by the option table; a value no option allows is a ``ValueError``."""
    starts = _starts(frame_pts, time_base, chunk_frames, chunk_seconds)
    if unit > 1:
        starts = sorted({s - s % unit for s in starts})
    n = len(frame_pts)
    ends = [*starts[1:], n]
    return [Chunk(i, s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]


def _starts(
    frame_pts: Sequence[int],
    time_base: Fraction,
    chunk_frames: int | None,
    chunk_seconds: float | None,
) -> list[int]:
    n = len(frame_pts)
    if n == 0:
        return []
    if chunk_frames is not None and chunk_seconds is not None:
        raise ValueError("chunk_frames and chunk_seconds exclude each other")
    if chunk_frames is not None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, not {chunk_frames}")
        starts = list(range(0, n, chunk_frames))
    else:
        seconds = DEFAULT_CHUNK_SECONDS if chunk_seconds is None else chunk_seconds
        if seconds <= 0:
            raise ValueError(f"chunk_seconds must be positive, not {seconds}")
        step = Fraction(seconds).limit_denominator(1000) / Fraction(time_base)  # in pts ticks
        starts, k = [0], 1
        while True:
            boundary = frame_pts[0] + k * step
            i = bisect_left(frame_pts, boundary)
            if i >= n:
                break
            if i > starts[-1]:
                starts.append(i)
            k = max(k + 1, int((frame_pts[i] - frame_pts[0]) / step) + 1)
    return starts
