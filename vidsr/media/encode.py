"""Encode RGB frames into a video-only file with PyAV, every frame at its source pts.

A raw-frame pipe into ffmpeg throws timestamps away (FINDINGS, Media); here each frame is encoded
with the pts it had in the source, in the source's time base, so VFR stays VFR and a late video
start stays late. The file holds only the video stream; :func:`vidsr.media.remux.remux` adds
every other stream of the source afterwards. It is written to a temporary file beside the target
and renamed on :meth:`VideoEncoder.close` (nothing partial ever has the final name).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from vidsr.errors import PipelineError, UsageError, opt
from vidsr.files import atomic_output
from vidsr.media import colour
from vidsr.media.colour import ColourTags, FromRGB
from vidsr.media.hdr import HdrMetadata, encoder_options
from vidsr.media.remux import MP4_SUFFIXES

if TYPE_CHECKING:
    from vidsr.media.probe import MediaInfo

log = logging.getLogger(__name__)

#: Default encoder options per codec (quality first; override with ``crf``/``preset``/``options``).
#: ffv1 is lossless. nvenc entries apply where an NVIDIA encoder is usable (:func:`encoder_available`).
CODEC_DEFAULTS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "medium"},
    "libx265": {"crf": "20", "preset": "medium", "x265-params": "log-level=error"},
    "libsvtav1": {"crf": "28", "preset": "8"},
    "ffv1": {"level": "3", "slicecrc": "1"},
    "h264_nvenc": {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "19", "b": "0"},
    "hevc_nvenc": {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "21", "b": "0"},
    "av1_nvenc": {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "28", "b": "0"},
}
# Codecs whose "quality" knob is not called crf.
_CRF_OPTION = {"h264_nvenc": "cq", "hevc_nvenc": "cq", "av1_nvenc": "cq"}
# Encoders that refuse odd sizes with chroma subsampling.
_EVEN_ONLY = {"libx264", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}


@lru_cache(maxsize=32)
def encoder_pix_fmts(codec: str) -> tuple[str, ...]:
    """Pixel formats encoder ``codec`` accepts (empty if unknown). Raises ``UsageError`` for an
    encoder this FFmpeg build does not have."""
    try:
        c = av.codec.Codec(codec, "w")
    except Exception:
        raise UsageError(f"unknown video encoder {codec!r}") from None
    if c.type != "video":
        raise UsageError(f"{codec!r} is not a video encoder")
    return tuple(f.name for f in (c.video_formats or ()))


#: NVENC's largest frame side per codec (NVIDIA Video Codec SDK: H.264 4096x4096 on every
#: generation; HEVC and AV1 8192x8192). H.264 NVENC takes 10-bit input only from Blackwell on.
NVENC_MAX_SIDE = {"h264_nvenc": 4096, "hevc_nvenc": 8192, "av1_nvenc": 8192}

#: ``problem(codec, width, height, pix_fmt)``: why that encoder does not open so, or None.
EncoderProbe = Callable[[str, int, int, str], "str | None"]


@lru_cache(maxsize=64)
def encoder_problem(
    codec: str,
    width: int = 256,
    height: int = 256,
    pix_fmt: str = "yuv420p",
    gpu: int | None = None,
) -> str | None:
    """Why ``codec`` cannot encode ``width`` x ``height`` ``pix_fmt`` frames here (one line),
    or None when it opens so: the encoder is really opened at that size and format (NVENC
    refuses sizes and bit depths its GPU lacks only then; it needs an NVIDIA GPU and driver),
    an NVENC encoder on CUDA device ``gpu`` (the run's; None: any)."""
    if codec not in av.codecs_available:
        return f"this FFmpeg has no {codec} encoder"
    try:
        ctx = av.CodecContext.create(codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base = Fraction(1, 25)
        if gpu is not None and codec in NVENC_MAX_SIDE:
            ctx.options = {"gpu": str(gpu)}
        ctx.open()
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        log.debug("encoder %s %dx%d %s not usable: %s", codec, width, height, pix_fmt, text)
        return text[:200]
    return None


def encoder_available(
    codec: str, width: int = 256, height: int = 256, pix_fmt: str = "yuv420p"
) -> bool:
    """Whether ``codec`` opens here for ``width`` x ``height`` ``pix_fmt`` frames."""
    return encoder_problem(codec, width, height, pix_fmt) is None


def auto_codec(
    device_type: str,
    *,
    width: int,
    height: int,
    source_pix_fmt: str = "yuv420p",
    bit_depth: int = 8,
    nvenc: bool = True,
    pix_fmt: str | None = None,
    gpu: int | None = None,
    problem: EncoderProbe | None = None,
) -> str:
    """The ``--codec auto`` rule for an output of ``width`` x ``height`` from a source of
    ``source_pix_fmt``/``bit_depth`` (or in ``pix_fmt`` when the user chose one): on CUDA
    (and with ``nvenc``: where NVENC may be probed here, on CUDA device ``gpu``), h264_nvenc
    for 8-bit output up to 4096 pixels a side, hevc_nvenc above that or for more bits, each
    only where it takes that pixel format and opens at that size with it; otherwise libx264,
    or libx265 for what H.264 NVENC could not take (large or deep). On the CPU: libx264.
    ``problem`` replaces :func:`encoder_problem` (tests: a fake GPU's capabilities)."""
    if device_type != "cuda":
        return "libx264"
    if pix_fmt:
        bit_depth = colour.bit_depth(pix_fmt)
    big = max(width, height) > NVENC_MAX_SIDE["h264_nvenc"]
    deep = bit_depth > 8
    hw = "hevc_nvenc" if big or deep else "h264_nvenc"
    if nvenc and (not pix_fmt or pix_fmt in encoder_pix_fmts(hw)):
        fmt = pix_fmt or choose_pix_fmt(hw, source_pix_fmt, bit_depth)
        why = _probe(problem, gpu)(hw, width, height, fmt)
        if why is None:
            return hw
        log.info("--codec auto: %s does not open for %dx%d %s (%s)", hw, width, height, fmt, why)
    return "libx265" if big or deep else "libx264"


def _probe(problem: EncoderProbe | None, gpu: int | None) -> EncoderProbe:
    """``problem``, else :func:`encoder_problem` on CUDA device ``gpu``."""
    return problem or functools.partial(encoder_problem, gpu=gpu)


_NVENC_LABEL = {"h264_nvenc": "H.264", "hevc_nvenc": "HEVC", "av1_nvenc": "AV1"}


def nvenc_refusal(
    codec: str,
    width: int,
    height: int,
    pix_fmt: str,
    problem: EncoderProbe | None = None,
    gpu: int | None = None,
) -> str | None:
    """Why an explicit NVENC ``codec`` cannot encode this output here, with the ways forward
    (one line), or None when it can (or ``codec`` is not NVENC). The size limit is NVIDIA's
    and is checked first; then the encoder is opened at this size and format."""
    if codec not in NVENC_MAX_SIDE:
        return None
    probe = _probe(problem, gpu)
    side = NVENC_MAX_SIDE[codec]
    label = _NVENC_LABEL[codec]
    if max(width, height) > side:
        why = f"{label} NVENC is limited to {side}x{side}"
        ways = "hevc_nvenc (to 8192x8192) or libx265" if side < 8192 else "libx265"
    else:
        error = probe(codec, width, height, pix_fmt)
        if error is None:
            return None
        deep = colour.bit_depth(pix_fmt) > 8
        if deep and probe(codec, width, height, "yuv420p") is None:
            why = f"{label} NVENC takes no {colour.bit_depth(pix_fmt)}-bit input on this GPU"
            ways = f"hevc_nvenc, or {opt('pix_fmt', 'yuv420p')} for 8 bits"
            if codec == "h264_nvenc":
                why += " (10-bit H.264 needs a Blackwell GPU)"
        else:
            why = (
                f"it does not open ({error}): NVENC needs an NVIDIA GPU that has it (A100 and "
                "H100 have none) and its driver"
            )
            ways = "libx264 or libx265 (software)"
    return (
        f"{codec} cannot encode {width}x{height} {pix_fmt} here: {why}; choose "
        f"{opt('codec', 'auto')} (by size and bit depth) or {ways}"
    )


def resolve_codec(
    codec: str,
    device_type: str,
    *,
    width: int = 1920,
    height: int = 1080,
    source_pix_fmt: str = "yuv420p",
    bit_depth: int = 8,
    nvenc: bool = True,
) -> str:
    """``codec``, except ``auto``: :func:`auto_codec` for this output."""
    if codec != "auto":
        return codec
    return auto_codec(
        device_type,
        width=width,
        height=height,
        source_pix_fmt=source_pix_fmt,
        bit_depth=bit_depth,
        nvenc=nvenc,
    )


def choose_pix_fmt(codec: str, source_pix_fmt: str, source_bit_depth: int) -> str:
    """The output pixel format: the source's own if the encoder takes it (so 4:2:2/4:4:4 and
    bit depth survive; ``yuvj*`` maps to ``yuv*``), else 10-bit 4:2:0 for >8-bit sources where
    possible, else ``yuv420p``."""
    supported = encoder_pix_fmts(codec)
    src = source_pix_fmt
    if src.startswith("yuvj"):
        src = src.replace("yuvj", "yuv", 1)
    if colour.is_rgb_format(src):
        src = "yuv444p" if source_bit_depth <= 8 else "yuv444p10le"
    candidates = [src]
    if source_bit_depth > 8:
        candidates += ["yuv420p10le", "p010le"]
    candidates += ["yuv420p", "nv12"]
    for fmt in candidates:
        if not supported or fmt in supported:
            return fmt
    return supported[0]


def stream_colour(pix_fmt: str, tags: ColourTags, width: int, height: int) -> ColourTags:
    """The colour an encoder of ``pix_fmt`` writes and converts with, given the wanted
    ``tags``: RGB formats need no matrix; YUV ones use the tags' matrix and range where
    usable, else the fallbacks of :mod:`vidsr.media.colour`."""
    if colour.is_rgb_format(pix_fmt):
        matrix, colour_range = colour.MATRIX_RGB, colour.RANGE_FULL
    else:
        matrix = colour.effective_matrix(tags.matrix, width, height, pix_fmt)
        colour_range = colour.effective_range(tags.range, pix_fmt)
    return ColourTags(tags.primaries, tags.transfer, matrix, colour_range)


def source_encoder_colour(
    info: MediaInfo, *, width: int, height: int, codec: str, pix_fmt: str | None = None
) -> tuple[str, ColourTags]:
    """(pixel format, colour) of ``VideoEncoder.from_source(info, ...)`` with these settings,
    without opening an encoder: what a caller converting on its own must match."""
    v = info.video
    fmt = pix_fmt or choose_pix_fmt(codec, v.pix_fmt, v.bit_depth)
    tags = colour.output_tags(v.colour, width=v.width, height=v.height, pix_fmt=v.pix_fmt)
    return fmt, stream_colour(fmt, tags, width, height)


class VideoEncoder:
    """Write RGB frames to a video-only file at ``path`` (container from its suffix; mkv is the
    usual choice), each with its own pts.

    ``time_base`` is the unit of the pts passed to :meth:`write` (normally the source stream's
    time base). ``colour`` gives the tags written on the stream, and its matrix/range drive the
    RGB->YUV conversion - pass :func:`vidsr.media.colour.output_tags` of the source (as
    :meth:`from_source` does) so decode and encode use the same matrix. ``rotation`` (degrees
    counter-clockwise, as probed) is written as a display matrix; ``sar`` as the sample aspect
    ratio. ``rate`` is only a hint for rate control (timestamps come from the pts). ``crf``,
    ``preset`` and ``options`` override :data:`CODEC_DEFAULTS`. ``pix_fmt`` defaults to
    :func:`choose_pix_fmt` of ``source_pix_fmt``/``source_bit_depth``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        time_base: Fraction,
        codec: str = "libx264",
        crf: float | None = None,
        preset: str | None = None,
        pix_fmt: str | None = None,
        options: dict[str, str] | None = None,
        colour_tags: ColourTags | None = None,
        source_pix_fmt: str = "yuv420p",
        source_bit_depth: int = 8,
        rotation: int = 0,
        sar: Fraction | None = None,
        rate: Fraction | None = None,
        hdr: HdrMetadata | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base)
        self.codec = codec
        self.pix_fmt = pix_fmt or choose_pix_fmt(codec, source_pix_fmt, source_bit_depth)
        supported = encoder_pix_fmts(codec)
        if supported and self.pix_fmt not in supported:
            raise UsageError(
                f"{codec} cannot encode {self.pix_fmt} (it takes {', '.join(supported)})"
            )
        fmt = av.VideoFormat(self.pix_fmt, self.width, self.height)
        odd = self.width % 2 or self.height % 2
        subsampled = fmt.chroma_width() != self.width or fmt.chroma_height() != self.height
        if odd and subsampled and codec in _EVEN_ONLY:
            raise UsageError(
                f"{codec} cannot encode {self.pix_fmt} at the odd size {self.width}x{self.height}; "
                "use ffv1, a 4:4:4 pixel format, or an even size"
            )
        self.colour = stream_colour(
            self.pix_fmt, colour_tags or ColourTags(), self.width, self.height
        )
        matrix, colour_range = self.colour.matrix, self.colour.range
        self._convert = FromRGB(pix_fmt=self.pix_fmt, matrix=matrix, colour_range=colour_range)
        #: The planar YUV layout :meth:`write_planes` takes (None for other pixel formats).
        self.planar = colour.output_layout(self.pix_fmt)

        opts = dict(CODEC_DEFAULTS.get(codec, {}))
        if crf is not None:
            opts[_CRF_OPTION.get(codec, "crf")] = f"{crf:g}"
        if preset is not None:
            opts["preset"] = str(preset)
        opts.update(options or {})
        opts = encoder_options(codec, hdr, opts)  # HDR10 metadata where the encoder takes it
        self.options = opts

        self.frames_written = 0
        self._last_pts: int | None = None
        self._closed = False
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.path))
        try:
            container_options = {}
            if self.path.suffix.lower() in MP4_SUFFIXES:
                # MP4/MOV store a start offset (edit list) in the movie timescale, 1 ms by
                # default: a video starting at 1.48333 s would move by 0.33 ms. Use ours.
                container_options["movie_timescale"] = str(self.time_base.denominator)
            self._container = av.open(str(tmp), "w", options=container_options)
            stream = self._container.add_stream(codec, rate=rate or None, options=opts)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
            cc = stream.codec_context
            cc.time_base = self.time_base
            stream.time_base = self.time_base
            cc.color_primaries = self.colour.primaries
            cc.color_trc = self.colour.transfer
            cc.colorspace = self.colour.matrix
            cc.color_range = self.colour.range
            if sar:
                cc.sample_aspect_ratio = Fraction(sar)
            if rotation:
                stream.set_display_rotation(rotation)
            self._stream = stream
        except BaseException as exc:
            self._discard(exc)
            if isinstance(exc, av.FFmpegError | ValueError):
                raise PipelineError(f"cannot set up the {codec} encoder: {exc}") from exc
            raise

    @classmethod
    def from_source(
        cls,
        path: str | os.PathLike[str],
        info: MediaInfo,
        *,
        scale: int = 1,
        width: int | None = None,
        height: int | None = None,
        sar: Fraction | None = None,
        rate: Fraction | None = None,
        time_base: Fraction | None = None,
        **kwargs: Any,
    ) -> VideoEncoder:
        """An encoder for ``info``'s video upscaled by ``scale`` (or to ``width``x``height``):
        same time base, colour tags (:func:`~vidsr.media.colour.output_tags`), bit depth,
        rotation, sample aspect ratio and rate hint (``sar``/``rate``/``time_base`` where the
        run changes them: a crop, square pixels, field repair). ``kwargs`` go to the constructor."""
        v = info.video
        width, height = width or v.width * scale, height or v.height * scale
        kwargs.setdefault(
            "colour_tags",
            colour.output_tags(v.colour, width=v.width, height=v.height, pix_fmt=v.pix_fmt),
        )
        return cls(
            path,
            width=width,
            height=height,
            time_base=time_base or v.time_base,
            source_pix_fmt=v.pix_fmt,
            source_bit_depth=v.bit_depth,
            rotation=v.rotation,
            sar=sar if sar is not None else v.output_sar(width, height),
            hdr=v.hdr,
            rate=rate or v.avg_rate or None,
            **kwargs,
        )

    # -----------------------------------------------------------------------------------------

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one frame. ``rgb``: ``(height, width, 3)`` RGB, full range, ``uint8``,
        ``uint16`` (0..65535) or float (0..1). ``pts``: in ``time_base`` units, strictly
        increasing from call to call."""
        if rgb.shape[:2] != (self.height, self.width):
            raise PipelineError(
                f"frame is {rgb.shape[1]}x{rgb.shape[0]}, the encoder expects "
                f"{self.width}x{self.height}"
            )
        self._encode(self._convert(rgb), pts)

    def write_planes(self, packed: np.ndarray, pts: int) -> None:
        """Encode one frame given as planar YUV already in this encoder's pixel format, matrix
        and range (:attr:`planar` says which; :func:`vidsr.media.colour.rgb_to_planes` makes
        them): ``packed`` holds Y, then U, then V, ``planar.frame_elements`` samples (uint8,
        or uint16 for deeper formats)."""
        layout = self.planar
        if layout is None:
            raise PipelineError(f"{self.path}: {self.pix_fmt} is not planar YUV")
        h, w = self.height, self.width
        luma, chroma = layout.sizes(h, w)
        if packed.size != luma + 2 * chroma:
            raise PipelineError(
                f"{self.path}: {packed.size} samples, expected {luma + 2 * chroma} "
                f"for {w}x{h} {self.pix_fmt}"
            )
        frame = colour.frame_from_planes(packed, layout, w, h)
        frame.colorspace = self.colour.matrix
        frame.color_range = self.colour.range
        self._encode(frame, pts)

    def _encode(self, frame: av.VideoFrame, pts: int) -> None:
        if self._closed:
            raise PipelineError(f"{self.path}: write after close")
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            raise PipelineError(
                f"{self.path}: frame pts {pts} does not follow {self._last_pts} (pts must increase)"
            )
        frame.pts = pts
        frame.time_base = self.time_base
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as exc:
            raise PipelineError(
                f"{self.codec} failed to encode the frame at pts {pts}: {exc}"
            ) from exc
        self._last_pts = pts
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and move it to its final name."""
        if self._closed:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except BaseException as exc:
            self._discard(exc)
            if isinstance(exc, av.FFmpegError):
                raise PipelineError(f"{self.codec}: finishing {self.path} failed: {exc}") from exc
            raise
        self._closed = True
        self._stack.close()  # rename into place

    def abort(self) -> None:
        """Stop and delete the partial file."""
        if not self._closed:
            with contextlib.suppress(Exception):
                self._container.close()
            self._discard(PipelineError("aborted"))

    def _discard(self, exc: BaseException) -> None:
        self._closed = True
        self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
