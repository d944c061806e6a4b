"""Frame-exact decoding of frame ranges ``[start, end)`` into RGB arrays.

Frame ``N`` is the frame whose pts is ``N``-th in the packet index (``probe``/``index_frames``).
A range is decoded by seeking backwards to the keyframe at or before ``pts[start]``, skipping
frames with a smaller pts, and stopping after ``pts[end - 1]``. When a seek lands too late
(nothing decodes, or the first frame is already past ``pts[start]``) the seek is retried 1, 2, 4,
8 and 16 s earlier, then from the start of the file (MPEG-TS needs this; FINDINGS, Media).

Damage: a frame of the range that the decoder never delivers (its packet is corrupt, or its
keyframe is) raises ``InputError`` naming that frame, or with ``ignore_errors=True`` is skipped and
recorded in ``FrameDecoder.errors``. So does damage the decoder only logs while it still hands
the frame out (an FFV1 slice whose CRC does not match, a concealed MPEG slice). libav's error
messages are captured (PyAV's log capture) while any decoder runs; frame-threaded decoding
logs from worker threads, so a decoder that saw errors logged during its range decodes the
range once more, single-threaded, with this thread's messages captured packet by packet, to
name the damaged frames exactly: refused by default (once the range is decoded), or with
``ignore_errors`` delivered as decoded and recorded. Decoder errors that raise but lose no
frame are recorded and logged only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.logging
import numpy as np

from vidsr.errors import InputError, UsageError, opt
from vidsr.media.colour import ToPlanes, ToRGB, YUVPlanes, planar_layout
from vidsr.media.probe import (
    MediaInfo,
    drain,
    index_packets,
    main_video_stream,
    open_input,
    probe,
)

log = logging.getLogger(__name__)
# libav's messages reach Python logging (logger "libav.*") while a capture is active in some
# thread; without a handler of their own they would be printed by logging's last resort.
logging.getLogger("libav").addHandler(logging.NullHandler())


class _LibavErrors:
    """One process-wide capture of libav's error messages, shared by every decoder running:
    started with the first, stopped with the last (libav's log level is raised to errors only
    meanwhile; PyAV leaves logging off otherwise). A decoder reads what came since its own
    mark; messages logged in a thread that captures its own go there instead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._capture: Any = None
        self.logs: list[tuple[int, str, str]] = []

    def enter(self) -> int:
        with self._lock:
            if self._users == 0:
                av.logging.set_level(av.logging.ERROR)
                self.logs = []
                self._capture = av.logging.Capture(local=False)
                self.logs = self._capture.__enter__()
            self._users += 1
            return len(self.logs)

    def errors_since(self, mark: int) -> list[str]:
        return [text for level, _name, text in self.logs[mark:] if level <= av.logging.ERROR]

    def exit(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._capture.__exit__(None, None, None)
                av.logging.set_level(None)


_LIBAV_ERRORS = _LibavErrors()

# Files whose NVDEC decoding fell back to software (checked at the first frame): their next
# chunks are decoded in software from the start, with frame threads.
_NVDEC_FELL_BACK: set[str] = set()

# Seconds to seek before pts[start] on successive tries; None = decode from the file's start.
_BACKOFF: tuple[float | None, ...] = (0, 1, 2, 4, 8, 16, None)


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame.

    ``rgb`` is ``(H, W, 3)`` RGB, full range, C-contiguous: ``uint8`` (0..255) for 8-bit
    sources and ``uint16`` (0..65535) for sources with more bits, converted with the stream's
    effective matrix and range (:mod:`vidsr.media.colour`). With ``planes=True`` decoding,
    ``rgb`` is None and ``planes`` holds the frame's YUV planes unconverted (for conversion
    on the device). ``pts`` is in the stream's time base; ``time`` is ``pts * time_base`` in
    seconds.
    """

    index: int
    pts: int
    time: Fraction
    rgb: np.ndarray | None
    planes: YUVPlanes | None = None
    frame: Any = None  # the decoded av.VideoFrame itself, unconverted (``convert=False``)


@dataclass(frozen=True)
class DecodeDamage:
    """A recorded decoding problem. ``index``/``pts`` name the lost frame (``lost=True``) or,
    for a decoder error that lost no frame, the packet being decoded when it happened (may be
    None when it cannot be attributed)."""

    index: int | None
    pts: int | None
    message: str
    lost: bool


def index_frames(path: str | os.PathLike[str]) -> list[int]:
    """Every frame's pts of the main video stream, sorted, from demuxing packets only.

    Raises ``InputError`` like :func:`vidsr.media.probe.probe` for unusable files."""
    path = Path(path)
    with open_input(path) as container:
        stream = main_video_stream(container, path)
        return index_packets(container, stream, path)


def _ffmpeg_message(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class FrameDecoder(Iterator[DecodedFrame]):
    """Decode frames ``[start, end)`` (``end=None``: to the last frame) of ``path``'s main video.

    Yields :class:`DecodedFrame` in index order, each exactly once. ``info`` (from
    :func:`~vidsr.media.probe.probe`) saves probing again. ``threads`` enables FFmpeg's frame and
    slice threading (``thread_type="AUTO"``). A frame that cannot be decoded raises
    ``InputError`` naming it; with ``ignore_errors`` it is skipped and recorded in the returned
    iterator's ``errors`` list. A bad range raises ``UsageError``. ``convert=False`` hands
    out the decoded ``av.VideoFrame`` itself (``frame``) for filters. ``planes`` yields the YUV
    planes unconverted (planar YUV sources only, see
    :func:`~vidsr.media.colour.planar_layout`) instead of RGB. ``hwaccel`` decodes with NVDEC
    on GPU ``hw_device`` where it opens, with one decoder thread (falling back to software
    where it does not open, or where PyAV falls back for the codec: ``hw_used`` says, after
    the first frame, whether NVDEC really decoded).

    ``errors`` lists the damage met so far (only non-empty with ``ignore_errors=True``, or for
    decoder errors that lost no frame). Use as a context manager, or call ``close()``, to free the
    decoder early.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        start: int = 0,
        end: int | None = None,
        *,
        info: MediaInfo | None = None,
        threads: bool = True,
        ignore_errors: bool = False,
        planes: bool = False,
        hwaccel: bool = False,
        hw_device: int = 0,
        convert: bool = True,
        _verifying: bool = False,
    ) -> None:
        self.path = Path(path)
        # A verifying decoder re-decodes a range in this thread to name logged damage.
        self._verifying = _verifying
        self.logged_damage: list[DecodeDamage] = []
        self.hwaccel = hwaccel and str(self.path) not in _NVDEC_FELL_BACK
        self.hw_device = hw_device
        self.hw_used = False  # whether NVDEC really decoded (asked, opened, and not fallen back)
        self._reformatter: Any = None
        self.info = info if info is not None else probe(self.path)
        video = self.info.video
        count = video.frame_count
        end = count if end is None else end
        if not (0 <= start <= end <= count):
            raise UsageError(f"frame range [{start}, {end}) is outside the video's {count} frames")
        self.start, self.end = start, end
        self.threads = threads
        self.ignore_errors = ignore_errors
        self.errors: list[DecodeDamage] = []
        self._pts = video.frame_pts
        # pts -> the indices of the frames with that time, ascending (a time may repeat:
        # duplicates; and the index need not be sorted: a step back where display = decode)
        self._positions: dict[int, list[int]] = {}
        for i, p in enumerate(video.frame_pts):
            self._positions.setdefault(p, []).append(i)
        self._to_planes: ToPlanes | None = None
        self._raw = not convert
        if planes:
            layout = planar_layout(video.pix_fmt)
            if layout is None:
                raise UsageError(f"{video.pix_fmt} is not planar YUV: decode it to RGB instead")
            self._to_planes = ToPlanes(layout)
        self._convert = ToRGB(
            matrix=video.matrix, colour_range=video.range, high_bit_depth=video.bit_depth > 8
        )
        self._last_error: tuple[int | None, str] | None = None
        self._logged: dict[int, str] = {}  # packet time -> what libav logged decoding it
        self._log: list[tuple[int, str, str]] = []
        self._gen = self._generate()

    # -- iterator protocol ------------------------------------------------------------------

    def __iter__(self) -> FrameDecoder:
        return self

    def __next__(self) -> DecodedFrame:
        return next(self._gen)

    def close(self) -> None:
        """Stop decoding and release the file."""
        self._gen.close()

    def __enter__(self) -> FrameDecoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _generate(self) -> Iterator[DecodedFrame]:
        if self.start == self.end:
            return
        first = min(self._pts[self.start : self.end])  # a step back may come later
        tb = self.info.video.time_base
        attempts: list[int | None] = []
        if self.start == 0:
            attempts = [None]
        else:
            for back in _BACKOFF:
                attempts.append(None if back is None else first - int(Fraction(back) / tb))
        for n, seek_ts in enumerate(attempts):
            final = n == len(attempts) - 1
            done = yield from self._attempt(seek_ts, final=final)
            if done:
                return
            log.debug(
                "%s: seek to %s landed late for frame %d; retrying earlier",
                self.path,
                seek_ts,
                self.start,
            )

    def _raw_frames(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames in output order; decoder/demuxer errors are remembered, not raised."""
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:  # damaged container: flush what the decoder holds
                self._note_error(None, f"demuxing failed: {_ffmpeg_message(exc)}")
                try:
                    yield from stream.decode(None)
                except av.FFmpegError as exc2:
                    self._note_error(None, _ffmpeg_message(exc2))
                return
            seen = len(self._log)
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                self._note_error(packet.pts, _ffmpeg_message(exc))
                continue
            finally:
                if self._verifying:
                    self._note_logged(packet, seen)
            yield from frames  # type: ignore[misc]

    def _match(self, pts: int, expect: int) -> int | None:
        """The index of a decoded frame timed ``pts``: the first frame with that time not yet
        delivered (frames sharing a time are taken in order), or None."""
        positions = self._positions.get(pts)
        if not positions:
            log.debug("%s: skipping unexpected frame pts %d", self.path, pts)
            return None
        return next((i for i in positions if i >= expect), None)

    def _time_of(self, frame: av.VideoFrame) -> int | None:
        """The frame's time in the index's terms: its pts, or - where the container times
        frames by slot (AVI) - the dts it came out with, less the decoder's delay."""
        video = self.info.video
        if video.timing == "dts":
            return None if frame.dts is None else frame.dts - video.dts_delay
        return frame.pts if frame.pts is not None else frame.dts

    def _note_logged(self, packet: av.Packet, seen: int) -> None:
        """Remember what libav logged (errors) while decoding ``packet``, by its time."""
        new = [text for level, _name, text in self._log[seen:] if level <= av.logging.ERROR]
        if not new:
            return
        stamp = packet.dts if self.info.video.timing == "dts" else packet.pts
        if stamp is None:
            return
        message = " ".join(" ".join(new).split())
        self._logged[stamp] = (
            f"{self._logged[stamp]} {message}" if stamp in self._logged else message
        )

    def _logged_damage(self, i: int, pts: int) -> None:
        """(Verifying) frame ``i`` decoded while libav logged an error in this thread."""
        message = self._logged.pop(self._pts[i], None) or self._logged.pop(pts, None)
        if message is not None:
            damage = DecodeDamage(index=i, pts=self._pts[i], message=message, lost=False)
            self.logged_damage.append(damage)

    def _note_error(self, pts: int | None, message: str) -> None:
        self._last_error = (pts, message)
        log.debug("%s: decoder error at pts %s: %s", self.path, pts, message)

    def _attempt(self, seek_ts: int | None, *, final: bool) -> Iterator[DecodedFrame]:
        """Decode once from ``seek_ts`` (None: from the start). Returns False - before yielding
        anything - when the seek landed too late and an earlier one should be tried."""
        self._last_error = None
        self._logged.clear()
        errors_before = len(self.errors)
        mark = _LIBAV_ERRORS.enter()
        local = av.logging.Capture(local=True) if self._verifying else contextlib.nullcontext([])
        try:
            with local as self._log:
                done = yield from self._decode_range(seek_ts, final, errors_before)
            if done and not self._verifying and _LIBAV_ERRORS.errors_since(mark):
                self._check_logged_damage()
            return done
        finally:
            _LIBAV_ERRORS.exit()

    def _check_logged_damage(self) -> None:
        """libav logged errors while this range decoded: decode it again, single-threaded,
        to see which frames (if any) were damaged; refuse, or record them."""
        again = FrameDecoder(
            self.path, self.start, self.end, info=self.info, threads=False,
            ignore_errors=True, _verifying=True,
        )  # fmt: skip
        with again:
            for _ in again:
                pass
        damage = again.logged_damage
        if not damage:
            return
        if not self.ignore_errors:
            first = damage[0]
            time = float(first.pts * self.info.video.time_base) if first.pts is not None else 0
            more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
            raise InputError(
                f"{self.path}: frame {first.index} ({time:.3f} s) is damaged{more}: "
                f"{first.message}; the file is damaged ({opt('ignore_errors', True)} upscales "
                "such frames as decoded)"
            )
        self.errors.extend(damage)
        log.warning("%s: %d damaged frame(s) kept as decoded", self.path, len(damage))

    def _decode_range(
        self, seek_ts: int | None, final: bool, errors_before: int
    ) -> Iterator[DecodedFrame]:
        start, end = self.start, self.end
        video = self.info.video
        with self._open() as container:
            stream = main_video_stream(container, self.path)
            # NVDEC: one decoder thread - each frame thread holds decoder surfaces, and many
            # threads exceed NVDEC's surface pool ("No decoder surfaces left").
            hw = self.hwaccel
            stream.thread_type = "AUTO" if self.threads and not hw else "NONE"
            try:
                if seek_ts is not None:
                    try:
                        container.seek(seek_ts, stream=stream, backward=True)
                    except av.FFmpegError as exc:
                        log.debug("%s: seek to %d failed: %s", self.path, seek_ts, exc)
                        if not final:
                            return False
                expect = start
                yielded = False
                checked = False
                for frame in self._raw_frames(container, stream):
                    if hw and not checked:
                        frame, checked = self._check_nvdec(stream, frame), True
                    elif self.hw_used and frame.format.name != video.pix_fmt:
                        frame = self._relayout(frame)
                    pts = self._time_of(frame)
                    if pts is None:  # no timestamp at all: assume decode order is the index order
                        pts = self._pts[expect]
                    i = self._match(pts, expect)
                    if i is None:  # before the range, a repeat, or not a frame of the index
                        continue
                    if i >= end:
                        break
                    if i > expect:
                        if not yielded and not final:
                            return False
                        self._lost(expect, i)
                    if frame.width != video.width or frame.height != video.height:
                        raise InputError(
                            f"{self.path}: frame {i} is {frame.width}x{frame.height}, not "
                            f"{video.width}x{video.height}; size changes mid-stream are not supported"
                        )
                    if self._verifying:
                        self._logged_damage(i, pts)
                    raw = frame if self._raw else None
                    if raw is not None:
                        rgb, planes = None, None
                    elif self._to_planes is not None:
                        rgb, planes = None, self._to_planes(frame)
                    else:
                        rgb, planes = self._convert(frame), None
                    yield DecodedFrame(
                        index=i, pts=pts, time=pts * video.time_base, rgb=rgb, planes=planes,
                        frame=raw,
                    )  # fmt: skip
                    yielded = True
                    expect = i + 1
                    if expect >= end:
                        break
                if expect < end:
                    if not yielded and not final:
                        del self.errors[errors_before:]
                        return False
                    self._lost(expect, end)
                if self._last_error is not None and len(self.errors) == errors_before:
                    pts, message = self._last_error
                    self.errors.append(
                        DecodeDamage(
                            index=self._positions.get(pts, [None])[0] if pts is not None else None,
                            pts=pts,
                            message=message,
                            lost=False,
                        )
                    )
                    log.warning("%s: decoder error (no frame lost): %s", self.path, message)
            finally:
                drain(stream)
        return True

    def _check_nvdec(self, stream: Any, frame: av.VideoFrame) -> av.VideoFrame:
        """After the first frame: whether NVDEC really decodes (PyAV falls back to software
        silently where the GPU lacks the codec or profile: the context then has the software
        pixel format, not ``cuda``). NVDEC hands frames out as nv12/p010: re-laid as the
        source's own format (swscale, lossless), so every later stage sees what software
        decoding gives. A file that fell back decodes in software (threaded) from then on."""
        fmt = getattr(stream.codec_context.format, "name", None)
        self.hw_used = fmt == "cuda"
        if not self.hw_used:
            _NVDEC_FELL_BACK.add(str(self.path))
            log.info("%s: NVDEC fell back to software (%s)", self.path, fmt)
            return frame
        return self._relayout(frame)

    def _relayout(self, frame: av.VideoFrame) -> av.VideoFrame:
        """An NVDEC frame (nv12, p010 ...) in the source's own pixel format (one swscale
        context for the decoder's life)."""
        if frame.format.name == self.info.video.pix_fmt:
            return frame
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        return self._reformatter.reformat(frame, format=self.info.video.pix_fmt)

    def _open(self) -> av.container.InputContainer:
        """The input, decoded with NVDEC when ``hwaccel`` asked for it and it opens here (the
        frames come back to system memory, e.g. as nv12, and are converted as any frame);
        otherwise, or once it failed, in software."""
        container = open_input(self.path)  # the same one-line errors for a bad input
        if not self.hwaccel:
            return container
        from av.codec.hwaccel import HWAccel

        try:
            hw = HWAccel(
                device_type="cuda", device=str(self.hw_device), allow_software_fallback=True
            )
            accelerated = av.open(str(self.path), "r", hwaccel=hw)
        except Exception as exc:  # no NVIDIA device or driver: decode in software
            log.info("%s: NVDEC not usable (%s); decoding in software", self.path, exc)
            self.hwaccel = False
            return container
        container.close()
        return accelerated

    def _lost(self, a: int, b: int) -> None:
        """Frames ``[a, b)`` were never delivered."""
        reason = self._last_error[1] if self._last_error else "the decoder produced no picture"
        if not self.ignore_errors:
            time = float(self._pts[a] * self.info.video.time_base)
            more = f" (and {b - a - 1} more)" if b - a > 1 else ""
            raise InputError(
                f"{self.path}: cannot decode frame {a} (pts {self._pts[a]}, {time:.3f} s){more}: "
                f"{reason}; the file is damaged ({opt('ignore_errors', True)} skips damaged "
                "frames)"
            )
        for i in range(a, b):
            self.errors.append(DecodeDamage(index=i, pts=self._pts[i], message=reason, lost=True))
        log.warning(
            "%s: skipped %d undecodable frame(s) from frame %d: %s", self.path, b - a, a, reason
        )


#: ``decode_frames(path, start=0, end=None, *, info, threads, ignore_errors, planes, hwaccel)``:
#: the :class:`FrameDecoder` over frames ``[start, end)``; see its docstring.
decode_frames = FrameDecoder
