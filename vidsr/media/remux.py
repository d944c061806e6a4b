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
from fractions import Fraction
from pathlib import Path

from vidsr.errors import PipelineError
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
}
_MKV_BAD_SUBS = {"mov_text", "eia_608", "arib_caption", "ttml"}
_MP4_SUBS = {"mov_text", "dvd_subtitle"}
_WEBM_VIDEO = {"vp8", "vp9", "av1"}
_WEBM_AUDIO = {"opus", "vorbis"}
_MP4_BAD_AUDIO = {"vorbis", "truehd", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_u8", "pcm_f32le"}
_MP4_BAD_VIDEO = {"ffv1", "utvideo", "huffyuv", "ffvhuff"}
_COVER_EXT = {"mjpeg": ".jpg", "png": ".png", "bmp": ".bmp", "webp": ".webp", "gif": ".gif"}
_COVER_MIME = {
    "mjpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "gif": "image/gif",
}


def _kind(suffix: str) -> str:
    """The container family of a supported output suffix: mkv, webm or mp4 (MP4 and MOV)."""
    suffix = suffix.lower()
    if suffix in MKV_SUFFIXES:
        return "mkv"
    return "webm" if suffix in WEBM_SUFFIXES else "mp4"


def _describe(s: StreamInfo) -> str:
    bits = [f"#{s.index} {s.type} ({s.codec or s.mimetype or 'unknown codec'}"]
    if s.language:
        bits.append(f", {s.language}")
    if s.title:
        bits.append(f", {s.title!r}")
    if s.filename:
        bits.append(f", {s.filename}")
    return "".join(bits) + ")"


def check_container_support(
    info: MediaInfo,
    output_suffix: str,
    video_codec: str | None = None,
    *,
    exclude: Iterable[int] = (),
) -> list[str]:
    """What an output of type ``output_suffix`` (".mkv", ".mp4" ...) cannot carry of ``info``'s
    streams (and of the new video's ``video_codec``, if given): one line per problem, empty when
    everything fits. Streams whose source index is in ``exclude`` are left out (as ``remux``
    would). Meant to be checked before any work is done."""
    suffix = output_suffix.lower()
    if not suffix.startswith("."):
        suffix = "." + suffix
    if suffix not in SUPPORTED_SUFFIXES:
        return [
            f"{suffix} outputs are not supported (use one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))})"
        ]
    problems: list[str] = []
    kind = _kind(suffix)
    if video_codec:
        if kind == "webm" and video_codec not in _WEBM_VIDEO:
            problems.append(
                f"new video: {suffix} can only hold VP8/VP9/AV1 video, not {video_codec}"
            )
        if kind == "mp4" and video_codec in _MP4_BAD_VIDEO:
            problems.append(f"new video: {suffix} cannot hold {video_codec} video (use .mkv)")
    skip = set(exclude)
    for s in info.copied_streams:
        if s.index in skip:
            continue
        what = _describe(s)
        if s.type == "data" or s.type == "unknown":
            problems.append(f"{what}: {suffix} cannot carry this data stream")
        elif s.type == "attachment":
            if kind != "mkv":
                problems.append(f"{what}: {suffix} cannot carry attachments (fonts); use .mkv")
        elif s.type == "subtitle":
            if kind == "mkv" and s.codec in _MKV_BAD_SUBS:
                problems.append(f"{what}: {suffix} cannot carry {s.codec} subtitles as they are")
            elif kind == "mp4" and s.codec not in _MP4_SUBS:
                problems.append(
                    f"{what}: {suffix} cannot carry {s.codec} subtitles (only mov_text); use .mkv"
                )
            elif kind == "webm" and s.codec != "webvtt":
                problems.append(f"{what}: {suffix} can only carry WebVTT subtitles; use .mkv")
        elif s.type == "audio":
            if kind == "webm" and s.codec not in _WEBM_AUDIO:
                problems.append(f"{what}: {suffix} can only carry Opus/Vorbis audio; use .mkv")
            if kind == "mp4" and s.codec in _MP4_BAD_AUDIO:
                problems.append(f"{what}: {suffix} cannot carry {s.codec} audio; use .mkv")
        elif s.type == "video":
            if s.is_cover_art:
                if kind == "webm":
                    problems.append(f"{what}: {suffix} cannot carry cover art; use .mkv")
                elif s.codec not in _COVER_EXT:
                    problems.append(f"{what}: cover art in {s.codec} cannot be kept")
            elif kind == "webm" and s.codec not in _WEBM_VIDEO:
                problems.append(f"{what}: {suffix} can only hold VP8/VP9/AV1 video; use .mkv")
            elif kind == "mp4" and s.codec in _MP4_BAD_VIDEO:
                problems.append(f"{what}: {suffix} cannot hold {s.codec} video; use .mkv")
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
) -> None:
    """Write ``output``: the video of ``video_only`` plus every other stream of ``source``
    (see the module docstring), atomically (temp file + rename).

    ``info`` is ``probe(source)``; ``exclude`` lists source stream indices to leave out (for
    streams :func:`check_container_support` says the output cannot carry). Raises ``PipelineError`` if ``output``'s container cannot carry
    something (run :func:`check_container_support` first to refuse early) or ffmpeg fails.
    """
    video_only, source, output = Path(video_only), Path(source), Path(output)
    vo = probe(video_only)
    skip = set(exclude) | {s.index for s in info.streams if s.is_chapter_track}
    problems = check_container_support(info, output.suffix, vo.video.codec, exclude=skip)
    if problems:
        raise PipelineError(f"{output.name}: " + "; ".join(problems))
    kind = _kind(output.suffix)

    # Where the first frame must land vs where the video-only file has it, in its time base.
    want = round(info.video.start_time / vo.video.time_base)
    have = vo.video.frame_pts[0]
    offset = (want - have) * vo.video.time_base
    if offset:
        log.debug(
            "%s: first frame is %s s off; shifting it back with -itsoffset", video_only, offset
        )

    main = info.video
    args: list[str] = ["-y", "-copyts"]
    if offset:
        args += ["-itsoffset", _ts(offset)]
    args += ["-i", str(video_only), "-i", str(source)]
    args += ["-map", "0:v:0", "-map", "1", "-map", f"-1:{main.index}"]
    kept = [s for s in info.streams if s.index not in skip]
    covers = [s for s in kept if s.is_cover_art]
    for index in sorted(skip):
        args += ["-map", f"-1:{index}"]
    if kind == "mkv":
        for s in covers:  # re-attached below as files
            args += ["-map", f"-1:{s.index}"]
    args += ["-c", "copy", "-map_metadata", "1", "-map_chapters", "1"]
    if kind == "mp4":  # start offsets (edit lists) are in this unit: 1 ms by default
        args += ["-movie_timescale", str(max(1000, vo.video.time_base.denominator))]
    # The new video's own tags: the source video's, minus stale encoding statistics.
    for key, value in main.metadata.items():
        base = key.lower().removesuffix("-eng")
        if base in _STALE_VIDEO_TAGS:
            continue
        args += ["-metadata:s:v:0", f"{key}={value}"]
    if main.language and not any(k.lower() == "language" for k in main.metadata):
        args += ["-metadata:s:v:0", f"language={main.language}"]
    # Giving one disposition switches ffmpeg's "auto default" off: all others are copied as-is.
    args += ["-disposition:v:0", "+".join(main.dispositions) or "0"]
    if kind == "mp4":
        for out_index, s in enumerate(kept, start=1):
            if s.is_cover_art:
                args += [f"-disposition:{out_index}", "attached_pic"]

    with tempfile.TemporaryDirectory(prefix="vidsr-remux-") as tmpdir:
        if kind == "mkv" and covers:
            n_attach = sum(1 for s in kept if s.type == "attachment")
            for i, s in enumerate(covers):
                pic = _extract_cover(source, s, Path(tmpdir))
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
        with atomic_output(output) as tmp:
            run_ffmpeg([*args, str(tmp)])
            testing_pause("mux")
