"""Probe a media file into frozen, typed records (``MediaInfo``).

Frame counting follows the measured recipe (FINDINGS, Media): demux the video stream's packets
only (milliseconds, no decoding) and keep the sorted pts of packets that have data, a pts and no
discard flag. Frame ``N`` is ``video.frame_pts[N]``; the frame count is the length of that list
- never ``duration x rate`` or the container's frame counter. One frame is decoded to prove the
stream decodes and to read what only frames carry (rotation, colour tags, pixel format).

Containers without presentation times (AVI: ``DTS_TIMED_FORMATS``) store each frame's chunk
at its slot - a frame's time is its chunk's position, the packet's dts - and what libavformat
shows as a pts there is a guess (dts plus the decoder's delay) that packed B-frames (DivX/Xvid
rips) contradict. For them the index holds the packets' dts, and the decoder times each frame
by the dts its packet carries out of the decoder (less the decoder's delay, measured here on
the first frame): frames in output order, times from their slots, as ffmpeg derives them.

Times are ``Fraction`` seconds; rates and time bases are ``Fraction``. Every failure a user can
cause (missing file, not media, no video, nothing decodable) is an ``InputError`` with one line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.stream import Discard, Disposition

from vidsr.errors import InputError
from vidsr.media import colour
from vidsr.media.hdr import HdrMetadata, read_hdr

log = logging.getLogger(__name__)

_AV_TIME_BASE = 1_000_000
# Formats/codecs libavformat will happily "open" that are not video: a .txt file becomes an
# ANSI-art video through the tty demuxer.
_NOT_VIDEO_FORMATS = {"tty"}
_NOT_VIDEO_CODECS = {"ansi"}
#: Containers whose frames are timed by their slot (the dts), not by a stored pts.
DTS_TIMED_FORMATS = frozenset({"avi"})


@dataclass(frozen=True)
class StreamInfo:
    """A stream other than the main video: audio, subtitle, attachment, data, cover art, or
    another video stream. ``index`` is the stream index in the source file.
    ``is_chapter_track``: MP4/MOV keep chapters in a text track that libavformat shows as a
    discarded data stream; it is not a stream to copy (``remux`` copies the chapters)."""

    index: int
    type: str  # "audio" | "subtitle" | "attachment" | "data" | "video" | "unknown"
    codec: str | None
    language: str | None
    title: str | None
    default: bool
    forced: bool
    dispositions: tuple[str, ...]
    is_cover_art: bool = False
    is_chapter_track: bool = False
    filename: str | None = None  # attachments and mkv cover art
    mimetype: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)
    timecode: str | None = None  # a QuickTime timecode track's start (HH:MM:SS:FF)

    @property
    def is_timecode(self) -> bool:
        """A QuickTime timecode (tmcd) track: a data stream that holds a start timecode."""
        return self.type == "data" and self.timecode is not None


@dataclass(frozen=True)
class ChapterInfo:
    """A chapter: ``start``/``end`` in seconds, its title if any."""

    start: Fraction
    end: Fraction
    title: str | None
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class VideoInfo:
    """The main video stream.

    ``frame_pts`` holds every frame's pts (in ``time_base`` units) in presentation order; frame
    ``N`` is the frame whose pts is ``frame_pts[N]``. ``colour`` is what the stream is tagged
    with; ``matrix``/``range`` are what decoding uses (tags, else the resolution fallback - see
    :mod:`vidsr.media.colour`). ``rotation`` is the display matrix's counter-clockwise angle in
    degrees (0, 90, 180 or -90 in practice). ``start_time`` is the first frame's time;
    ``start_offset`` is that minus the container's start (how long the video starts after the
    earliest stream).
    """

    index: int
    codec: str
    profile: str | None
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    frame_pts: tuple[int, ...]
    avg_rate: Fraction
    is_vfr: bool
    colour: colour.ColourTags
    matrix: int
    range: int
    rotation: int
    sample_aspect_ratio: Fraction
    start_time: Fraction
    start_offset: Fraction
    language: str | None = None
    title: str | None = None
    dispositions: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)
    hdr: HdrMetadata | None = None  # HDR10 mastering display / light levels, if any
    #: "pts" (the frames' own presentation times) or "dts" (AVI: a frame's time is its slot,
    #: see the module docstring); ``dts_delay`` is how far the decoder's output lags the
    #: packets' dts then, in ``time_base`` units.
    timing: str = "pts"
    dts_delay: int = 0
    #: The stream's field order tag (progressive, tt, bb, tb, bt or unknown) and whether its
    #: first frame says it is interlaced; for MPEG-2, the pictures scanned and how many repeat
    #: a field (soft telecine) or are coded as fields / not progressive.
    field_order: str = "unknown"
    interlaced_frame: bool = False
    pictures: int = 0
    repeat_fields: int = 0
    interlaced_pictures: int = 0
    #: Times that do not increase, in index order: frames sharing the time of the frame
    #: before them, and frames timed before it (see :meth:`output_pts`).
    duplicate_times: int = 0
    steps_back: int = 0
    #: (pts, width, height) of the first keyframe and of each keyframe whose size differs
    #: from the one before (empty when the size never changes).
    size_changes: tuple[tuple[int, int, int], ...] = ()
    #: The stored picture has an alpha channel (or WebM says it has one).
    has_alpha: bool = False

    @property
    def frame_count(self) -> int:
        """Exact number of frames (``len(frame_pts)``)."""
        return len(self.frame_pts)

    def frame_time(self, n: int) -> Fraction:
        """Presentation time of frame ``n`` in seconds."""
        return self.frame_pts[n] * self.time_base

    def output_pts(self, step: int = 1) -> tuple[int, ...]:
        """Every frame's time for the output, strictly increasing: a frame whose time does not
        increase (a duplicate, a step back) moves forward to ``step`` (``time_base`` units:
        the finest step the output container keeps) after the frame before it."""
        out: list[int] = []
        for p in self.frame_pts:
            out.append(p if not out or p >= out[-1] + step else out[-1] + step)
        return tuple(out)

    def moved_frames(self, step: int = 1) -> tuple[int, int]:
        """(frames :meth:`output_pts` moves, the largest move in ``time_base`` units)."""
        moves = [o - p for o, p in zip(self.output_pts(step), self.frame_pts, strict=True)]
        return sum(1 for m in moves if m), max(moves, default=0)

    @property
    def display_aspect(self) -> Fraction:
        """Width over height as the picture is shown: the stored size times the sample aspect
        ratio (the container's where it has one, as ffmpeg prefers it)."""
        return Fraction(self.width * self.sample_aspect_ratio, self.height)

    def output_sar(self, width: int, height: int) -> Fraction:
        """The sample aspect ratio that shows a ``width`` x ``height`` picture of this video at
        the same display aspect (1 for square pixels scaled evenly)."""
        return (self.display_aspect * height / width).limit_denominator(65535)

    @property
    def duration(self) -> Fraction:
        """First frame's start to last frame's end (the last frame lasts the median delta)."""
        pts = self.frame_pts
        if len(pts) < 2:
            return 1 / self.avg_rate if self.avg_rate else Fraction(0)
        deltas = sorted(b - a for a, b in itertools.pairwise(pts))
        return (pts[-1] - pts[0] + deltas[len(deltas) // 2]) * self.time_base


@dataclass(frozen=True)
class MediaInfo:
    """Everything the pipeline needs to know about a source file."""

    path: Path
    format: str
    title: str | None
    duration: Fraction | None
    start_time: Fraction
    video: VideoInfo
    streams: tuple[StreamInfo, ...]
    chapters: tuple[ChapterInfo, ...]
    has_other_video: bool
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def origin(self) -> Fraction:
        """Where the file starts, as time options (``--start``, ffmpeg's ``-ss``) count: the
        container's start time - rounded to microseconds, so never after the first video
        frame's exact time."""
        return min(self.start_time, self.video.frame_time(0))

    @property
    def cover_art(self) -> tuple[StreamInfo, ...]:
        """Attached pictures (shown as video streams by libavformat)."""
        return tuple(s for s in self.streams if s.is_cover_art)

    @property
    def copied_streams(self) -> tuple[StreamInfo, ...]:
        """The streams ``remux`` carries over (all but MP4 chapter tracks)."""
        return tuple(s for s in self.streams if not s.is_chapter_track)


# --- helpers -----------------------------------------------------------------------------------


def _meta(md: Mapping[str, str], key: str) -> str | None:
    """Case-insensitive metadata lookup (mkv writes ``title``, some muxers ``TITLE``)."""
    for k, v in md.items():
        if k.lower() == key:
            return v or None
    return None


def _dispositions(stream: av.stream.Stream) -> tuple[str, ...]:
    flags = int(stream.disposition)
    return tuple(d.name for d in Disposition if d.name and flags & int(d))


def _codec_name(stream: av.stream.Stream) -> str | None:
    """The codec's canonical (codec id) name: ``ass``/``subrip``, not the decoder's
    ``ssa``/``srt``. None where PyAV exposes no codec (attachments)."""
    try:
        cc = stream.codec_context
        if cc is not None:
            return cc.codec.canonical_name
    except Exception:  # attachment and data streams may have no codec context
        pass
    try:
        return stream.codec.canonical_name
    except Exception:
        pass
    if stream.type != "data":
        return None
    name = getattr(stream, "name", None)  # data streams: the codec id's name, if it has one
    return name if isinstance(name, str) and name not in ("", "none") else None


#: libavcodec's AVFieldOrder values.
_FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


def _field_order(value: Any) -> str:
    """The stream's field order tag as a name (``unknown`` when it has none)."""
    if isinstance(value, str):
        return value.lower() or "unknown"
    try:
        return _FIELD_ORDERS.get(int(value), "unknown")
    except (TypeError, ValueError):
        return "unknown"


def _has_alpha(pix_fmt: str) -> bool:
    try:
        return any(c.is_alpha for c in av.VideoFormat(pix_fmt).components)
    except Exception:
        return False


def _is_cover(stream: av.stream.Stream) -> bool:
    return stream.type == "video" and bool(int(stream.disposition) & int(Disposition.attached_pic))


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """``av.open`` for reading, with every failure turned into a one-line ``InputError``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a video file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: not readable (permission denied)")
    try:
        return av.open(str(p), "r")
    except av.error.InvalidDataError:
        raise InputError(f"{p}: not a media file (or a format ffmpeg cannot read)") from None
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{p}: cannot open: {exc}") from None


def main_video_stream(
    container: av.container.InputContainer, path: str | os.PathLike[str]
) -> av.video.stream.VideoStream:
    """The main video stream: the first video stream that is not cover art. Raises
    ``InputError`` for text read as video and for files without a video stream."""
    fmt = container.format.name
    videos = [s for s in container.streams.video if not _is_cover(s)]
    if fmt in _NOT_VIDEO_FORMATS or any(_codec_name(s) in _NOT_VIDEO_CODECS for s in videos):
        raise InputError(f"{path}: not a video file (ffmpeg reads it as text art)")
    if not videos:
        others = sorted({s.type for s in container.streams})
        what = f" (it has: {', '.join(others)})" if others else ""
        covers = any(_is_cover(s) for s in container.streams)
        raise InputError(f"{path}: no video stream{' besides cover art' if covers else ''}{what}")
    return videos[0]


def _stream_by_index(
    container: av.container.InputContainer, index: int
) -> av.video.stream.VideoStream:
    """The stream with stream index ``index`` (``container.streams[i]`` is not by index)."""
    for s in container.streams:
        if s.index == index:
            return s  # type: ignore[return-value]
    raise InputError(f"{container.name}: stream {index} not found")


def timing_of(container: av.container.InputContainer) -> str:
    """``dts`` for containers that time frames by their slot (AVI), else ``pts``."""
    names = set((container.format.name or "").split(","))
    return "dts" if names & DTS_TIMED_FORMATS else "pts"


@dataclass(frozen=True)
class PacketScan:
    """What one pass over the main video's packets found (see :func:`scan_packets`)."""

    pts: list[int]
    duplicates: int = 0  # frames sharing the time of the frame before them
    steps_back: int = 0  # frames timed before the frame before them (decode order = display)
    size_changes: tuple[tuple[int, int, int], ...] = ()  # (pts, width, height) of keyframes
    pictures: int = 0  # MPEG-2 pictures seen (for the two counts below)
    repeat_fields: int = 0  # MPEG-2 pictures with repeat_first_field (soft telecine)
    interlaced_pictures: int = 0  # MPEG-2 pictures coded as fields, or not progressive_frame


# Keyframes decoded to find size changes: each whose parameter sets differ from the last
# decoded one's (H.264/HEVC SPS, an MPEG-1/2 sequence header), and otherwise one per this many
# seconds of the stream.
_SIZE_CHECK_SECONDS = 1


def _nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B packet (start codes 00 00 01 / 00 00 00 01)."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0:
        nxt = data.find(b"\x00\x00\x01", at + 3)
        yield data[at + 3 : nxt if nxt >= 0 else len(data)].rstrip(b"\x00")
        at = nxt


def parameter_signature(codec: str | None, data: bytes) -> bytes | None:
    """What decides a keyframe's picture size, as bytes: its sequence parameter set (H.264,
    HEVC in Annex B form, as transport streams carry them) or sequence header (MPEG-1/2);
    None where the packet holds none (sizes then come from sampling)."""
    if codec in ("mpeg2video", "mpeg1video"):
        at = data.find(b"\x00\x00\x01\xb3")
        return data[at + 4 : at + 8] if at >= 0 else None
    if codec == "h264":
        sps = [n for n in _nal_units(data) if n and n[0] & 0x1F == 7]
    elif codec == "hevc":
        sps = [n for n in _nal_units(data) if n and (n[0] >> 1) & 0x3F == 33]
    else:
        return None
    return sps[0] if sps else None


def _mpeg2_flags(data: bytes) -> tuple[int, int, int]:
    """(pictures, repeat_first_field, not progressive) in one MPEG-2 packet: from each picture
    coding extension (start code 00 00 01 B5, extension id 8)."""
    pictures = rff = interlaced = 0
    at = data.find(b"\x00\x00\x01\xb5")
    while at >= 0 and at + 9 <= len(data):
        ext = data[at + 4 : at + 9]
        if ext[0] >> 4 == 8:  # picture coding extension
            bits = int.from_bytes(ext, "big")  # 40 bits; the flags follow id and f_codes
            structure = (bits >> 16) & 3  # after 4 + 16 + 2 bits
            repeat = (bits >> 9) & 1
            progressive = (bits >> 7) & 1
            pictures += 1
            rff += repeat
            interlaced += structure != 3 or not progressive
        at = data.find(b"\x00\x00\x01\xb5", at + 4)
    return pictures, rff, interlaced


def scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> PacketScan:
    """One pass over the stream's packets (no decoding but a keyframe now and then): every
    frame's time in index order (see the module docstring: sorted, except where the decoder
    does not reorder - then in packet order, which is display order), the anomalies in those
    times, size changes at keyframes, and MPEG-2's field flags."""
    by_dts = timing_of(container) == "dts"
    reorders = bool(getattr(stream.codec_context, "has_b_frames", True)) and not by_dts
    mpeg2 = _codec_name(stream) == "mpeg2video"
    tb = stream.time_base or Fraction(1, _AV_TIME_BASE)
    gap = int(_SIZE_CHECK_SECONDS / tb) if tb else 0
    codec = _codec_name(stream)
    pts: list[int] = []
    missing = pictures = rff = interlaced = 0
    sizes: list[tuple[int, int, int]] = []
    checked: int | None = None
    signature: bytes | None = None
    try:
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:
                continue
            stamp = packet.dts if by_dts else packet.pts
            if stamp is None:
                missing += 1
                continue
            pts.append(stamp)
            if mpeg2:
                a, b, c = _mpeg2_flags(bytes(packet))
                pictures, rff, interlaced = pictures + a, rff + b, interlaced + c
            if packet.is_keyframe:
                data = bytes(packet)
                new = parameter_signature(codec, data)
                changed = new is not None and new != signature
                if checked is None or changed or abs(stamp - checked) >= gap:
                    checked, signature = stamp, new if new is not None else signature
                    sizes.extend(_sizes(packet.decode))
    except av.FFmpegError as exc:
        # A damaged tail: keep what was read before it (the decoder will report the rest).
        log.warning("%s: demuxing stopped early: %s", path, exc)
    finally:  # the keyframes still in the decoder (frame threads hand them out late)
        with contextlib.suppress(Exception):
            sizes.extend(_sizes(lambda: stream.codec_context.decode(None)))
        drain(stream)
    if missing:
        raise InputError(
            f"{path}: {missing} video packets have no timestamp (a raw or damaged stream); "
            "frames cannot be counted exactly - remux it first, e.g. "
            "ffmpeg -fflags +genpts -i IN -c copy OUT.mkv"
        )
    if reorders:
        pts.sort()
    pairs = list(itertools.pairwise(pts))
    sizes.sort()
    changes = [sz for k, sz in enumerate(sizes) if k and sz[1:] != sizes[k - 1][1:]]
    return PacketScan(
        pts,
        duplicates=sum(1 for a, b in pairs if b == a),
        steps_back=sum(1 for a, b in pairs if b < a),
        size_changes=tuple(sizes[:1] + changes) if changes else (),
        pictures=pictures,
        repeat_fields=rff,
        interlaced_pictures=interlaced,
    )


def _sizes(decode: Any) -> list[tuple[int, int, int]]:
    """(pts, width, height) of the pictures ``decode()`` hands out (keyframes fed alone)."""
    try:
        return [(f.pts if f.pts is not None else 0, f.width, f.height) for f in decode()]
    except av.FFmpegError:
        return []


def index_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> list[int]:
    """Every frame's time in index order (:func:`scan_packets`)."""
    return scan_packets(container, stream, path).pts


def drain(stream: Any) -> None:
    """Let a stream decoder's frame threads finish and park before the decoder is freed.

    libav passes an error message to PyAV's log callback, which takes the GIL, even while
    logging is off; PyAV frees a codec context holding the GIL and waiting for its threads.
    A frame thread that logs an error just then would wait for the GIL forever.
    ``flush_buffers`` waits for the threads with the GIL released (they log and finish).
    """
    with contextlib.suppress(Exception):
        stream.codec_context.flush_buffers()


def _first_frame(path: Path, index: int) -> av.VideoFrame | None:
    """The first frame that decodes, or None if none does."""
    with open_input(path) as container:
        stream = _stream_by_index(container, index)
        stream.thread_type = "AUTO"
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    continue
                for frame in frames:
                    return frame  # type: ignore[return-value]
        finally:
            drain(stream)
    return None


def _iter_chapters(container: av.container.InputContainer) -> Iterator[ChapterInfo]:
    for ch in container.chapters():
        tb = ch.get("time_base") or Fraction(1, _AV_TIME_BASE)
        md = dict(ch.get("metadata") or {})
        yield ChapterInfo(
            start=ch["start"] * tb, end=ch["end"] * tb, title=_meta(md, "title"), metadata=md
        )


def _stream_info(s: Any) -> StreamInfo:
    md = dict(s.metadata)
    filename = _meta(md, "filename")
    mimetype = _meta(md, "mimetype")
    if s.type == "attachment" and mimetype is None:
        try:
            mimetype = s.mimetype
        except Exception:
            mimetype = None
    disp = int(s.disposition)
    discarded = int(s.discard) == int(Discard.all)
    timecode = _meta(md, "timecode") if s.type == "data" else None
    return StreamInfo(
        index=s.index,
        type=s.type,
        codec=_codec_name(s) or ("tmcd" if timecode else None),
        language=s.language or _meta(md, "language"),
        title=_meta(md, "title") or _meta(md, "name"),  # MP4 stores track titles as "name"
        default=bool(disp & int(Disposition.default)),
        forced=bool(disp & int(Disposition.forced)),
        dispositions=_dispositions(s),
        is_cover_art=_is_cover(s),
        is_chapter_track=s.type == "data" and discarded,
        filename=filename,
        mimetype=mimetype,
        metadata=md,
        timecode=timecode,
    )


# --- probe --------------------------------------------------------------------------------------


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Probe ``path``. Raises ``InputError`` (one line) for a missing file, a file that is not
    media, a file with no video stream (cover art does not count) or with no decodable frame."""
    path = Path(path)
    with open_input(path) as container:
        fmt = container.format.name
        main = main_video_stream(container, path)
        index = main.index
        time_base = main.time_base or Fraction(1, _AV_TIME_BASE)
        main.thread_type = "AUTO"  # for the keyframes scan_packets decodes
        scan = scan_packets(container, main, path)
        frame_pts = scan.pts
        if not frame_pts:
            raise InputError(f"{path}: the video stream has no frames")
        timing = timing_of(container)
        field_order = _field_order(getattr(main.codec_context, "field_order", 0))

        cc = main.codec_context
        container_start = Fraction(container.start_time or 0, _AV_TIME_BASE)
        duration = Fraction(container.duration, _AV_TIME_BASE) if container.duration else None
        md = dict(container.metadata)
        vmd = dict(main.metadata)
        others = tuple(_stream_info(s) for s in container.streams if s.index != index)
        chapters = tuple(_iter_chapters(container))
        rate = main.average_rate or main.guessed_rate
        codec = _codec_name(main) or cc.name
        profile = main.profile
        sar = main.sample_aspect_ratio or cc.sample_aspect_ratio or Fraction(1)
        cc_colour = (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range)
        rotate_tag = _meta(vmd, "rotate")
        v_lang = main.language or _meta(vmd, "language")
        v_disp = _dispositions(main)

    frame = _first_frame(path, index)
    if frame is None:
        raise InputError(f"{path}: none of its {len(frame_pts)} video frames can be decoded")
    # By slot: how much later than its packet's dts the decoder hands a frame out.
    dts_delay = frame.dts - frame_pts[0] if timing == "dts" and frame.dts is not None else 0

    # Tags: the decoded frame's (from the bitstream) where set, else the container's.
    def pick(frame_value: int, cc_value: int, unspecified: int) -> int:
        return int(frame_value) if int(frame_value) != unspecified else int(cc_value)

    tags = colour.ColourTags(
        primaries=pick(frame.color_primaries, cc_colour[0], colour.PRIMARIES_UNSPECIFIED),
        transfer=pick(frame.color_trc, cc_colour[1], colour.TRANSFER_UNSPECIFIED),
        matrix=pick(frame.colorspace, cc_colour[2], colour.MATRIX_UNSPECIFIED),
        range=pick(frame.color_range, cc_colour[3], colour.RANGE_UNSPECIFIED),
    )
    pix_fmt = frame.format.name
    width, height = frame.width, frame.height
    rotation = int(frame.rotation)
    if rotation == 0 and rotate_tag:
        with contextlib.suppress(ValueError):
            rotation = -int(float(rotate_tag))  # legacy tag is clockwise

    deltas = [b - a for a, b in itertools.pairwise(frame_pts)]
    is_vfr = bool(deltas) and max(deltas) - min(deltas) > 1
    if not rate and len(frame_pts) > 1:
        rate = Fraction(len(frame_pts) - 1) / ((frame_pts[-1] - frame_pts[0]) * time_base)
    video_start = frame_pts[0] * time_base

    video = VideoInfo(
        index=index,
        codec=codec,
        profile=profile,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=colour.bit_depth(pix_fmt),
        time_base=time_base,
        frame_pts=tuple(frame_pts),
        avg_rate=Fraction(rate) if rate else Fraction(0),
        is_vfr=is_vfr,
        colour=tags,
        matrix=colour.effective_matrix(tags.matrix, width, height, pix_fmt),
        range=colour.effective_range(tags.range, pix_fmt),
        rotation=rotation,
        sample_aspect_ratio=Fraction(sar),
        start_time=video_start,
        start_offset=video_start - container_start,
        language=v_lang,
        title=_meta(vmd, "title") or _meta(vmd, "name"),
        dispositions=v_disp,
        metadata=vmd,
        hdr=read_hdr(frame),
        timing=timing,
        dts_delay=max(0, dts_delay),
        field_order=field_order,
        interlaced_frame=bool(getattr(frame, "interlaced_frame", False)),
        pictures=scan.pictures,
        repeat_fields=scan.repeat_fields,
        interlaced_pictures=scan.interlaced_pictures,
        duplicate_times=scan.duplicates,
        steps_back=scan.steps_back,
        size_changes=scan.size_changes,
        has_alpha=_has_alpha(pix_fmt) or _meta(vmd, "alpha_mode") == "1",
    )
    return MediaInfo(
        path=path,
        format=fmt,
        title=_meta(md, "title"),
        duration=duration,
        start_time=container_start,
        video=video,
        streams=others,
        chapters=chapters,
        has_other_video=any(s.type == "video" and not s.is_cover_art for s in others),
        metadata=md,
    )
