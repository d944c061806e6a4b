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
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidsr.errors import PipelineError, UsageError, opt
from vidsr.files import atomic_output, testing_pause
from vidsr.media.ffmpeg import run_ffmpeg
from vidsr.media.probe import MediaInfo, StreamInfo, open_input, probe

log = logging.getLogger(__name__)

MKV_SUFFIXES = {".mkv", ".mka", ".mk3d"}
MP4_SUFFIXES = {".mp4", ".m4v", ".mov"}
WEBM_SUFFIXES = {".webm"}
SUPPORTED_SUFFIXES = MKV_SUFFIXES | MP4_SUFFIXES | WEBM_SUFFIXES

# Source tags on the main video that describe the OLD encoding (mkvmerge statistics, encoder):
# not copied onto the new video.
_STALE_VIDEO_TAGS = {
    "duration",
    "encoder",
    "bps",
    "number_of_frames",
    "number_of_bytes",
    "_statistics_writing_app",
    "_statistics_writing_date_utc",
    "_statistics_tags",
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
) -> None:
    """Write ``output``: the video of ``video_only`` plus every other stream of ``source``
    (see the module docstring), atomically (temp file + rename).

    ``info`` is ``probe(source)``; what happens to each stream is :func:`plan_streams`'s
    (``exclude``: source stream indices to leave out; ``drop_unsupported``: leave out what the
    container cannot carry). The output shows at the source's display aspect, written in the
    container too (some codecs, ffv1 among them, cannot carry it in the bitstream). Raises
    ``PipelineError`` if the output's container cannot carry something (:func:`refusal` says
    so before any work) or ffmpeg fails.
    """
    video_only, source, output = Path(video_only), Path(source), Path(output)
    vo = probe(video_only)
    plans = plan_streams(info, output.suffix, drop_unsupported=drop_unsupported, exclude=exclude)
    problems = [f"{describe_stream(p.stream)}: {p.note}" for p in plans if p.action == "refuse"]
    problem = video_problem(output.suffix, vo.video.codec)
    if problem or problems:
        raise PipelineError(f"{output.name}: " + "; ".join([*filter(None, [problem]), *problems]))
    args = _remux_args(video_only, source, info, vo, output, plans)
    with tempfile.TemporaryDirectory(prefix="vidsr-remux-") as tmpdir:
        kept = [p.stream for p in plans if p.action in ("copy", "convert")]
        if _kind(output.suffix) == "mkv":
            args += _cover_attachments(source, kept, Path(tmpdir))
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
    mapped = [
        p.stream
        for p in plans
        if p.action in ("copy", "convert") and not (kind == "mkv" and p.stream.is_cover_art)
    ]
    for p in plans:
        if p.stream not in mapped:  # dropped, chapters, timecode, mkv cover art (re-attached)
            args += ["-map", f"-1:{p.stream.index}"]
    args += ["-c", "copy", "-map_metadata", "1", "-map_chapters", "1"]
    converted = {p.stream.index: p.codec for p in plans if p.action == "convert"}
    for out_index, s in enumerate(mapped, start=1):
        if s.index in converted:
            args += [f"-c:{out_index}", str(converted[s.index])]
        if kind == "mp4" and s.is_cover_art:
            args += [f"-disposition:{out_index}", "attached_pic"]
    if kind == "mp4":  # start offsets (edit lists) are in this unit: 1 ms by default
        args += ["-movie_timescale", str(max(1000, vo.video.time_base.denominator))]
    args += _video_tags(main, plans)
    # Giving one disposition switches ffmpeg's "auto default" off: all others are copied as-is.
    args += ["-disposition:v:0", "+".join(main.dispositions) or "0"]
    # The display aspect, in the container too (ffv1 and others cannot carry it themselves).
    dar = main.display_aspect.limit_denominator(10000)
    return [*args, "-aspect:v:0", f"{dar.numerator}:{dar.denominator}"]


def _video_tags(main: Any, plans: list[StreamPlan]) -> list[str]:
    """The new video's own tags: the source video's, minus what described the old encoding
    (statistics, the encoder, an alpha channel the new video no longer has), plus the timecode
    of a timecode track that is written anew."""
    args: list[str] = []
    for key, value in main.metadata.items():
        base = key.lower().removesuffix("-eng")
        if base in _STALE_VIDEO_TAGS:
            continue
        args += ["-metadata:s:v:0", f"{key}={value}"]
    if main.language and not any(k.lower() == "language" for k in main.metadata):
        args += ["-metadata:s:v:0", f"language={main.language}"]
    has_timecode = any(k.lower() == "timecode" for k in main.metadata)
    for p in plans:
        if p.action == "timecode" and not has_timecode and p.stream.timecode:
            args += ["-metadata:s:v:0", f"timecode={p.stream.timecode}"]
            has_timecode = True
    return args


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
