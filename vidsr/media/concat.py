"""Join video-only segments into one stream without re-encoding.

Each segment was encoded with the source frames' own pts, so the joined stream needs no
timestamp arithmetic on pts: packets are copied as they are, in segment order.

Decode timestamps need care: Matroska stores none, so demuxed packets of a B-frame stream
come back without them. They are rebuilt the standard way, with one delay for the whole
join: in decode order, packet i of a segment gets ``dts = (i-th smallest pts) - D``, where
``D`` is the largest reorder distance found in any segment. Then every dts <= its pts, and
across a seam the dts keep increasing, because each segment's pts all come after the
previous segment's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from vidsr.errors import PipelineError
from vidsr.files import atomic_output, testing_pause


def count_packets(path: str | os.PathLike[str]) -> int:
    """Video packets (= frames for the encoders vidsr uses) in a segment, by demuxing only."""
    with av.open(os.fspath(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def _decode_order_pts(path: Path) -> tuple[list[int], Fraction]:
    with av.open(os.fspath(path)) as c:
        s = c.streams.video[0]
        pts = []
        for p in c.demux(s):
            if not p.size:
                continue
            if p.pts is None:
                raise PipelineError(f"{path.name}: a packet without a timestamp; cannot join")
            pts.append(p.pts)
        return pts, Fraction(s.time_base)


def concat_segments(segments: Sequence[Path], output: Path) -> int:
    """Write ``output`` (atomically): the video packets of every segment in order. Returns the
    number of packets written. Raises ``PipelineError`` for segments encoded differently or
    whose frames overlap in time."""
    if not segments:
        raise PipelineError("nothing to join: no segments")
    orders = [_decode_order_pts(Path(s)) for s in segments]
    time_base = orders[0][1]
    delay = 0
    last_pts: int | None = None
    for seg, (pts, tb) in zip(segments, orders, strict=True):
        if tb != time_base:
            raise PipelineError(f"{Path(seg).name} has another time base; cannot join")
        if not pts:
            raise PipelineError(f"{Path(seg).name} holds no frames; cannot join")
        ordered = sorted(pts)
        if last_pts is not None and ordered[0] <= last_pts:
            raise PipelineError(f"{Path(seg).name} starts before the previous segment ends")
        last_pts = ordered[-1]
        delay = max(delay, max(a - b for a, b in zip(ordered, pts, strict=True)))
    written = 0
    with atomic_output(output) as tmp, av.open(os.fspath(segments[0])) as first:
        template = first.streams.video[0]
        codec = template.codec_context.name
        extradata = template.codec_context.extradata
        out = av.open(os.fspath(tmp), "w", format=_format_for(output))
        try:
            ostream = out.add_stream_from_template(template)
            # The template's rate does not come along: without it the muxer's frame rate (and
            # what players and ffmpeg report: "30k fps" for a 1/90000 time base) is the time
            # base's.
            rate = template.average_rate or template.guessed_rate
            if rate:
                ostream.codec_context.framerate = rate
            for seg, (pts, _tb) in zip(segments, orders, strict=True):
                dts_values = [p - delay for p in sorted(pts)]
                with av.open(os.fspath(seg)) as c:
                    s = c.streams.video[0]
                    cc = s.codec_context
                    if cc.name != codec or cc.extradata != extradata:
                        raise PipelineError(f"{Path(seg).name} was encoded differently")
                    i = 0
                    for pkt in c.demux(s):
                        if not pkt.size:
                            continue
                        pkt.dts = dts_values[i]
                        pkt.stream = ostream
                        out.mux(pkt)
                        i += 1
                        written += 1
                    testing_pause("join")  # a test kills the process here, mid-join
        finally:
            out.close()
    return written


def _format_for(output: Path) -> str | None:
    suffix = output.suffix.lower()
    return {".mkv": "matroska", ".mp4": "mp4", ".mov": "mov", ".m4v": "mp4"}.get(suffix)
