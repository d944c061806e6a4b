"""Field-based sources (DVD, TV): what a stream is made of, found by libavfilter's ``idet``
over a sample of frames, and black borders found by its ``bbox`` - both in-process through
PyAV's filter graphs.

:func:`scan_fields` decodes a few windows spread over the file (``SAMPLE_WINDOWS`` of
``SAMPLE_FRAMES`` frames each) through ``idet`` and counts each frame's verdict: progressive,
interlaced top or bottom field first (idet's multi-frame verdict), or undetermined, and which
frames repeat a field of the one before. :meth:`FieldScan.content` reads them:

- ``telecined``: a 3:2 pulldown made into the pictures (hard telecine): about two frames in
  five repeat a field of the frame before (idet measures 0.4 on 2:3 content);
- ``soft-telecined``: MPEG-2 repeat-field flags (the probe counts them): the coded pictures
  are progressive film, the flags make them 29.97 fields on playback;
- ``interlaced``: most frames judged interlaced, few repeat a field;
- ``progressive`` otherwise (``unknown`` when idet could decide nothing).

:func:`detect_crop` measures each sampled frame's picture box - the bounding box of the luma
above a black level, libavfilter's ``bbox`` filter: the measure ``cropdetect`` makes, and the
one of the two that PyAV's LGPL build of FFmpeg has - and returns the box that holds every
sampled frame's content (the union: a dark scene does not shrink it), widened to even sizes
and offsets (4:2:0 chroma), or None when there are no borders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vidsr.media.probe import MediaInfo, drain, main_video_stream, open_input

log = logging.getLogger(__name__)

#: Windows sampled over the file, and frames decoded in each.
SAMPLE_WINDOWS = 3
SAMPLE_FRAMES = 60
#: Share of sampled frames repeating a field above which content is telecined (3:2 gives 0.4).
TELECINE_REPEATS = 0.25
#: Share of decided frames judged interlaced above which content is interlaced.
INTERLACED_SHARE = 0.5

_SINGLE = {"tff": "tff", "bff": "bff", "progressive": "progressive"}


@dataclass(frozen=True)
class FieldScan:
    """idet's verdicts over the sampled frames, and the stream's own flags."""

    frames: int = 0
    tff: int = 0
    bff: int = 0
    progressive: int = 0
    undetermined: int = 0
    repeated: int = 0  # frames repeating a field of the frame before
    soft_pictures: int = 0  # MPEG-2 pictures scanned by the probe ...
    soft_repeats: int = 0  # ... and how many carry repeat_first_field

    @property
    def content(self) -> str:
        """progressive | interlaced | telecined | soft-telecined | unknown (module docstring)."""
        if self.soft_pictures and self.soft_repeats * 4 >= self.soft_pictures:
            return "soft-telecined"
        if not self.frames:
            return "unknown"
        if self.repeated >= TELECINE_REPEATS * self.frames:
            return "telecined"
        decided = self.tff + self.bff + self.progressive
        if not decided:
            return "unknown"
        if self.tff + self.bff > INTERLACED_SHARE * decided:
            return "interlaced"
        return "progressive"

    @property
    def order(self) -> str:
        """tff | bff: the field order idet saw most (tff when it saw neither)."""
        return "bff" if self.bff > self.tff else "tff"

    def describe(self) -> str:
        """One line: the verdict and its counts."""
        return f"{self.content} ({self.counts()})"

    def counts(self) -> str:
        """idet's counts (and the repeat-field flags), in words."""
        counts = (
            f"idet over {self.frames} frames: {self.tff} tff, {self.bff} bff, "
            f"{self.progressive} progressive, {self.undetermined} undetermined, "
            f"{self.repeated} repeating a field"
        )
        if self.soft_pictures:
            counts += f"; {self.soft_repeats} of {self.soft_pictures} pictures repeat a field"
        return counts


def buffer_args(info: MediaInfo, width: int | None = None, height: int | None = None) -> str:
    """The ``buffer`` source's arguments for ``info``'s video (frames are pushed with their
    source index as pts, one frame per ``1/rate``)."""
    v = info.video
    rate = v.avg_rate or Fraction(25)
    sar = v.sample_aspect_ratio or Fraction(1)
    return (
        f"video_size={width or v.width}x{height or v.height}:pix_fmt={v.pix_fmt}:"
        f"time_base={rate.denominator}/{rate.numerator}:"
        f"pixel_aspect={sar.numerator}/{sar.denominator}:"
        f"frame_rate={rate.numerator}/{rate.denominator}"
    )


class Chain:
    """A linear libavfilter chain (``[("crop", "w=.."), ...]``) fed frame by frame."""

    def __init__(self, info: MediaInfo, filters: list[tuple[str, str]], threads: int = 0) -> None:
        self.graph = av.filter.Graph()
        if threads:
            self.graph.threads = threads
        node = self.graph.add("buffer", buffer_args(info))
        for name, args in filters:
            nxt = self.graph.add(name, args) if args else self.graph.add(name)
            node.link_to(nxt)
            node = nxt
        sink = self.graph.add("buffersink")
        node.link_to(sink)
        self.graph.configure()

    def push(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Feed ``frame`` (None: the end) and return what the chain hands out now."""
        self.graph.push(frame)
        out: list[av.VideoFrame] = []
        while True:
            try:
                out.append(self.graph.pull())
            except (av.BlockingIOError, av.EOFError):
                return out


def _windows(info: MediaInfo, frames: int, windows: int) -> list[int]:
    """First frame of each sampled window: spread over the file, not overlapping."""
    n = info.video.frame_count
    if n <= frames * windows:
        return [0]
    return [round(k * (n - frames) / max(1, windows - 1)) for k in range(windows)]


def sample_frames(
    info: MediaInfo, frames: int = SAMPLE_FRAMES, windows: int = SAMPLE_WINDOWS
) -> Iterator[list[av.VideoFrame]]:
    """Decoded frames of each window (raw ``av.VideoFrame``s, pts set to the frame's index)."""
    v = info.video
    starts = _windows(info, frames, windows)
    whole = starts == [0]
    with open_input(info.path) as container:
        stream = main_video_stream(container, info.path)
        stream.thread_type = "AUTO"
        try:
            for start in starts:
                if start:
                    container.seek(v.frame_pts[start], stream=stream, backward=True)
                got: list[av.VideoFrame] = []
                try:
                    for frame in container.decode(stream):
                        if frame.width != v.width or frame.height != v.height:
                            continue
                        if start and frame.pts is not None and frame.pts < v.frame_pts[start]:
                            continue
                        frame.pts = start + len(got)
                        got.append(frame)
                        if not whole and len(got) >= frames:
                            break
                except av.FFmpegError as exc:  # damage: what decoded so far is the sample
                    log.debug("%s: sampling stopped: %s", info.path, exc)
                yield got
                if whole:
                    return
        finally:
            drain(stream)


def scan_fields(info: MediaInfo) -> FieldScan:
    """idet's verdict counts over a sample of ``info``'s frames (module docstring)."""
    counts = dict.fromkeys(("tff", "bff", "progressive", "undetermined", "repeated"), 0)
    total = 0
    for window in sample_frames(info):
        chain = Chain(info, [("idet", "")])
        outs = [o for f in window for o in chain.push(f)] + chain.push(None)
        for o in outs:
            md = o.metadata
            verdict = md.get("lavfi.idet.multiple.current_frame", "undetermined")
            counts[_SINGLE.get(verdict, "undetermined")] += 1
            if md.get("lavfi.idet.repeated.current_frame", "neither") != "neither":
                counts["repeated"] += 1
            total += 1
    v = info.video
    return FieldScan(
        frames=total,
        soft_pictures=v.pictures if v.repeat_fields else 0,
        soft_repeats=v.repeat_fields,
        **counts,
    )


def detect_crop(info: MediaInfo, limit: int = 24) -> tuple[int, int, int, int] | None:
    """The content box (x, y, w, h) holding every sampled frame's picture, or None when it is
    the whole frame (module docstring). ``limit``: the darkest level (of 255) counted as
    picture (scaled to the stream's bit depth)."""
    v = info.video
    box: list[int] | None = None  # x1, y1, x2, y2 (inclusive)
    for window in sample_frames(info):
        chain = Chain(info, [("bbox", f"min_val={limit << max(0, v.bit_depth - 8)}")])
        outs = [o for f in window for o in chain.push(f)] + chain.push(None)
        for o in outs:
            md = o.metadata
            try:
                x1, x2 = int(md["lavfi.bbox.x1"]), int(md["lavfi.bbox.x2"])
                y1, y2 = int(md["lavfi.bbox.y1"]), int(md["lavfi.bbox.y2"])
            except (KeyError, ValueError):
                continue
            if x2 < x1 or y2 < y1:  # an all-black frame says nothing
                continue
            box = (
                [x1, y1, x2, y2]
                if box is None
                else [min(box[0], x1), min(box[1], y1), max(box[2], x2), max(box[3], y2)]
            )
    if box is None:
        return None
    x1, y1 = box[0] // 2 * 2, box[1] // 2 * 2  # even offsets and sizes, outward
    x2, y2 = min(v.width, (box[2] + 2) // 2 * 2), min(v.height, (box[3] + 2) // 2 * 2)
    w, h = (x2 - x1) // 2 * 2, (y2 - y1) // 2 * 2  # an odd-sized source: inward at the end
    if (w, h) == (v.width, v.height) or w < 16 or h < 16:
        return None  # no borders; or a picture too small to be one (a dot on black)
    return x1, y1, w, h


def describe_crop(region: tuple[int, int, int, int] | None) -> str:
    """``WxH+X+Y`` (the ``--crop`` spelling), or ``none``."""
    if region is None:
        return "none"
    x, y, w, h = region
    return f"{w}x{h}+{x}+{y}"


def path_key(path: Path) -> tuple[str, int, int]:
    """What identifies a file's content for the detection caches: path, size, mtime."""
    st = Path(path).stat()
    return str(path), st.st_size, st.st_mtime_ns


_FIELDS: dict[tuple[str, int, int], FieldScan] = {}
_CROPS: dict[tuple[tuple[str, int, int], int], Any] = {}


def fields_of(info: MediaInfo) -> FieldScan:
    """:func:`scan_fields`, once per file content in this process."""
    key = path_key(info.path)
    if key not in _FIELDS:
        _FIELDS[key] = scan_fields(info)
    return _FIELDS[key]


def crop_of(info: MediaInfo, limit: int = 24) -> tuple[int, int, int, int] | None:
    """:func:`detect_crop`, once per file content in this process."""
    key = (path_key(info.path), limit)
    if key not in _CROPS:
        _CROPS[key] = detect_crop(info, limit)
    return _CROPS[key]
