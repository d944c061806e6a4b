"""One chunk's work, the same wherever it runs (in-process, a worker process, a Ray task):
decode frames [start, end) -> model -> encode a video-only segment, renamed into place only
when complete. Everything a chunk needs to know about the run is in its task's (resolved)
settings; the upscaler is only the network on its device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vidsr.errors import PipelineError
from vidsr.files import testing_pause
from vidsr.jobs.plan import Chunk
from vidsr.settings import Settings


@dataclass(frozen=True)
class ChunkTask:
    """Everything a worker needs for one chunk (picklable). ``settings``: the run's resolved
    settings (no ``auto`` left that the driver could decide); ``out_pts``: the output time of
    each of the chunk's frames (strictly increasing; the source's, or moved forward where the
    source's do not increase). ``chunk`` counts output frames; ``span`` says which source
    frames make them (:func:`~vidsr.media.repair.chunk_span`; None: the same frames) and
    ``filters`` what runs on them first (field repair, crop); ``sar`` and ``rate`` are the
    output's sample aspect ratio and frame rate (None: the source's); ``time_base`` that of
    ``out_pts`` (the source's, or finer where field repair needs it; None: the source's)."""

    source: Path
    segment: Path
    chunk: Chunk
    info: Any  # MediaInfo
    out_width: int
    out_height: int
    settings: Settings
    out_pts: tuple[int, ...] = ()
    span: Any = None  # media.repair.SourceSpan
    filters: Any = None  # media.repair.FrameFilters
    sar: Fraction | None = None
    rate: Fraction | None = None
    time_base: Fraction | None = None  # of out_pts (None: the source's)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the frames the model sees."""
        crop = self.filters.crop if self.filters is not None else None
        if crop is not None:
            return crop[3], crop[2]
        return self.info.video.height, self.info.video.width


def open_frames(task: ChunkTask, *, planes: bool, hwaccel: bool, hw_device: int) -> Any:
    """The chunk's frames, decoded (and filtered where the task says) in order, and the
    output time of each by its ``index``."""
    from vidsr.media.decode import decode_frames
    from vidsr.media.repair import FilteredFrames

    span, c = task.span, task.chunk
    common = {"info": task.info, "ignore_errors": task.settings.ignore_errors, "planes": planes}
    hw = {"hwaccel": hwaccel, "hw_device": hw_device}
    if task.filters is not None and task.filters.active:
        frames = FilteredFrames(
            task.source, span, task.filters, c.start, task.out_pts, time_base=task.time_base,
            **common, **hw,
        )  # fmt: skip
        return frames, dict(zip(range(c.start, c.end), task.out_pts, strict=False))
    start, end = (span.start, span.end) if span is not None else (c.start, c.end)
    frames = decode_frames(task.source, start, end, **common, **hw)
    return frames, dict(zip(range(start, end), task.out_pts, strict=False))


def encoder_kwargs(settings: Settings, device: Any = None) -> dict[str, Any]:
    """The video encoder's keyword arguments (``VideoEncoder``) from the run's settings. An
    NVENC encoder beside a model on CUDA ``device`` encodes on that GPU (its ``gpu`` option,
    an index among the GPUs this process sees) unless ``--encoder-opt gpu=`` says otherwise."""
    from vidsr.media.encode import NVENC_MAX_SIDE

    options = dict(settings.encoder_opt)
    if settings.codec in NVENC_MAX_SIDE and getattr(device, "type", None) == "cuda":
        options.setdefault("gpu", str(device.index or 0))
    return {
        "codec": settings.codec,
        "crf": settings.crf,
        "preset": settings.encoder_preset,
        "pix_fmt": settings.pix_fmt,
        "options": options,
    }


def network_key(settings: Settings, device: str | None = None) -> tuple[Any, ...]:
    """What decides the upscaler :func:`upscaler_for` builds (two runs with the same key can
    share one)."""
    return (
        settings.model,
        device or settings.device,
        settings.precision,
        settings.tile,
        settings.tile_pad,
        settings.denoise_strength,
        settings.compile,
        settings.runtime,
    )


def upscaler_for(settings: Settings, device: str | None = None, progress: Any = None) -> Any:
    """The ``Upscaler`` the run's settings describe, on ``device`` (default: the settings'
    own device)."""
    from vidsr.pipeline.infer import build_upscaler

    return build_upscaler(
        settings.model,
        device=device or settings.device,
        precision=settings.precision,
        tile=settings.tile,
        tile_pad=settings.tile_pad,
        denoise_strength=settings.denoise_strength,
        compile=settings.compile,
        progress=progress,
        runtime=settings.runtime,  # auto: torch, or an ONNX model's own runtime
    )


@dataclass(frozen=True)
class ChunkResult:
    index: int
    frames: int
    stages: dict[str, tuple[int, float]]  # name -> (frames, busy seconds)
    damaged: tuple[str, ...] = ()
    worker: str = ""
    precision: str = ""
    batch_size: int = 0
    lanes: int = 1
    encoder_cpu_seconds: float = 0.0  # CPU-seconds the encoder process used for this chunk
    encode_workers: int = 1  # chunks that were being encoded at once (set by the executor)
    nvdec: bool = False  # whether NVDEC really decoded it (not asked, or fell back: False)
    tiles: int = 0  # held-frame reuse: tiles looked at, and reused
    reused: int = 0


def _local_slots(settings: Settings) -> int:
    """How many local worker processes run chunks at once (each with its encoder's ring in
    this machine's /dev/shm)."""
    if settings.backend != "local" or not settings.devices:
        return max(1, settings.workers_per_device)
    n = 0
    for d in settings.devices:
        if d.strip().lower() == "all":
            import torch

            n += torch.cuda.device_count() if torch.cuda.is_available() else 1
        else:
            n += 1
    return max(1, n) * max(1, settings.workers_per_device)


def run_chunk(
    task: ChunkTask,
    upscaler: Any,
    on_frames: Callable[[int], None] | None = None,
    *,
    sharers: int = 1,
) -> ChunkResult:
    """Upscale one chunk into ``task.segment`` (atomically). ``upscaler``: an ``Upscaler``;
    ``sharers``: how many chunks this process runs on its device at once (the automatic
    batch size leaves them their share of its memory)."""
    from vidsr.pipeline.lanes import auto_lanes
    from vidsr.pipeline.memory import batch_size
    from vidsr.pipeline.video import plan_device_colour, upscale_segment, use_hw_decode

    v = task.info.video
    settings = task.settings
    task.segment.parent.mkdir(parents=True, exist_ok=True)
    device = upscaler.device
    kwargs = {
        "path": task.segment,
        "info": task.info,
        "width": task.out_width,
        "height": task.out_height,
        **encoder_kwargs(settings, device),
    }
    if task.sar is not None:
        kwargs["sar"] = task.sar
    if task.rate:
        kwargs["rate"] = task.rate
    if task.time_base is not None:
        kwargs["time_base"] = task.time_base
    colour = plan_device_colour(task.info, kwargs, device, settings.device_colour)
    frames, times = open_frames(
        task,
        planes=colour is not None and colour.source is not None,
        hwaccel=use_hw_decode(settings.hw_decode, device),
        hw_device=device.index or 0,
    )
    # Slots on one GPU (--workers-per-device) each size their batches from the same memory.
    share = sharers * (settings.workers_per_device if device.type == "cuda" else 1)
    in_h, in_w = task.input_size
    bs = settings.batch_size or batch_size(upscaler, in_h, in_w, sharers=share)
    lanes = settings.lanes or auto_lanes(upscaler.device, in_h, in_w, scale=upscaler.net_scale)
    if getattr(upscaler, "runtime", "torch") == "openvino":
        lanes = 1  # OpenVINO runs one frame on every thread itself (docs/BENCHMARKS.md)
    started = False

    def frames_done(n: int) -> None:
        nonlocal started
        if on_frames:
            on_frames(n)
        if not started:
            started = True
            testing_pause("chunk")  # a test kills the process here, mid-chunk

    out_dtype = np.dtype(np.uint16 if v.bit_depth > 8 else np.uint8)
    held, offset = held_frames(task, upscaler)
    seg = upscale_segment(
        frames,
        shm_sharers=sharers * _local_slots(settings),
        upscaler=upscaler,
        settings=settings.replace(batch_size=bs, lanes=lanes),  # auto: this segment's
        encoder_kwargs=kwargs,
        out_shape=(task.out_height, task.out_width, 3),
        out_dtype=out_dtype,
        device_colour=colour,
        on_frames=frames_done,
        times=times,
        held=held,
        index_offset=offset,
    )
    if not settings.ignore_errors and seg.frames != task.chunk.frames:
        raise PipelineError(
            f"chunk {task.chunk.index}: decoded {seg.frames} frames, expected {task.chunk.frames}"
        )
    damaged = tuple(
        f"frame {d.index}: {d.message}"
        if getattr(d, "index", None) is not None
        else str(getattr(d, "message", d))
        for d in seg.damaged
    )
    stages = {k: (s.frames, s.busy_seconds) for k, s in seg.stages.items()}
    return ChunkResult(
        task.chunk.index,
        seg.frames,
        stages,
        damaged,
        precision=upscaler.precision_name,
        batch_size=bs,
        lanes=lanes if upscaler.device.type == "cpu" else 1,
        encoder_cpu_seconds=seg.encoder_cpu_seconds,
        nvdec=bool(getattr(frames, "hw_used", False)),
        tiles=seg.tiles,
        reused=seg.reused,
    )


def held_frames(task: ChunkTask, upscaler: Any) -> tuple[Any, int]:
    """The chunk's held-frame cache (None with ``--reuse off``), and how far its frames'
    indices run ahead of their output indices (decoded source frames are indexed from the
    file's first frame, filtered ones by output frame)."""
    from vidsr.pipeline.reuse import HeldFrames, receptive_margin, threshold_for

    threshold = threshold_for(task.settings.reuse)
    if threshold is None:
        return None, 0
    net = upscaler.net
    held = HeldFrames(threshold, receptive_margin(net.module, net.arch), upscaler.net_scale)
    filtered = task.filters is not None and task.filters.active
    offset = 0 if filtered or task.span is None else task.span.start - task.chunk.start
    return held, offset
