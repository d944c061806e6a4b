"""Put the new video together with every other stream of the source.

``remux`` runs the ffmpeg binary (stream copy only) on the encoded video-only file and the source:
the new video first, then every stream of the source but its main video - all audio tracks
(bit for bit), subtitles, attachments (fonts), data the container can hold, other video streams -
with per-stream metadata (language, title) and dispositions (default, forced ...), the container
metadata (title ...) and chapters. Cover art (an attached picture, which libavformat shows as a
video stream) is re-attached as a file for Matroska, and kept as an attached picture for MP4/MOV.

The A/V offset trap (measured): without ``-copyts`` the ffmpeg CLI shifts EACH input so that it
starts at 0 - a video that started 0.5 s after its audio would then start together with it, and
an MPEG-TS source starting at 1.4 s would have its audio and the new video rebased differently.
We pass ``-copyts`` so every packet keeps the timestamp it has in its input, and the video-only
file carries the source's own pts (``VideoEncoder`` writes them). If the video-only file's first
frame is not where the source's first frame is (a muxer shifted it), ``-itsoffset`` puts it back.

A time range (``time_range=(start, end)``, seconds from the source's start as ffmpeg's input
``-ss``/``-to`` count them): the video-only file holds the source frames timed in the range,
at their source times, and the output starts at the range's start (down to a tick of the new
video), every stream shifted alike. ffmpeg's own cutting cannot do it in one run (measured,
ffmpeg 9.0): an output ``-ss`` drops every packet whose dts is before it - a B-frame video's
first GOP - and an input ``-ss`` with stream copy keeps every packet from where its seek lands
(a keyframe before: audio and subtitles from before the start). So each stream is cut first:

- audio and other video: one ffmpeg run, stream copy, output ``-ss``/``-to`` on the
  unshifted times (``-copyts``), one temporary file per stream in the output's own container
  (MP4/MOV with a time scale in flicks, so the edit list that places the first packet is
  exact): bit for bit, from the first packet at or after the start (the one across it would
  need a negative time) to the last that starts before the end. Every packet keeps its
  time: the audio starts less than one packet after the video (AAC 21 ms, Opus 20 ms), in
  sync to the sample (the tone of tests/test_remux_range.py starts where it should to 0 us
  in Matroska from a Matroska source, 0.33 ms from 90 kHz times rounded to Matroska's 1 ms,
  42 us in MP4: the edit list is in the movie time scale). Other video restarts at its first
  keyframe in the range;
- subtitles: rewritten with PyAV (ffmpeg drops an event that starts before the start), each
  stream into a temporary Matroska file (MP4 for mov_text), the packets unchanged but their
  times: every event that overlaps the range, one still showing at the start starting at 0,
  each ending by the end; an event without a duration (PGS, DVB: the next one clears it)
  counts from the last one before the start;
- chapters: those overlapping the range, clipped and shifted, written as an FFmetadata file
  (ffmpeg's own keep a zero-length chapter for one that ends at the start);
- a timecode moves on by the frames before the range; attachments, cover art, tags and the
  container's metadata come from the source, per-stream tags without the statistics of the
  whole stream. A stream with nothing in the range stays, empty (MP4 drops an empty audio
  track: its muxer writes no track without samples).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vidsr.errors import PipelineError, UsageError, opt
from vidsr.files import atomic_output, testing_pause
from vidsr.media.ffmpeg import run_ffmpeg
from vidsr.media.probe import MediaInfo, StreamInfo, open_input, probe

log = logging.getLogger(__name__)

MKV_SUFFIXES = {".mkv", ".mka", ".mk3d"}
MP4_SUFFIXES = {".mp4", ".m4v", ".mov"}
WEBM_SUFFIXES = {".webm"}
SUPPORTED_SUFFIXES = MKV_SUFFIXES | MP4_SUFFIXES | WEBM_SUFFIXES

#: Tags that describe a whole stream (mkvmerge's statistics): dropped from a cut stream.
_WHOLE_STREAM_TAGS = {
    "duration",
    "bps",
    "number_of_frames",
    "number_of_bytes",
    "_statistics_writing_app",
    "_statistics_writing_date_utc",
    "_statistics_tags",
}

# Source tags on the main video that describe the OLD encoding (mkvmerge statistics, encoder):
# not copied onto the new video.
_STALE_VIDEO_TAGS = {
    *_WHOLE_STREAM_TAGS,
    "encoder",
    "rotate",  # legacy; rotation travels as the display matrix
    "alpha_mode",  # WebM's alpha flag: the new video has no alpha channel
}
#: Text subtitle codecs ffmpeg converts between (what is converted into each container).
TEXT_SUBTITLES = frozenset({"subrip", "ass", "ssa", "webvtt", "mov_text", "text", "eia_608"})
#: Text subtitle codecs whose styling a conversion loses (positions, fonts, colours).
_STYLED = frozenset({"ass", "ssa"})
_MP4_BAD_AUDIO = {"vorbis", "truehd", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_u8", "pcm_f32le"}
_MOV_BAD_AUDIO = {"vorbis", "truehd"}
_MP4_BAD_VIDEO = {"ffv1", "utvideo", "huffyuv", "ffvhuff"}
_WEBM_VIDEO = {"vp8", "vp9", "av1"}
_WEBM_AUDIO = {"opus", "vorbis"}
_COVER_EXT = {"mjpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp", "gif": ".gif"}
_COVER_MIME = {
    "mjpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "gif": "image/gif",
}
#: Data streams that belong to their source's own container, not to its content: left out of
#: every output (probe says so), never refused.
STRUCTURAL_DATA = {
    "dvd_nav_packet": "DVD navigation packets: they belong to the DVD's program stream",
}
#: The containers a refusal may suggest, in the order it suggests them.
_ALTERNATIVES = (".mkv", ".mp4", ".mov", ".webm")
#: ``(start, end)`` seconds from the source's start; end None: to the end of the file.
TimeRange = tuple[Fraction, Fraction | None]
#: Seconds a cut reads before its range: for interleaving, and for subtitle events that end
#: after the range's end.
_SEEK_MARGIN = 10
#: Seconds the subtitles' cut reads before its range: an event still showing at the start
#: began at most this long before it.
_SUBTITLE_MARGIN = 300
#: Flicks (1/705,600,000 s): a whole number of ticks per sample at every common audio rate
#: and per 90 kHz tick; the movie time scale of a cut's temporary MP4/MOV, so that the offset
#: its edit list gives a stream's first packet is exact.
_EXACT_TIMESCALE = 705_600_000


def _kind(suffix: str) -> str:
    """The container family of a supported output suffix: mkv, webm or mp4 (MP4 and MOV)."""
    suffix = suffix.lower()
    if suffix in MKV_SUFFIXES:
        return "mkv"
    return "webm" if suffix in WEBM_SUFFIXES else "mp4"


def _container(suffix: str) -> str:
    """What decides what an output can carry: mkv, webm, mp4 or mov."""
    kind = _kind(suffix)
    return "mov" if kind == "mp4" and suffix.lower() == ".mov" else kind


def describe_stream(s: StreamInfo) -> str:
    """``#3 subtitle (ass, eng, 'Signs')``: a stream as refusals and warnings name it."""
    bits = [f"#{s.index} {s.type} ({s.codec or s.mimetype or 'unknown codec'}"]
    if s.language:
        bits.append(f", {s.language}")
    if s.title:
        bits.append(f", {s.title!r}")
    if s.filename:
        bits.append(f", {s.filename}")
    return "".join(bits) + ")"


def video_codec_of(encoder: str) -> str:
    """The codec an encoder writes (``libvpx-vp9`` -> ``vp9``, ``libsvtav1`` -> ``av1``);
    ``encoder`` itself when it is a codec name, or no encoder this FFmpeg has."""
    import av

    try:
        return av.codec.Codec(encoder, "w").canonical_name
    except Exception:
        return encoder


def video_problem(suffix: str, video_codec: str) -> str | None:
    """Why an output of type ``suffix`` cannot hold the new video in ``video_codec`` (a codec
    or an encoder name), or None."""
    codec = video_codec_of(video_codec)
    container = _container(suffix)
    shown = codec if codec == video_codec else f"{codec} ({video_codec})"
    if container == "webm" and codec not in _WEBM_VIDEO:
        return f"{suffix} holds VP8, VP9 or AV1 video only, not {shown}"
    if container in ("mp4", "mov") and codec in _MP4_BAD_VIDEO:
        return f"{suffix} cannot hold {shown} video"
    return None


@dataclass(frozen=True)
class StreamPlan:
    """What ``remux`` does with one stream of the source.

    ``action``: ``copy`` (bit for bit), ``convert`` (a subtitle re-encoded as ``codec``; ``note``
    says what it loses, if anything), ``timecode`` (a QuickTime timecode track, written anew
    from its value), ``chapters`` (an MP4 chapter track: the chapters are written as
    chapters), ``drop`` (left out: the container cannot carry it and leaving it out was
    asked for) or ``refuse`` (the container cannot carry it: ``note`` says why).
    """

    stream: StreamInfo
    action: str
    codec: str | None = None
    note: str = ""

    @property
    def kept(self) -> bool:
        return self.action in ("copy", "convert", "timecode", "chapters")


def _subtitle_plan(s: StreamInfo, suffix: str, container: str) -> tuple[str, str | None, str]:
    codec = s.codec or "unknown"
    styled = codec in _STYLED
    lost = "its styling (positions, fonts, colours) is lost" if styled else ""
    target = {"mkv": "subrip", "webm": "webvtt", "mp4": "mov_text", "mov": "mov_text"}[container]
    if container == "mkv":
        if codec in ("mov_text", "eia_608"):
            return "convert", "subrip", ""
        if codec in ("arib_caption", "ttml"):
            return "refuse", None, f"{suffix} cannot carry {codec} subtitles"
        return "copy", None, ""
    carried = {"webm": {"webvtt"}, "mp4": {"mov_text", "dvd_subtitle"}}
    if codec in carried["webm" if container == "webm" else "mp4"]:
        return "copy", None, ""
    if codec in TEXT_SUBTITLES:
        return "convert", target, lost
    kinds = {"webm": "WebVTT", "mp4": "mov_text and DVD", "mov": "mov_text and DVD"}
    return "refuse", None, f"{suffix} carries {kinds[container]} subtitles only, not {codec}"


def _audio_video_problem(s: StreamInfo, suffix: str, container: str) -> str | None:
    codec = s.codec or "unknown"
    if s.type == "audio":
        if container == "webm" and codec not in _WEBM_AUDIO:
            return f"{suffix} carries Opus or Vorbis audio only, not {codec}"
        bad = _MOV_BAD_AUDIO if container == "mov" else _MP4_BAD_AUDIO
        if container in ("mp4", "mov") and codec in bad:
            return f"{suffix} cannot carry {codec} audio"
        return None
    if s.is_cover_art:
        if container == "webm":
            return f"{suffix} cannot carry cover art"
        if codec not in _COVER_EXT:
            return f"cover art in {codec} cannot be kept"
        return None
    if container == "webm" and codec not in _WEBM_VIDEO:
        return f"{suffix} holds VP8, VP9 or AV1 video only, not {codec}"
    if container in ("mp4", "mov") and codec in _MP4_BAD_VIDEO:
        return f"{suffix} cannot hold {codec} video"
    return None


def _plan_one(s: StreamInfo, suffix: str, container: str) -> StreamPlan:
    if s.is_chapter_track:
        return StreamPlan(s, "chapters")
    if s.type == "subtitle":
        action, codec, note = _subtitle_plan(s, suffix, container)
        return StreamPlan(s, action, codec, note)
    if s.type == "attachment":
        if container == "mkv":
            return StreamPlan(s, "copy")
        return StreamPlan(s, "refuse", note=f"{suffix} cannot carry attachments (fonts)")
    if s.type in ("data", "unknown"):
        if s.codec in STRUCTURAL_DATA:
            return StreamPlan(s, "drop", note=STRUCTURAL_DATA[s.codec])
        if s.is_timecode and container in ("mp4", "mov"):
            return StreamPlan(s, "timecode")
        what = "a QuickTime timecode track" if s.is_timecode else "this data stream"
        return StreamPlan(s, "refuse", note=f"{suffix} cannot carry {what}")
    problem = _audio_video_problem(s, suffix, container)
    return StreamPlan(s, "refuse", note=problem) if problem else StreamPlan(s, "copy")


def plan_streams(
    info: MediaInfo,
    output_suffix: str,
    *,
    drop_unsupported: bool = False,
    exclude: Iterable[int] = (),
) -> list[StreamPlan]:
    """What an output of type ``output_suffix`` (``.mkv``, ``.mp4``, ``.mov``, ``.webm``) does
    with each of ``info``'s streams besides the main video (see :class:`StreamPlan`). A
    stream it cannot carry is ``refuse``, or ``drop`` with ``drop_unsupported``; streams whose
    index is in ``exclude`` are ``drop``. ``UsageError`` for a container vidsr does not write."""
    suffix = output_suffix.lower()
    suffix = suffix if suffix.startswith(".") else f".{suffix}"
    if suffix not in SUPPORTED_SUFFIXES:
        raise UsageError(
            f"{suffix} outputs are not supported; write one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    container = _container(suffix)
    skip = set(exclude)
    plans = []
    for s in info.streams:
        plan = StreamPlan(s, "drop") if s.index in skip else _plan_one(s, suffix, container)
        if plan.action == "refuse" and drop_unsupported:
            plan = StreamPlan(s, "drop", note=plan.note)
        plans.append(plan)
    return plans


def _carries_all(info: MediaInfo, suffix: str, video_codec: str) -> bool:
    if video_problem(suffix, video_codec):
        return False
    return not any(p.action == "refuse" for p in plan_streams(info, suffix))


def refusal(
    info: MediaInfo, output_suffix: str, video_codec: str, *, drop_unsupported: bool = False
) -> str | None:
    """The one-line refusal for an output that cannot carry the new video or some stream of
    ``info`` (None when it can; streams do not count with ``drop_unsupported``): what, why,
    and the ways forward - another container that carries everything, and (for streams)
    leaving them out."""
    suffix = output_suffix.lower()
    name = info.path.name
    others = [c for c in _ALTERNATIVES if c != suffix and _carries_all(info, c, video_codec)]
    elsewhere = f"write {' or '.join(others[:2])}" if others else ""
    problem = video_problem(suffix, video_codec)
    if problem:
        ways = [f"choose another {opt('codec')} (libvpx-vp9 or libsvtav1 for .webm)"]
        return f"the new video cannot go in {suffix}: {problem}; " + (
            f"{ways[0]}, or {elsewhere}" if elsewhere else ways[0]
        )
    refused = [p for p in plan_streams(info, suffix) if p.action == "refuse"]
    if not refused or drop_unsupported:
        return None
    what = "; ".join(f"{describe_stream(p.stream)}: {p.note}" for p in refused)
    ways = ([elsewhere] if elsewhere else []) + [
        f"pass {opt('drop_unsupported', True)} to leave "
        + ("it" if len(refused) == 1 else "them")
        + " out"
    ]
    count = "a stream" if len(refused) == 1 else f"{len(refused)} streams"
    return f"{suffix} cannot carry {count} of {name}: {what} - {', or '.join(ways)}"


def check_container_support(
    info: MediaInfo,
    output_suffix: str,
    video_codec: str | None = None,
    *,
    exclude: Iterable[int] = (),
) -> list[str]:
    """What an output of type ``output_suffix`` cannot carry of ``info``'s streams (and of the
    new video's ``video_codec``, if given): one line per problem, empty when everything fits
    (conversions count as fitting). Streams whose index is in ``exclude`` are left out."""
    suffix = output_suffix.lower() if output_suffix.startswith(".") else f".{output_suffix}"
    try:
        plans = plan_streams(info, suffix, exclude=exclude)
    except UsageError as exc:
        return [exc.template]
    problems = []
    if video_codec:
        problem = video_problem(suffix, video_codec)
        if problem:
            problems.append(f"new video: {problem}")
    problems += [f"{describe_stream(p.stream)}: {p.note}" for p in plans if p.action == "refuse"]
    return problems


def _extract_cover(source: Path, stream: StreamInfo, folder: Path) -> Path:
    """Write cover-art stream ``stream`` of ``source`` (its attached-picture packet) to a file."""
    with open_input(source) as container:
        st = next(s for s in container.streams if s.index == stream.index)
        for packet in container.demux(st):
            if packet.size:
                data = bytes(packet)
                break
        else:
            raise PipelineError(f"{source}: cover art stream #{stream.index} has no picture")
    name = stream.filename or f"cover{_COVER_EXT.get(stream.codec or '', '.bin')}"
    path = folder / f"{stream.index}_{Path(name).name}"
    path.write_bytes(data)
    return path


def _ts(x: Fraction) -> str:
    """Seconds for ffmpeg's time options, exact to the microsecond."""
    return f"{float(x):.6f}"


def remux(
    video_only: str | os.PathLike[str],
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    info: MediaInfo,
    exclude: Iterable[int] = (),
    drop_unsupported: bool = False,
    time_range: TimeRange | None = None,
    display_aspect: Fraction | None = None,
) -> None:
    """Write ``output``: the video of ``video_only`` plus every other stream of ``source``
    (see the module docstring), atomically (temp file + rename).

    ``info`` is ``probe(source)``; what happens to each stream is :func:`plan_streams`'s
    (``exclude``: source stream indices to leave out; ``drop_unsupported``: leave out what the
    container cannot carry). The output shows at the source's display aspect (or
    ``display_aspect``: a crop or a new output size changed it), written in the container too
    (some codecs, ffv1 among them, cannot carry it in the bitstream).
    ``time_range``: ``(start, end)`` seconds from the source's start (``end`` None: to its
    end), the part of the source ``video_only`` holds (its frames at their source times): every
    other stream is cut to it and the output starts at ``start`` (the module docstring says
    how). Raises ``PipelineError`` if the output's container cannot carry something
    (:func:`refusal` says so before any work) or ffmpeg fails, ``UsageError`` for an empty or
    negative range.
    """
    video_only, source, output = Path(video_only), Path(source), Path(output)
    vo = probe(video_only)
    plans = plan_streams(info, output.suffix, drop_unsupported=drop_unsupported, exclude=exclude)
    problems = [f"{describe_stream(p.stream)}: {p.note}" for p in plans if p.action == "refuse"]
    problem = video_problem(output.suffix, vo.video.codec)
    if problem or problems:
        raise PipelineError(f"{output.name}: " + "; ".join([*filter(None, [problem]), *problems]))
    with tempfile.TemporaryDirectory(prefix="vidsr-remux-") as tmpdir:
        folder = Path(tmpdir)
        if time_range is None:
            args = _remux_args(video_only, source, info, vo, output, plans)
        else:
            args = _range_args(video_only, source, info, vo, output, plans, time_range, folder)
        dar = (display_aspect or info.video.display_aspect).limit_denominator(10000)
        args += ["-aspect:v:0", f"{dar.numerator}:{dar.denominator}"]
        kept = [p.stream for p in plans if p.action in ("copy", "convert")]
        if _kind(output.suffix) == "mkv":
            args += _cover_attachments(source, kept, folder)
        with atomic_output(output) as tmp:
            run_ffmpeg([*args, str(tmp)])
            testing_pause("mux")


def _remux_args(
    video_only: Path,
    source: Path,
    info: MediaInfo,
    vo: MediaInfo,
    output: Path,
    plans: list[StreamPlan],
) -> list[str]:
    """The ffmpeg arguments of :func:`remux` up to the output file (cover art aside)."""
    kind = _kind(output.suffix)
    # Where the first frame must land vs where the video-only file has it, in its time base.
    want = round(info.video.start_time / vo.video.time_base)
    offset = (want - vo.video.frame_pts[0]) * vo.video.time_base
    if offset:
        log.debug("%s: first frame is %s s off; shifting it back (-itsoffset)", video_only, offset)
    main = info.video
    args: list[str] = ["-y", "-copyts"]
    if offset:
        args += ["-itsoffset", _ts(offset)]
    args += ["-i", str(video_only), "-i", str(source)]
    args += ["-map", "0:v:0", "-map", "1", "-map", f"-1:{main.index}"]
    mapped = _mapped(plans, kind)
    for p in plans:
        if p.stream not in mapped:  # dropped, chapters, timecode, mkv cover art (re-attached)
            args += ["-map", f"-1:{p.stream.index}"]
    args += ["-c", "copy", "-map_metadata", "1", "-map_chapters", "1"]
    return args + _stream_args(info, vo, kind, plans, mapped)


def _mapped(plans: list[StreamPlan], kind: str) -> list[StreamInfo]:
    """The source streams the output carries, in order (the new video aside): all that are
    copied or converted but Matroska's cover art (re-attached as a file)."""
    return [
        p.stream
        for p in plans
        if p.action in ("copy", "convert") and not (kind == "mkv" and p.stream.is_cover_art)
    ]


def _stream_args(
    info: MediaInfo,
    vo: MediaInfo,
    kind: str,
    plans: list[StreamPlan],
    mapped: list[StreamInfo],
    skipped: int = 0,
) -> list[str]:
    """The per-stream output options of :func:`remux`: conversions, MP4 cover art, the time
    scale, the new video's tags (its timecode ``skipped`` frames on) and disposition."""
    main = info.video
    args: list[str] = []
    converted = {p.stream.index: p.codec for p in plans if p.action == "convert"}
    for out_index, s in enumerate(mapped, start=1):
        if s.index in converted:
            args += [f"-c:{out_index}", str(converted[s.index])]
        if kind == "mp4" and s.is_cover_art:
            args += [f"-disposition:{out_index}", "attached_pic"]
    if kind == "mp4":  # start offsets (edit lists) are in this unit: 1 ms by default
        args += ["-movie_timescale", str(_movie_timescale(vo))]
    args += _video_tags(main, plans, skipped)
    # Giving one disposition switches ffmpeg's "auto default" off: all others are copied as-is.
    # (The display aspect follows, in the container too: ffv1 and others cannot carry it.)
    return [*args, "-disposition:v:0", "+".join(main.dispositions) or "0"]


def _movie_timescale(vo: MediaInfo) -> int:
    """An MP4/MOV output's movie time scale: the new video's own, 1 ms at the coarsest."""
    return max(1000, vo.video.time_base.denominator)


def _range_args(
    video_only: Path,
    source: Path,
    info: MediaInfo,
    vo: MediaInfo,
    output: Path,
    plans: list[StreamPlan],
    time_range: TimeRange,
    folder: Path,
) -> list[str]:
    """:func:`_remux_args` for a time range (see the module docstring): the new video moved
    to the range's start; the other streams' cuts (:func:`_range_inputs`), a stream with
    nothing in the range from the source with every packet dropped (an empty track);
    attachments, cover art and metadata from the source."""
    kind = _kind(output.suffix)
    lo, hi = _absolute_range(info, time_range)
    first = _first_frame_in(info, lo, hi)
    tb = vo.video.time_base
    # The output's zero: the start, down to a tick of the new video (its times stay whole
    # ticks, and every stream is shifted by the same amount).
    zero = math.floor(lo / tb) * tb
    want = round(info.video.frame_time(first) / tb)
    shift = (want - vo.video.frame_pts[0]) * tb - zero
    args = ["-y", "-copyts", "-itsoffset", _ts(shift), "-i", str(video_only), "-i", str(source)]
    mapped = _mapped(plans, kind)
    inputs, where, chapters = _range_inputs(source, info, mapped, output, (zero, hi), folder)
    args += [*inputs, "-map", "0:v:0"]
    for s in mapped:
        args += ["-map", where.get(s.index, f"1:{s.index}")]
    args += ["-c", "copy", "-map_metadata", "1", "-map_chapters", chapters]
    cut = {s.index for s in mapped if _is_cut(s)}
    args += _cut_metadata(mapped, cut)
    for out_index, s in enumerate(mapped, start=1):
        if s.index in cut and s.index not in where:
            args += [f"-bsf:{out_index}", "noise=drop=1"]
    return args + _stream_args(info, vo, kind, plans, mapped, skipped=first)


def _is_cut(s: StreamInfo) -> bool:
    """Whether a time range cuts stream ``s`` (audio, video, subtitles, not cover art)."""
    return s.type in ("audio", "video", "subtitle") and not s.is_cover_art


def _range_inputs(
    source: Path,
    info: MediaInfo,
    mapped: list[StreamInfo],
    output: Path,
    cut: tuple[Fraction, Fraction | None],
    folder: Path,
) -> tuple[list[str], dict[int, str], str]:
    """The inputs after the video-only file and the source that hold the cuts to ``cut``
    (``(lo, hi)`` in the source's times), written into ``folder``: the audio and other video
    (:func:`_cut_streams`), the subtitles (:func:`_cut_subtitles`), the chapters
    (:func:`_chapter_file`). Returns their arguments, ``{source stream index: the input
    stream holding its cut}`` (streams with something in the range) and the chapters' input
    (``-1``: none)."""
    lo, hi = cut
    start = lo - info.origin
    timed = [s for s in mapped if _is_cut(s) and s.type != "subtitle"]
    timescale = _EXACT_TIMESCALE if _kind(output.suffix) == "mp4" else None
    # The output's own muxer (MP4/MOV: exact ticks); Matroska for subtitles but mov_text.
    cuts = _cut_streams(source, timed, start, lo, hi, folder, output.suffix.lower(), timescale)
    subtitles = [s for s in mapped if s.type == "subtitle"]
    cuts |= _cut_subtitles(source, subtitles, start, lo, hi, folder)
    args: list[str] = []
    where: dict[int, str] = {}
    for index, path in cuts.items():
        where[index] = f"{2 + len(args) // 2}:0"
        args += ["-i", str(path)]
    chapters = _chapter_file(info, lo, hi, folder / "chapters.txt")
    if chapters is None:
        return args, where, "-1"
    return [*args, "-f", "ffmetadata", "-i", str(chapters)], where, str(2 + len(args) // 2)


def _absolute_range(info: MediaInfo, time_range: TimeRange) -> tuple[Fraction, Fraction | None]:
    """``time_range`` (relative to the source's start) in the source's own times;
    ``UsageError`` for a range that starts before 0 or does not end after its start."""
    start, end = Fraction(time_range[0]), time_range[1]
    if start < 0 or (end is not None and Fraction(end) <= start):
        shown = "the end" if end is None else _ts(Fraction(end))
        raise UsageError(
            f"time range {_ts(start)} to {shown}: it must start at 0 or later "
            "and end after its start"
        )
    origin = info.origin
    return origin + start, None if end is None else origin + Fraction(end)


def _first_frame_in(info: MediaInfo, lo: Fraction, hi: Fraction | None) -> int:
    """The index of the source's first video frame timed in ``[lo, hi)``."""
    video = info.video
    for i, p in enumerate(video.frame_pts):
        t = p * video.time_base
        if t >= lo and (hi is None or t < hi):
            return i
    raise PipelineError(f"{info.path.name}: no video frame lies in the time range")


def _cut_streams(
    source: Path,
    streams: list[StreamInfo],
    start: Fraction,
    lo: Fraction,
    hi: Fraction | None,
    folder: Path,
    suffix: str,
    timescale: int | None,
) -> dict[int, Path]:
    """Copy the packets of each of ``streams`` timed in ``[lo, hi)`` into a ``suffix`` file
    of its own in ``folder`` (one ffmpeg run), shifted by ``-lo``: the first packet at or
    after ``lo`` to the last before ``hi``, bit for bit (ffmpeg's output ``-ss``/``-to`` on
    unshifted times). Reading starts :data:`_SEEK_MARGIN` before ``start`` (relative to the
    source's start). ``timescale``: an MP4/MOV movie time scale. Returns the files that hold
    packets, by source stream index."""
    if not streams:
        return {}
    args = ["-y", "-copyts"]
    if start > _SEEK_MARGIN:
        args += ["-ss", _ts(start - _SEEK_MARGIN)]
    args += ["-i", str(source)]
    paths = {s.index: folder / f"stream{s.index}{suffix}" for s in streams}
    for index, path in paths.items():
        args += ["-map", f"0:{index}", "-c", "copy", "-map_metadata", "-1", "-map_chapters", "-1"]
        args += ["-ss", _ts(lo)] + ([] if hi is None else ["-to", _ts(hi)])
        args += [] if timescale is None else ["-movie_timescale", str(timescale)]
        args.append(str(path))
    run_ffmpeg(args)
    return {index: path for index, path in paths.items() if _has_packets(path)}


def _has_packets(path: Path) -> bool:
    """Whether ``path`` opens and holds a packet with data (a cut may hold none)."""
    try:
        with av.open(str(path)) as container:
            return any(p.size for p in container.demux())
    except (av.FFmpegError, OSError):
        return False


def _cut_subtitles(
    source: Path,
    streams: list[StreamInfo],
    start: Fraction,
    lo: Fraction,
    hi: Fraction | None,
    folder: Path,
) -> dict[int, Path]:
    """Each of ``streams`` (subtitles) cut to ``[lo, hi)`` into a file of its own in
    ``folder``, shifted by ``-lo``: every event that overlaps the range, one still showing at
    ``lo`` starting at 0, each ending by ``hi`` (:func:`_overlapping`); none for a stream
    with no such event. Reading starts :data:`_SUBTITLE_MARGIN` before ``start`` (relative to
    the source's start)."""
    if not streams:
        return {}
    with open_input(source) as container:
        inputs = [container.streams[s.index] for s in streams]
        if start > _SUBTITLE_MARGIN:
            # Backwards to a keyframe at or before: to the file's start if that fails.
            with contextlib.suppress(av.FFmpegError):
                container.seek(int((start - _SUBTITLE_MARGIN) * 1_000_000))
        events: dict[int, list[tuple[Fraction, av.Packet]]] = {s.index: [] for s in streams}
        for packet in container.demux(inputs):
            t = _packet_time(packet)
            if t is not None and hi is not None and t >= hi + _SEEK_MARGIN:
                break
            if t is not None:
                events[packet.stream.index].append((t, packet))
        cuts = {}
        for s, st in zip(streams, inputs, strict=True):
            kept = _overlapping(events[s.index], lo, hi)
            if kept:
                cuts[s.index] = folder / f"subtitle{s.index}{_subtitle_suffix(s)}"
                _write_subtitles(st, kept, lo, cuts[s.index])
    return cuts


def _packet_time(packet: av.Packet) -> Fraction | None:
    """A packet's time in seconds (its pts, else its dts); None for one without either."""
    ts = packet.pts if packet.pts is not None else packet.dts
    if ts is None or not packet.size or packet.time_base is None:
        return None
    return ts * packet.time_base


def _overlapping(
    packets: list[tuple[Fraction, av.Packet]], lo: Fraction, hi: Fraction | None
) -> list[tuple[av.Packet, Fraction, Fraction | None]]:
    """(packet, start, end) of the subtitle events (``(time, packet)``) that show in
    ``[lo, hi)``, clipped to it (end None: until the next event clears it). An event with a
    duration counts when it overlaps; one without (PGS, DVB: the next one clears it) when it
    starts in the range, and the last one before ``lo``, which may still be showing there."""
    kept: list[tuple[av.Packet, Fraction, Fraction | None]] = []
    showing: av.Packet | None = None
    for t, packet in packets:
        if hi is not None and t >= hi:
            continue
        end = t + packet.duration * packet.time_base if packet.duration else None
        if end is None and t < lo:
            showing = packet
        elif t >= lo or (end is not None and end > lo):
            kept.append((packet, max(t, lo), end if hi is None or end is None else min(end, hi)))
    if showing is not None:
        kept.insert(0, (showing, lo, None))
    return kept


def _subtitle_suffix(s: StreamInfo) -> str:
    """The container a cut of subtitle stream ``s`` is written in: Matroska carries all
    vidsr keeps but MP4's mov_text and QuickTime's CEA-608."""
    return {"mov_text": ".mp4", "eia_608": ".mov"}.get(s.codec or "", ".mkv")


def _write_subtitles(
    template: Any,
    events: list[tuple[av.Packet, Fraction, Fraction | None]],
    lo: Fraction,
    path: Path,
) -> None:
    """Write ``events`` (:func:`_overlapping`) of subtitle stream ``template`` to ``path``,
    shifted by ``-lo``; the packets keep their payload, side data and flags."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(template)
        stream.time_base = template.time_base
        for packet, start, end in events:
            tb = packet.time_base
            packet.pts = packet.dts = round((start - lo) / tb)
            packet.duration = 0 if end is None else max(0, round((end - start) / tb))
            packet.stream = stream
            packet.time_base = tb
            out.mux(packet)


def _chapter_file(info: MediaInfo, lo: Fraction, hi: Fraction | None, path: Path) -> Path | None:
    """The chapters that overlap ``[lo, hi)``, clipped to it and shifted by ``-lo``, as an
    FFmetadata file at ``path``; None when no chapter does."""
    lines = [";FFMETADATA1"]
    for ch in info.chapters:
        if (hi is not None and ch.start >= hi) or (ch.end <= lo and ch.start < lo):
            continue
        start, end = max(ch.start, lo) - lo, (ch.end if hi is None else min(ch.end, hi)) - lo
        lines += ["[CHAPTER]", "TIMEBASE=1/1000000000"]
        lines += [f"START={round(start * 10**9)}", f"END={round(max(start, end) * 10**9)}"]
        lines += [f"{_ffmeta_escape(k)}={_ffmeta_escape(v)}" for k, v in ch.metadata.items()]
    if len(lines) == 1:
        return None
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ffmeta_escape(text: str) -> str:
    """``text`` escaped for an FFmetadata file (``=``, ``;``, ``#``, ``\\`` and newlines)."""
    return re.sub(r"([=;#\\\n])", r"\\\1", text)


def _cut_metadata(mapped: list[StreamInfo], cut: set[int]) -> list[str]:
    """Per-stream metadata for a time range: each stream's tags from its source stream (the
    new video's from the video-only file), less the statistics of the whole stream (stale on
    a cut); the cut streams' dispositions, which their temporary files do not carry."""
    args = ["-map_metadata:s:0", "0:s:0"]
    for out_index, s in enumerate(mapped, start=1):
        args += [f"-map_metadata:s:{out_index}", f"1:s:{s.index}"]
        if s.index not in cut:
            continue
        for key in s.metadata:
            if key.lower().removesuffix("-eng") in _WHOLE_STREAM_TAGS:
                args += [f"-metadata:s:{out_index}", f"{key}="]
        args += [f"-disposition:{out_index}", "+".join(s.dispositions) or "0"]
    return args


def _video_tags(main: Any, plans: list[StreamPlan], skipped: int = 0) -> list[str]:
    """The new video's own tags: the source video's, minus what described the old encoding
    (statistics, the encoder, an alpha channel the new video no longer has), plus the timecode
    of a timecode track that is written anew; a timecode moves on by ``skipped`` frames (the
    source frames before a time range)."""
    args: list[str] = []
    for key, value in main.metadata.items():
        base = key.lower().removesuffix("-eng")
        if base in _STALE_VIDEO_TAGS:
            continue
        if base == "timecode" and skipped:
            value = shift_timecode(value, skipped, main.avg_rate)
        args += ["-metadata:s:v:0", f"{key}={value}"]
    if main.language and not any(k.lower() == "language" for k in main.metadata):
        args += ["-metadata:s:v:0", f"language={main.language}"]
    has_timecode = any(k.lower() == "timecode" for k in main.metadata)
    for p in plans:
        if p.action == "timecode" and not has_timecode and p.stream.timecode:
            timecode = p.stream.timecode
            if skipped:
                timecode = shift_timecode(timecode, skipped, main.avg_rate)
            args += ["-metadata:s:v:0", f"timecode={timecode}"]
            has_timecode = True
    return args


def shift_timecode(timecode: str, frames: int, rate: Fraction) -> str:
    """``timecode`` (``HH:MM:SS:FF``; ``;`` or ``.`` before ``FF`` for drop-frame) ``frames``
    frames later at ``rate`` (its nominal rate: 30 for 30000/1001), wrapping at 24 hours;
    unchanged if it does not parse."""
    parts = re.fullmatch(r"(\d+):(\d\d):(\d\d)([:;.,])(\d+)", timecode.strip())
    fps = round(rate)
    if not parts or fps <= 0:
        return timecode
    h, m, sec, f = (int(parts[i]) for i in (1, 2, 3, 5))
    sep = parts[4]
    drop = fps // 15 if sep != ":" and fps % 30 == 0 else 0  # 2 at 30 fps, 4 at 60
    minutes = h * 60 + m
    n = (minutes * 60 + sec) * fps + f - drop * (minutes - minutes // 10) + frames
    n %= 24 * 3600 * fps - drop * 24 * 6 * 9
    if drop:  # frame count -> drop-frame label (SMPTE 12M: labels 0, 1 skipped but every 10th)
        per_minute, per_ten = fps * 60 - drop, fps * 600 - drop * 9
        tens, rest = divmod(n, per_ten)
        n += drop * 9 * tens + (drop * ((rest - drop) // per_minute) if rest > drop else 0)
    sec_total, f = divmod(n, fps)
    return f"{sec_total // 3600:02d}:{sec_total // 60 % 60:02d}:{sec_total % 60:02d}{sep}{f:02d}"


def _cover_attachments(source: Path, kept: list[StreamInfo], folder: Path) -> list[str]:
    """``-attach`` arguments re-attaching the source's cover art as files (Matroska)."""
    args: list[str] = []
    covers = [s for s in kept if s.is_cover_art]
    n_attach = sum(1 for s in kept if s.type == "attachment")
    for i, s in enumerate(covers):
        pic = _extract_cover(source, s, folder)
        t = n_attach + i
        mime = s.mimetype or _COVER_MIME.get(s.codec or "", "application/octet-stream")
        name = s.filename or f"cover{_COVER_EXT.get(s.codec or '', '.bin')}"
        args += [
            "-attach",
            str(pic),
            f"-metadata:s:t:{t}",
            f"mimetype={mime}",
            f"-metadata:s:t:{t}",
            f"filename={name}",
        ]
    return args
