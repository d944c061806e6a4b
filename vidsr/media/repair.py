"""Repairing field-based frames and cropping them before the model, through libavfilter
(PyAV's filter graphs, in-process, on the decoding thread), chunk by chunk with the same
result as one pass.

:class:`FrameFilters` says what runs: a deinterlacer (``bwdif`` or ``yadif``, one frame per
frame or one per field), inverse telecine (``ivtc``: ``fieldmatch``, ``yadif`` on the frames
still combed after matching, ``decimate`` - FFmpeg's documented chain), and a crop.

:class:`Timeline` is the run's output frames: which source frames ``[first, last)`` (the time
range) they come from, and each output frame's time. It is fixed before any work, so the
chunk plan counts output frames and a resumed job finds its chunks again:

- ``frames`` (no repair, a per-frame deinterlace, or soft telecine): output ``i`` is source
  ``first + i``;
- ``fields`` (one frame per field): outputs ``2i`` and ``2i + 1`` come from source ``first +
  i``, the second timed halfway to the next frame;
- ``ivtc``: every cycle of five source frames from ``first`` gives four, evenly timed over the
  cycle's span (23.976 from 29.97: within a tick of the film's own times); a last, partial
  cycle keeps its frames as ``decimate`` does.

Chunk edges: chunks start at whole units (a cycle, a frame's two fields). A chunk decodes
context frames around its own: ``CONTEXT`` frames each side for the deinterlacers (they look
one frame back and ahead), and for ``ivtc`` the whole cycle before (``decimate`` compares each
frame with the one before it; its outputs for that cycle are dropped by count) and two frames
after (``fieldmatch`` and ``yadif`` look one ahead each). Outputs are told apart by their
pts: frames enter the graph with their source index as pts, and the deinterlacers and crop
keep it (halved time base); ``decimate`` rewrites times, so its outputs are counted.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidsr.errors import PipelineError
from vidsr.media.probe import MediaInfo

log = logging.getLogger(__name__)

#: Deinterlacers (``--deinterlace``), and every repair.
DEINTERLACERS = ("bwdif", "yadif")
#: Context frames decoded on each side of a chunk for the deinterlacers.
CONTEXT = 2
#: Source frames per ``ivtc`` cycle, and what is left of them.
CYCLE, KEPT = 5, 4


@dataclass(frozen=True)
class FrameFilters:
    """What runs on decoded frames before the model. ``repair``: None, a deinterlacer or
    ``ivtc``; ``field_rate``: one frame per field (deinterlacers); ``order``: tff | bff;
    ``crop``: (x, y, w, h) in source pixels, applied after the repair."""

    repair: str | None = None
    field_rate: bool = False
    order: str = "tff"
    crop: tuple[int, int, int, int] | None = None

    @property
    def active(self) -> bool:
        return self.repair is not None or self.crop is not None

    @property
    def mode(self) -> str:
        """The timeline's mode: frames | fields | ivtc."""
        if self.repair == "ivtc":
            return "ivtc"
        if self.repair in DEINTERLACERS and self.field_rate:
            return "fields"
        return "frames"

    def chain(self) -> list[tuple[str, str]]:
        """The libavfilter chain."""
        parity = "tff" if self.order == "tff" else "bff"
        out: list[tuple[str, str]] = []
        if self.repair in DEINTERLACERS:
            rate = "send_field" if self.field_rate else "send_frame"
            out.append((self.repair, f"mode={rate}:parity={parity}:deint=all"))
        elif self.repair == "ivtc":
            out += [
                ("fieldmatch", f"order={parity}"),
                ("yadif", f"mode=send_frame:parity={parity}:deint=interlaced"),
                ("decimate", f"cycle={CYCLE}"),
            ]
        if self.crop is not None:
            x, y, w, h = self.crop
            out.append(("crop", f"w={w}:h={h}:x={x}:y={y}:exact=1"))
        return out

    def describe(self) -> str:
        bits = []
        if self.repair == "ivtc":
            bits.append("inverse telecine (fieldmatch, yadif on combed frames, decimate)")
        elif self.repair:
            per = "one frame per field" if self.field_rate else "one frame per frame"
            bits.append(f"deinterlace with {self.repair} ({self.order}, {per})")
        if self.crop is not None:
            x, y, w, h = self.crop
            bits.append(f"crop {w}x{h}+{x}+{y}")
        return "; ".join(bits) or "none"


@dataclass(frozen=True)
class Timeline:
    """The run's output frames (module docstring). ``out_pts``: each one's time in
    ``time_base`` (the source's, or a fraction of it: :func:`time_divisor`), strictly
    increasing."""

    first: int
    last: int
    mode: str
    out_pts: tuple[int, ...]
    time_base: Fraction

    @property
    def frames(self) -> int:
        return len(self.out_pts)

    @property
    def unit(self) -> int:
        """Output frames per unit: chunk boundaries fall on multiples of it."""
        return {"frames": 1, "fields": 2, "ivtc": KEPT}[self.mode]

    def source_span(self, a: int, b: int) -> tuple[int, int]:
        """The source frames ``[start, end)`` whose outputs are ``[a, b)`` (unit edges)."""
        n = self.frames
        if self.mode == "fields":
            return self.first + a // 2, self.first + (b + 1) // 2
        if self.mode == "ivtc":
            end = self.last if b >= n else self.first + CYCLE * (b // KEPT)
            return self.first + CYCLE * (a // KEPT), end
        return self.first + a, self.first + b


def _median_step(pts: Sequence[int]) -> int:
    steps = sorted(b - a for a, b in itertools.pairwise(pts))
    return steps[len(steps) // 2] if steps else 1


def _increasing(pts: list[int], step: int) -> tuple[int, ...]:
    out: list[int] = []
    for p in pts:
        out.append(p if not out or p >= out[-1] + step else out[-1] + step)
    return tuple(out)


def time_divisor(pts: Sequence[int], mode: str) -> int:
    """By how much to divide the source's time base so that the new frames' times are whole
    ticks: 2 for fields and 4 for ivtc where the source has fewer ticks than that between
    frames (a 1/fps time base: AVI), else 1."""
    need = {"fields": 2, "ivtc": KEPT}.get(mode, 1)
    return need if need > 1 and _min_step(pts) < need else 1


def _min_step(pts: Sequence[int]) -> int:
    return min((b - a for a, b in itertools.pairwise(pts) if b > a), default=1)


def make_timeline(
    base: Sequence[int],
    first: int,
    last: int,
    mode: str,
    *,
    time_base: Fraction,
    step: int = 1,
    film: bool = False,
) -> Timeline:
    """The timeline of source frames ``[first, last)`` whose output times would be ``base``
    (the whole stream's, strictly increasing, in ``time_base``; ``step``: the output
    container's finest step).
    ``film``: soft telecine under ``--ivtc`` - the coded pictures, evenly timed over their
    span where that moves none by more than a frame (else their own times)."""
    pts = list(base[first:last])
    if not pts:
        return Timeline(first, last, mode, (), time_base)
    dur = _median_step(base)
    if mode == "fields":
        out = []
        for i, t in enumerate(pts):
            nxt = pts[i + 1] if i + 1 < len(pts) else t + dur
            out += [t, t + (nxt - t) // 2]
        pts = out
    elif mode == "ivtc":
        out, full = [], len(pts) // CYCLE
        for c in range(full):
            t0 = pts[c * CYCLE]
            t1 = pts[(c + 1) * CYCLE] if (c + 1) * CYCLE < len(pts) else t0 + CYCLE * dur
            out += [t0 + round(Fraction(k * (t1 - t0), KEPT)) for k in range(KEPT)]
        pts = out + pts[full * CYCLE :]
    elif film and len(pts) > 1:
        # the 2:3 flags repeat every four pictures: measure the step over whole patterns
        span = (len(pts) - 1) // KEPT * KEPT or len(pts) - 1
        even = Fraction(pts[span] - pts[0], span)
        retimed = [pts[0] + round(i * even) for i in range(len(pts))]
        if max(abs(a - b) for a, b in zip(retimed, pts, strict=True)) <= even:
            pts = retimed
    return Timeline(first, last, mode, _increasing(pts, step), time_base)


def output_rate(rate: Fraction, mode: str, timeline: Timeline, time_base: Fraction) -> Fraction:
    """The output's frame rate (the encoder's hint): the source's, doubled for fields, 4/5 of
    it for ivtc, the pictures' own for soft telecine."""
    if mode == "fields":
        return rate * 2
    if mode == "ivtc":
        return rate * KEPT / CYCLE
    pts = timeline.out_pts
    if len(pts) > 1 and rate:
        measured = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)
        if abs(measured - rate) > rate / 20:  # soft telecine: 23.976 pictures in 29.97
            return measured.limit_denominator(1001)
    return rate


@dataclass(frozen=True)
class SourceSpan:
    """What one chunk decodes: source frames ``[start, end)`` for its outputs, with
    ``before``/``after`` context frames around them, and how many of the chain's first
    outputs belong to the context (``skip``, ivtc: counted)."""

    start: int
    end: int
    before: int
    after: int
    skip: int = 0


def chunk_span(timeline: Timeline, filters: FrameFilters, a: int, b: int, total: int) -> SourceSpan:
    """The :class:`SourceSpan` of output frames ``[a, b)`` (``total``: the source's frames)."""
    start, end = timeline.source_span(a, b)
    if filters.repair == "ivtc":
        before = CYCLE if start >= CYCLE else 0
        # A range ending mid-cycle: no frames after it (they would join its cycle).
        after = min(2, total - end) if (end - start) % CYCLE == 0 else 0
        return SourceSpan(start, end, before, after, skip=KEPT if before else 0)
    if filters.repair in DEINTERLACERS:
        return SourceSpan(start, end, min(CONTEXT, start), min(CONTEXT, total - end))
    return SourceSpan(start, end, 0, 0)


class FilteredFrames(Iterator[Any]):
    """Output frames ``[a, a + count)`` of a run with ``filters``, decoded from ``span``
    (:func:`chunk_span`) of ``path`` and run through the chain; yields ``DecodedFrame``s
    indexed by output frame, timed by ``out_pts`` (the chunk's, in ``time_base``: the
    timeline's), converted to RGB (or to YUV
    planes with ``planes``) as :class:`~vidsr.media.decode.FrameDecoder` does. A source frame
    lost to damage (``ignore_errors``) is replaced by the one before it, so the cycles stay
    whole; the damage is in ``errors``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        span: SourceSpan,
        filters: FrameFilters,
        a: int,
        out_pts: Sequence[int],
        *,
        info: MediaInfo,
        planes: bool = False,
        time_base: Fraction | None = None,
        **decoder: Any,
    ) -> None:
        from vidsr.media.colour import ToPlanes, ToRGB, planar_layout
        from vidsr.media.decode import FrameDecoder

        self.path, self.span, self.filters, self.info = Path(path), span, filters, info
        self.a, self.out_pts = a, tuple(out_pts)
        self.time_base = time_base or info.video.time_base
        v = info.video
        self._decoder = FrameDecoder(
            path, span.start - span.before, span.end + span.after, info=info,
            convert=False, **decoder,
        )  # fmt: skip
        self.errors = self._decoder.errors
        self._to_planes = ToPlanes(planar_layout(v.pix_fmt)) if planes else None  # type: ignore[arg-type]
        self._convert = ToRGB(matrix=v.matrix, colour_range=v.range, high_bit_depth=v.bit_depth > 8)
        rate = v.avg_rate or Fraction(25)
        self._in_tb = Fraction(rate.denominator, rate.numerator)
        self._gen = self._generate()

    @property
    def hw_used(self) -> bool:
        return self._decoder.hw_used

    def __iter__(self) -> FilteredFrames:
        return self

    def __next__(self) -> Any:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()
        self._decoder.close()

    def _before(self, index: int) -> Any:
        """The last source frame before ``index`` that decodes (None: none does), looking
        further back until one does - what a lost frame at a chunk's start is replaced by,
        as in one pass over the file."""
        from vidsr.media.decode import FrameDecoder

        back = 8
        while index > 0:
            start = max(0, index - back)
            found = [
                d.frame
                for d in FrameDecoder(
                    self.path, start, index, info=self.info, convert=False, ignore_errors=True
                )
            ]
            if found:
                return found[-1]
            index, back = start, back * 2
        return None

    def _source(self) -> Iterator[Any]:
        """The decoded source frames in index order, pts set to the index; a lost frame's
        place taken by the last frame before it that decodes (the first one after it, where
        none does), so every index of the range is pushed once, as one pass would."""
        last = None
        expect = self.span.start - self.span.before
        end = self.span.end + self.span.after
        for d in self._decoder:
            frame = d.frame
            if last is None and expect < d.index:
                last = self._before(expect)
            while expect < d.index:  # lost to damage: repeat
                copy = last if last is not None else frame
                copy.pts = expect
                yield copy
                expect += 1
            frame.pts = d.index
            last = frame
            yield frame
            expect = d.index + 1
        while last is not None and expect < end:  # lost at the range's end
            last.pts = expect
            yield last
            expect += 1

    def _generate(self) -> Iterator[Any]:
        from vidsr.media.decode import DecodedFrame
        from vidsr.media.fields import Chain

        chain = Chain(self.info, self.filters.chain(), threads=2)
        count = len(self.out_pts)
        skip = self.span.skip
        n = 0
        counted = self.filters.repair == "ivtc"
        tb = self.time_base

        def take(outs: list[Any]) -> Iterator[Any]:
            nonlocal skip, n
            for o in outs:
                if counted:
                    if skip:
                        skip -= 1
                        continue
                else:
                    index = int(o.pts * o.time_base / self._in_tb)
                    if not self.span.start <= index < self.span.end:
                        continue
                if n >= count:
                    return
                pts = self.out_pts[n]
                if self._to_planes is not None:
                    rgb, planes = None, self._to_planes(o)
                else:
                    rgb, planes = self._convert(o), None
                yield DecodedFrame(self.a + n, pts, pts * tb, rgb, planes)
                n += 1

        for frame in self._source():
            yield from take(chain.push(frame))
        yield from take(chain.push(None))
        if n != count:
            raise PipelineError(
                f"{self.path}: the filters gave {n} frames for output frames "
                f"[{self.a}, {self.a + count}), expected {count} ({self.filters.describe()})"
            )
