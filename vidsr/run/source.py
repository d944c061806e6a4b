"""What the model sees of a source, decided per file before any work: the time range
(``--start``/``--end``/``--duration``), the field repair (``--deinterlace``, ``--ivtc``, from
what libavfilter's ``idet`` finds), the crop (``--crop``), the output frames' times
(:class:`~vidsr.media.repair.Timeline`), and the output size and sample aspect ratio
(``--size``, ``--width``, ``--height``, ``--square-pixels``, ``--scale``).

Times: ``--start T`` takes the first frame at or after T, ``--end T`` the frames before T,
``--duration D`` the frames before start + D; T counts from the start of the file (the
container's start time), as ffmpeg's input ``-ss``/``-to``/``-t`` do. The output starts at
the range start: a frame at T + x plays at x, every other stream cut and shifted the same.

Repairs, per file: ``--ivtc`` on content found telecined (hard: 3:2 pulldown in the pictures)
runs field matching and decimation; on soft telecine (MPEG-2 repeat-field flags) it keeps the
coded film frames, evenly timed; on other content it does nothing and says so.
``--deinterlace bwdif|yadif`` deinterlaces whatever the file is (not telecined content under
``--ivtc``); ``auto`` only content found interlaced, with bwdif.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vidsr.errors import UsageError, opt
from vidsr.settings import Settings

#: Sources taller than this are never field-based (no idet scan).
FIELD_SCAN_MAX_HEIGHT = 1088


@dataclass(frozen=True)
class SourcePlan:
    """The frames the model sees. ``first``/``last``: the source frames in the time range;
    ``time_range``: (start, end or None) in seconds from the container's start, for the
    other streams (None: the whole file); ``fields``: idet's scan (None where not scanned);
    ``filters``/``timeline``: :mod:`vidsr.media.repair`; ``rate``: the output's frame rate;
    ``width``/``height``: the model's input size; ``notes``: what was decided, for the
    plan's reader; ``warnings``: what the run says first."""

    first: int
    last: int
    time_range: tuple[Fraction, Fraction | None] | None
    fields: Any  # FieldScan | None
    filters: Any  # FrameFilters
    timeline: Any  # Timeline
    rate: Fraction
    width: int
    height: int
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def output_step(suffix: str, time_base: Fraction) -> int:
    """The finest step between two frames that an output of type ``suffix`` keeps, in
    ``time_base`` units: Matroska and WebM store milliseconds; MP4 and MOV the stream's own
    time base (vidsr sets their timescale to it)."""
    from vidsr.media.remux import MP4_SUFFIXES

    if suffix.lower() in MP4_SUFFIXES:
        return 1
    return max(1, math.ceil(Fraction(1, 1000) / time_base))


def frame_range(info: Any, settings: Settings) -> tuple[int, int]:
    """Source frames ``[first, last)`` of the time range (the module docstring's rules)."""
    v = info.video
    start, end, duration = settings.start, settings.end, settings.duration
    if start is None and end is None and duration is None:
        return 0, v.frame_count
    origin = info.origin
    lo = origin + (start or 0)
    hi = origin + end if end is not None else None
    if duration is not None:
        hi = lo + duration
    times = [v.frame_time(i) for i in range(v.frame_count)]
    first = next((i for i, t in enumerate(times) if t >= lo), v.frame_count)
    last = next((i for i in range(first, len(times)) if hi is not None and times[i] >= hi), None)
    last = v.frame_count if last is None else last
    if first >= last:
        length = float(times[-1] - origin)
        raise UsageError(
            f"{info.path}: no frame in the time range {_span(settings)} (the video's frames run "
            f"from {float(times[0] - origin):.3f} to {length:.3f} s); give a range inside it"
        )
    return first, last


def _span(settings: Settings) -> str:
    start = f"{opt('start')} {float(settings.start or 0):g}"
    if settings.end is not None:
        return f"{start} {opt('end')} {float(settings.end):g}"
    if settings.duration is not None:
        return f"{start} {opt('duration')} {float(settings.duration):g}"
    return start


def _scan(info: Any) -> Any:
    from vidsr.media.fields import fields_of

    if info.video.height > FIELD_SCAN_MAX_HEIGHT:
        return None
    return fields_of(info)


def _repair(info: Any, settings: Settings, scan: Any) -> tuple[str | None, bool, list[str]]:
    """(the repair to run, film retiming of soft telecine, warnings)."""
    content = scan.content if scan is not None else "unknown"
    warnings: list[str] = []
    said = scan.counts() if scan is not None else "not scanned"
    if settings.ivtc:
        if content == "telecined":
            return "ivtc", False, warnings
        if content == "soft-telecined":
            return None, True, warnings
        warnings.append(f"{opt('ivtc')}: the source is not telecined ({said}): left as it is")
    method = settings.deinterlace
    if method == "auto":  # idet's word; where it could not decide, the stream's flags
        interlaced = content == "interlaced" or (content == "unknown" and _flagged(info.video))
        method = "bwdif" if interlaced else "off"
    if method != "off":
        if content == "progressive":
            warnings.append(
                f"{opt('deinterlace')} {method} on a source idet finds progressive ({said}): "
                "it may soften it"
            )
        return method, False, warnings
    return None, False, warnings + _unrepaired(info, content, said, scan)


def _unrepaired(info: Any, content: str, said: str, scan: Any) -> list[str]:
    """Warnings for field-based content upscaled as it is."""
    v = info.video
    if content == "telecined":
        return [
            f"the source is telecined (3:2 pulldown; {said}): it is upscaled as is, combed "
            f"frames included; {opt('ivtc')} restores its film frames"
        ]
    if content == "soft-telecined":
        return [
            f"the source is soft-telecined ({v.repeat_fields} of {v.pictures} pictures repeat "
            f"a field): its film frames are upscaled at their own uneven times; {opt('ivtc')} "
            "times them evenly"
        ]
    if content == "interlaced" or (content == "unknown" and _flagged(v)):
        order = scan.order if content == "interlaced" else f"field order {v.field_order}"
        return [
            f"the source is interlaced ({order}; {said}): it is upscaled as is, combing "
            f"included; {opt('deinterlace')} auto repairs it"
        ]
    return []


def _flagged(v: Any) -> bool:
    """The stream says it is interlaced (a field order, or its first frame's flag)."""
    return v.field_order in ("tt", "bb", "tb", "bt") or v.interlaced_frame


def _crop(info: Any, settings: Settings) -> tuple[int, int, int, int] | None:
    from vidsr.media.fields import crop_of

    v = info.video
    if settings.crop is None:
        return None
    if settings.crop == "auto":
        return crop_of(info)
    x, y, w, h = settings.crop
    if x + w > v.width or y + h > v.height:
        raise UsageError(
            f"{opt('crop')} {w}x{h}+{x}+{y} does not fit the {v.width}x{v.height} picture of "
            f"{info.path}"
        )
    return None if (x, y, w, h) == (0, 0, v.width, v.height) else (x, y, w, h)


def plan_source(info: Any, settings: Settings, suffix: str) -> tuple[SourcePlan, Settings]:
    """The :class:`SourcePlan` of ``info`` under ``settings`` for an output of type
    ``suffix`` (its finest time step), and the settings with each per-file ``auto`` made
    explicit (the deinterlacer, the crop box) for the resume fingerprint."""
    from vidsr.media.fields import describe_crop
    from vidsr.media.repair import FrameFilters, make_timeline, output_rate, time_divisor

    v = info.video
    first, last = frame_range(info, settings)
    scan = _scan(info)
    repair, film, warnings = _repair(info, settings, scan)
    crop = _crop(info, settings)
    if settings.square_pixels and settings.size is not None:
        warnings.append(
            f"{opt('square_pixels')} has no effect with {opt('size')}: the output is "
            f"{settings.size[0]}x{settings.size[1]} at the display aspect's sample aspect ratio"
        )
    decided = scan is not None and scan.tff + scan.bff > 0
    order = scan.order if decided else _flag_order(v)
    filters = FrameFilters(repair, settings.deinterlace_rate == "field", order, crop)
    # The output's time base: the source's, divided where its ticks are too coarse for the
    # new frames' times (a 1/fps AVI deinterlaced to one frame per field).
    k = time_divisor(v.frame_pts, filters.mode)
    tb = v.time_base / k
    step = output_step(suffix, tb)
    base = [p * k for p in v.output_pts(output_step(suffix, v.time_base))]
    timeline = make_timeline(base, first, last, filters.mode, step=step, film=film, time_base=tb)
    rate = output_rate(v.avg_rate, filters.mode, timeline, tb)
    given = (settings.start, settings.end, settings.duration) != (None, None, None)
    time_range = (settings.start or Fraction(0), _range_end(settings)) if given else None
    notes = [f"fields:    {scan.describe()}" if scan is not None else "fields:    not scanned"]
    notes.append(f"repair:    {filters.describe()}" + (" (film frames evenly timed)" * film))
    if settings.crop == "auto":
        notes.append(f"crop auto: {describe_crop(crop)}")
    w, h = (crop[2], crop[3]) if crop else (v.width, v.height)
    resolved = settings.replace(
        deinterlace=repair if repair in ("bwdif", "yadif") else "off",
        ivtc=repair == "ivtc" or film,
        crop=crop,
    )
    plan = SourcePlan(
        first, last, time_range, scan, filters, timeline, rate, w, h, tuple(notes),
        tuple(warnings),
    )  # fmt: skip
    return plan, resolved


def _range_end(settings: Settings) -> Fraction | None:
    if settings.duration is not None:
        return (settings.start or Fraction(0)) + settings.duration
    return settings.end


def _flag_order(v: Any) -> str:
    """The display field order the stream's tag says (tb: top coded first, bottom shown
    first)."""
    return "bff" if v.field_order in ("bb", "tb") else "tff"


def output_geometry(
    info: Any, settings: Settings, size: tuple[int, int]
) -> tuple[int, int, Fraction]:
    """(width, height, sample aspect ratio) of the output for a model input of ``size``
    (w, h: the source's picture, or its crop): the model's scale or ``--scale``, rounded to
    even sizes; ``--size`` exactly, keeping the display aspect through the sample aspect
    ratio; ``--width``/``--height``/``--square-pixels`` at the display aspect with square
    pixels (the other side rounded to an even number)."""
    from vidsr.models.loader import expected_scale
    from vidsr.pipeline.infer import scaled_size

    v = info.video
    w_in, h_in = size
    dar = Fraction(w_in * (v.sample_aspect_ratio or 1), h_in)
    if settings.size is not None:
        ow, oh = settings.size
        return ow, oh, (dar * oh / ow).limit_denominator(65535)
    if settings.width is not None:
        return settings.width, _even(settings.width / dar), Fraction(1)
    if settings.height is not None:
        return _even(settings.height * dar), settings.height, Fraction(1)
    native = expected_scale(settings.model)
    oh, ow = scaled_size(h_in, w_in, settings.scale or native, native, even=True)
    if settings.square_pixels:
        return _even(oh * dar), oh, Fraction(1)
    return ow, oh, (dar * oh / ow).limit_denominator(65535)


def _even(x: Fraction | float) -> int:
    return max(2, 2 * round(Fraction(x) / 2))


def source_report(info: Any) -> dict[str, Any]:
    """What ``vidsr probe`` says of the DVD/TV options for ``info``: idet's verdict, and
    what ``--deinterlace auto``, ``--ivtc``, ``--crop auto`` and ``--square-pixels`` would do
    (with the default model), and the warnings of a run without them."""
    from vidsr.media.fields import describe_crop
    from vidsr.settings import make_settings

    def plan(**values: Any) -> tuple[SourcePlan, Settings]:
        return plan_source(info, make_settings("upscale", values), ".mkv")

    def effect(src: SourcePlan) -> str:
        return (
            f"{src.filters.describe()}: {src.timeline.frames} frames at {float(src.rate):.5g} fps"
        )

    plain, settings = plan()
    scan = plain.fields
    ivtc, _ = plan(ivtc=True)
    auto, _ = plan(deinterlace="auto")
    cropped, _ = plan(crop="auto")
    crop = cropped.filters.crop
    w, h, _sar = output_geometry(info, make_settings("upscale", {"square_pixels": True}), (
        cropped.width, cropped.height))  # fmt: skip
    return {
        "content": scan.content if scan is not None else "unknown",
        "field_order": scan.order if scan is not None else None,
        "idet": scan.describe() if scan is not None else "not scanned (taller than 1088 lines)",
        "deinterlace_auto": effect(auto),
        "ivtc": effect(ivtc)
        + (
            "; film frames evenly timed"
            if ivtc.timeline != plain.timeline and ivtc.filters.repair is None
            else ""
        ),
        "crop_auto": describe_crop(crop),
        "square_pixels": f"{w}x{h} ({settings.model}, after --crop auto)"
        if crop
        else f"{w}x{h} ({settings.model})",
        "warnings": list(plain.warnings),
    }
