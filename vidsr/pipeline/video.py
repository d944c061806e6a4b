"""Upscaling video frames: decode thread -> bounded queue -> batched inference -> encoder
process.

``upscale_segment`` does one frame range [start, end) into a video-only file: the unit that
chunked jobs (:mod:`vidsr.jobs.chunk`) run; the whole-file plan and the job driver are in
:mod:`vidsr.run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidsr.errors import GpuMemoryError, PipelineError, opt
from vidsr.pipeline.encoder_process import EncoderProcess
from vidsr.pipeline.infer import Upscaler
from vidsr.pipeline.lanes import Lanes, threads_per_lane
from vidsr.pipeline.stages import ProducerThread, StageStats
from vidsr.settings import Settings

if TYPE_CHECKING:
    from vidsr.media.colour import PlanarLayout

_TILES_ON_OOM = (512, 256, 128)


@dataclass
class SegmentResult:
    """What one segment run did: frames written and each stage's figures."""

    frames: int
    stages: dict[str, StageStats]
    damaged: list[str] = field(default_factory=list)
    encoder_cpu_seconds: float = 0.0


def auto_batch_size(upscaler: Upscaler, height: int, width: int) -> int:
    """Batch size from free device memory on CUDA (a few frames at most); 1 on the CPU,
    where batching does not help (measured: batch 4 vs 1 changes little)."""
    if upscaler.device.type != "cuda":
        return 1
    free, _total = torch.cuda.mem_get_info(upscaler.device)
    # Activation memory of the widest layer, at the working precision, with headroom.
    per_frame = height * width * 64 * 2 * 4 + (height * width * upscaler.net_scale**2 * 3 * 4)
    return int(max(1, min(16, (free * 0.5) // max(per_frame, 1))))


_OOM_TEXTS = ("CUDA out of memory", "CUDA error: out of memory", "STATUS_ALLOC_FAILED")


def is_out_of_memory(exc: BaseException) -> bool:
    """The out-of-memory rule: CUDA out of memory in any of its spellings (allocation failures
    that cuDNN/cuBLAS report as a plain ``RuntimeError`` included), or vidsr's own
    :class:`~vidsr.errors.GpuMemoryError`, anywhere in ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, torch.cuda.OutOfMemoryError | GpuMemoryError):
            return True
        if isinstance(seen, RuntimeError) and any(t in str(seen) for t in _OOM_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _release_cuda_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ResilientInfer:
    """Runs the upscaler on a batch; on CUDA out-of-memory retries smaller batches, then a
    single frame in tiles smaller than any already in use, before failing. Never drops or
    duplicates a frame. Retries happen outside the ``except`` block: the exception's frames
    hold the failed attempt's tensors until it is handled."""

    def __init__(self, upscaler: Upscaler) -> None:
        self.upscaler = upscaler
        self.max_batch: int | None = None
        self.tiled: Upscaler | None = None

    def __call__(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            parts = torch.split(x, self.max_batch)
            return torch.cat([self(p, size) for p in parts])
        try:
            return (self.tiled or self.upscaler)(x, size)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            if not is_out_of_memory(exc):
                raise
        _release_cuda_memory()
        if x.shape[0] > 1:
            self.max_batch = max(1, x.shape[0] // 2)
            return self(x, size)
        return self._tiled_single(x, size)

    def _tiled_single(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        base = self.upscaler
        in_use = [t for t in (base.tile, self.tiled.tile if self.tiled else 0) if t]
        limit = min(in_use) if in_use else None
        tiles = [t for t in _TILES_ON_OOM if limit is None or t < limit]
        for tile in tiles:
            self.tiled = Upscaler(
                base.net,
                device=base.device,
                dtype=base.dtype,
                tile=tile,
                tile_pad=base.tile_pad,
            )
            try:
                return self.tiled(x, size)
            except RuntimeError as exc:
                if not is_out_of_memory(exc):
                    raise
            _release_cuda_memory()
        smallest = min([*tiles, *in_use]) if (tiles or in_use) else _TILES_ON_OOM[-1]
        raise GpuMemoryError(
            f"out of GPU memory even for one frame in {smallest}-pixel tiles; "
            f"use a smaller model or {opt('device', 'cpu')}"
        )


def _batches(frames: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class DeviceColour:
    """YUV<->RGB on the model's device: ``source`` is the decoded planes' layout (None: frames
    arrive as RGB), converted with ``matrix``/``colour_range``; ``output`` the encoder's
    layout (None: RGB goes to the encoder), converted with ``out_matrix``/``out_range``."""

    source: PlanarLayout | None
    matrix: int
    colour_range: int
    output: PlanarLayout | None
    out_matrix: int
    out_range: int


def plan_device_colour(
    info: Any, encoder_kwargs: dict[str, Any], device: torch.device, mode: str = "auto"
) -> DeviceColour | None:
    """Whether (and how) colour conversion runs on the device: ``auto`` on CUDA only (on the
    CPU the numpy path costs the same and is the reference), ``on`` wherever the formats are
    planar YUV, ``off`` never. None when neither side can."""
    from vidsr.media.colour import planar_layout
    from vidsr.media.encode import source_encoder_colour

    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    v = info.video
    source = planar_layout(v.pix_fmt)
    fmt, tags = source_encoder_colour(
        info,
        width=encoder_kwargs["width"],
        height=encoder_kwargs["height"],
        codec=encoder_kwargs.get("codec") or "libx264",
        pix_fmt=encoder_kwargs.get("pix_fmt"),
    )
    output = planar_layout(fmt)
    if source is None and output is None:
        return None
    return DeviceColour(source, v.matrix, v.range, output, tags.matrix, tags.range)


def use_hw_decode(mode: str, device: torch.device) -> bool:
    """Whether to ask for NVDEC: ``on``, or ``auto`` with the model on CUDA (it falls back to
    software where NVDEC does not open)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


class _Uploader:
    """Host arrays to ``device``; on CUDA through pinned staging buffers kept per name and
    reused while the shape holds (the copy of one batch is done before the next is staged:
    each batch ends with a device-to-host copy, which waits for the stream)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, host: np.ndarray) -> torch.Tensor:
        if host.dtype == np.uint16:  # torch has no uint16 arithmetic: the bits travel as int16
            host = host.view(np.int16)
        src = torch.from_numpy(host)
        if self.device.type == "cuda":
            buf = self._staging.get(name)
            if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
                buf = self._staging[name] = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
            buf.copy_(src)
            src = buf
        return src.to(self.device, non_blocking=True)


def upscale_segment(
    frames: Any,
    *,
    upscaler: Upscaler,
    settings: Settings,
    encoder_kwargs: dict[str, Any],
    out_shape: tuple[int, int, int],
    out_dtype: np.dtype,
    device_colour: DeviceColour | None = None,
    on_frames: Callable[[int], None] | None = None,
    times: Mapping[int, int] | None = None,
) -> SegmentResult:
    """Run decoded ``frames`` (an iterable of objects with ``.rgb`` (H, W, 3) uint8/uint16
    and ``.pts``) through the model into an encoder process writing ``encoder_kwargs``.

    ``settings`` are the run's, resolved for this segment: ``batch_size`` frames go through
    the model at a time, and ``lanes`` > 1 (CPU only) runs that many batches at once, each in
    its own thread with a share of torch's threads (:mod:`vidsr.pipeline.lanes`); frames still
    reach the encoder in order. ``device_colour`` converts on the model's device: frames then
    carry ``.planes`` (when its ``source`` is set) and/or the encoder receives YUV planes (when
    its ``output`` is). ``on_frames(n)`` is called after each batch is handed to the encoder.
    ``times`` maps a frame's index to its output time (default: its own ``pts``).
    """
    from vidsr.media.colour import planes_to_rgb, rgb_to_planes, samples_to_int

    dc = device_colour
    decode = StageStats("decode")
    infer_stats = StageStats("infer")
    encode = StageStats("encode")
    infer = ResilientInfer(upscaler)
    device = upscaler.device
    batch_size = max(1, settings.batch_size)
    lanes = max(1, settings.lanes) if device.type == "cpu" else 1
    peak = float(np.iinfo(out_dtype).max)
    producer = ProducerThread(frames, maxsize=max(4, 2 * batch_size * lanes), stats=decode)
    if dc is not None and dc.output is not None:
        # The ring holds packed Y, U, V planes in the encoder's own format.
        oh, ow = out_shape[:2]
        slot_shape: tuple[int, ...] = (dc.output.frame_elements(oh, ow),)
        slot_dtype = dc.output.dtype
        encoder_kwargs = {**encoder_kwargs, "planar": True}
    else:
        slot_shape, slot_dtype = out_shape, out_dtype
    encoder = EncoderProcess(
        encoder_kwargs, shape=slot_shape, dtype=slot_dtype, slots=max(4, 2 * batch_size)
    )
    upload = _Uploader(device)
    written = 0
    encoder_cpu = 0.0
    lane_seconds: list[float] = []  # appended from the lanes (list.append is atomic)

    def model_input(batch: list[Any]) -> torch.Tensor:
        if dc is not None and dc.source is not None:
            y, u, v = (upload(k, np.stack([getattr(f.planes, k) for f in batch])) for k in "yuv")
            return planes_to_rgb(
                y,
                u,
                v,
                dc.source,
                matrix=dc.matrix,
                colour_range=dc.colour_range,
                cosited=batch[0].planes.cosited,
            )
        host = np.stack([f.rgb for f in batch])  # (N, H, W, 3)
        x = samples_to_int(upload("rgb", host), 16 if host.dtype == np.uint16 else 8)
        return x.permute(0, 3, 1, 2).to(torch.float32).div_(float(np.iinfo(host.dtype).max))

    def run_batch(batch: list[Any]) -> np.ndarray:
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = infer(model_input(batch), out_shape[:2])
            if dc is not None and dc.output is not None:
                packed = (
                    rgb_to_planes(y, dc.output, matrix=dc.out_matrix, colour_range=dc.out_range)
                    .cpu()
                    .numpy()
                )
                out = packed if packed.dtype == np.uint8 else packed.view(np.uint16)
            else:
                q = y.mul_(peak).round_().to(torch.int32 if peak > 255 else torch.uint8)
                out = q.permute(0, 2, 3, 1).cpu().numpy().astype(out_dtype, copy=False)
        lane_seconds.append(time.perf_counter() - t0)
        return out

    pool = Lanes(run_batch, lanes, threads_per_lane(lanes)) if lanes > 1 else None
    try:
        batches = _batches(iter(producer), batch_size)
        done = pool.map(batches) if pool else ((b, run_batch(b)) for b in batches)
        for batch, out in done:
            infer_stats.frames += len(batch)
            for frame, pixels in zip(batch, out, strict=True):
                slot, view = encoder.acquire()
                view[...] = pixels
                encoder.submit(slot, times.get(frame.index, frame.pts) if times else frame.pts)
            written += len(batch)
            if on_frames:
                on_frames(len(batch))
        stats = encoder.finish()
        encode.frames, encode.busy_seconds = stats.frames, stats.busy_seconds
        encoder_cpu = stats.cpu_seconds
        if stats.frames != written:
            raise PipelineError(f"encoder wrote {stats.frames} frames, expected {written}")
    finally:
        if pool is not None:
            pool.close()
        producer.stop()
        encoder.close()
    # Busy time of the stage: the lanes' summed working time shared over the lanes.
    infer_stats.busy_seconds = sum(lane_seconds) / lanes
    damaged = list(getattr(frames, "errors", []) or [])
    return SegmentResult(
        written, {"decode": decode, "infer": infer_stats, "encode": encode}, damaged, encoder_cpu
    )
