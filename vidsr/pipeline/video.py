"""Upscaling video frames: decode thread -> bounded queue -> batched inference -> encoder
process.

``upscale_segment`` does one frame range [start, end) into a video-only file: the unit that
chunked jobs (:mod:`vidsr.jobs.chunk`) run; the whole-file plan and the job driver are in
:mod:`vidsr.run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidsr.errors import PipelineError
from vidsr.pipeline.encoder_process import EncoderProcess
from vidsr.pipeline.infer import Upscaler
from vidsr.pipeline.lanes import Lanes, threads_per_lane
from vidsr.pipeline.stages import ProducerThread, StageStats
from vidsr.settings import Settings

if TYPE_CHECKING:
    from vidsr.media.colour import PlanarLayout


@dataclass
class SegmentResult:
    """What one segment run did: frames written and each stage's figures."""

    frames: int
    stages: dict[str, StageStats]
    damaged: list[str] = field(default_factory=list)
    encoder_cpu_seconds: float = 0.0
    tiles: int = 0  # held-frame reuse: tiles looked at, and reused
    reused: int = 0


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
    from vidsr.media.colour import output_layout, planar_layout
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
    output = output_layout(fmt)
    if source is None and output is None:
        return None
    return DeviceColour(source, v.matrix, v.range, output, tags.matrix, tags.range)


def use_hw_decode(mode: str, device: torch.device) -> bool:
    """Whether to ask for NVDEC: ``on``, or ``auto`` with the model on CUDA (it falls back to
    software where NVDEC does not open)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


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
    shm_sharers: int = 1,
    held: Any = None,
    index_offset: int = 0,
) -> SegmentResult:
    """Run decoded ``frames`` (an iterable of objects with ``.rgb`` (H, W, 3) uint8/uint16
    and ``.pts``) through the model into an encoder process writing ``encoder_kwargs``.

    ``settings`` are the run's, resolved for this segment: ``batch_size`` frames go through
    the model at a time, and ``lanes`` > 1 (CPU only) runs that many batches at once, each in
    its own thread with a share of torch's threads (:mod:`vidsr.pipeline.lanes`); frames still
    reach the encoder in order. On CUDA the next batch is staged, uploaded and started while
    the last one's result comes back (:class:`~vidsr.pipeline.step.PinnedPool`). Each batch's
    whole device step is retried smaller when memory runs short
    (:class:`~vidsr.pipeline.step.ResilientStep`). ``device_colour`` converts on the model's
    device: frames then carry ``.planes`` (when its ``source`` is set) and/or the encoder
    receives YUV planes (when its ``output`` is). ``on_frames(n)`` is called after each batch
    is handed to the encoder. ``times`` maps a frame's index to its output time (default: its
    own ``pts``). ``shm_sharers``: how many segments this machine runs at once (their encoder
    rings share /dev/shm). ``held``: a :class:`~vidsr.pipeline.reuse.HeldFrames` cache
    (held-frame reuse; one lane), a frame's output index being its ``index`` less
    ``index_offset``.
    """
    from vidsr.pipeline.step import PinnedPool, ResilientStep

    dc = device_colour
    decode = StageStats("decode")
    infer_stats = StageStats("infer")
    encode = StageStats("encode")
    device = upscaler.device
    cuda = device.type == "cuda"
    batch_size = max(1, settings.batch_size)
    lanes = max(1, settings.lanes) if not cuda else 1
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
        encoder_kwargs,
        shape=slot_shape,
        dtype=slot_dtype,
        slots=max(4, 2 * batch_size),
        shm_sharers=shm_sharers,
    )
    pool = PinnedPool(device=device) if cuda else None
    device_step = _DeviceStep(device, dc, out_shape, out_dtype, pool, held)
    written = 0
    encoder_cpu = 0.0
    lane_seconds: list[float] = []  # appended from the lanes (list.append is atomic)
    steps: dict[tuple[int, int], ResilientStep] = {}

    def run_batch(batch: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        key = _frame_size(batch[0])
        step = steps.get(key)
        if step is None:
            step = steps[key] = ResilientStep(upscaler, device_step, key)
        parts = step(batch)
        lane_seconds.append(time.perf_counter() - t0)
        return parts

    lanes_pool = Lanes(run_batch, lanes, threads_per_lane(lanes)) if lanes > 1 else None
    try:
        source = iter(producer) if held is None else held.planned(iter(producer), index_offset)
        batches = _batches(source, batch_size)
        if lanes_pool:
            done: Iterator[tuple[list[Any], list[Any]]] = lanes_pool.map(batches)
        else:
            done = _one_ahead(batches, run_batch) if cuda else ((b, run_batch(b)) for b in batches)
        for batch, parts in done:
            infer_stats.frames += len(batch)
            frames_iter = iter(batch)
            for part in parts:
                if held is not None:  # the frames made in order from their parts and the cache
                    part = device_step.compose(held, part)
                pixels = part.array() if hasattr(part, "array") else part
                for row in pixels:
                    frame = next(frames_iter)
                    slot, view = encoder.acquire()
                    view[...] = row
                    encoder.submit(slot, times.get(frame.index, frame.pts) if times else frame.pts)
                if hasattr(part, "release"):
                    part.release()
            written += len(batch)
            if on_frames:
                on_frames(len(batch))
        stats = encoder.finish()
        encode.frames, encode.busy_seconds = stats.frames, stats.busy_seconds
        encoder_cpu = stats.cpu_seconds
        if stats.frames != written:
            raise PipelineError(f"encoder wrote {stats.frames} frames, expected {written}")
    finally:
        if lanes_pool is not None:
            lanes_pool.close()
        producer.stop()
        encoder.close()
    # Busy time of the stage: the lanes' summed working time shared over the lanes.
    infer_stats.busy_seconds = sum(lane_seconds) / lanes
    damaged = list(getattr(frames, "errors", []) or [])
    reuse = held.stats if held is not None else None
    return SegmentResult(
        written, {"decode": decode, "infer": infer_stats, "encode": encode}, damaged, encoder_cpu,
        tiles=reuse.tiles if reuse else 0, reused=reuse.reused if reuse else 0,
    )  # fmt: skip


def _take(part: Any) -> Any:
    """A step's result on the host: a pending download waited for, copied out and its
    buffer given back."""
    if part is None or not hasattr(part, "array"):
        return part
    out = part.array().copy()
    part.release()
    return out


def _frame_size(frame: Any) -> tuple[int, int]:
    if getattr(frame, "planes", None) is not None:
        return tuple(frame.planes.y.shape[:2])  # type: ignore[return-value]
    return tuple(frame.rgb.shape[:2])  # type: ignore[return-value]


def _one_ahead(
    batches: Iterator[list[Any]], run: Callable[[list[Any]], list[Any]]
) -> Iterator[tuple[list[Any], list[Any]]]:
    """``(batch, run(batch))`` in order, the next batch started before the last is handed on:
    on CUDA its upload and network queue behind the last one's download while the host waits
    for that download and copies it on."""
    last: tuple[list[Any], list[Any]] | None = None
    for batch in batches:
        started = (batch, run(batch))
        if last is not None:
            yield last
        last = started
    if last is not None:
        yield last


class _DeviceStep:
    """One batch's device work: upload (pinned staging on CUDA), colour to float RGB, the
    network, colour to the encoder's format (or quantised RGB), download. Returns the
    (N, ...) result as an array (CPU) or a :class:`~vidsr.pipeline.step.Pending` download
    (CUDA). Everything that allocates on the device happens here, inside the retry."""

    def __init__(
        self,
        device: torch.device,
        dc: DeviceColour | None,
        out_shape: tuple[int, int, int],
        out_dtype: np.dtype,
        pool: Any,
        held: Any = None,
    ) -> None:
        self.device, self.dc, self.out_shape, self.out_dtype = device, dc, out_shape, out_dtype
        self.pool = pool
        self.held = held
        self.peak = float(np.iinfo(out_dtype).max)

    def upload(self, host: np.ndarray) -> torch.Tensor:
        if host.dtype == np.uint16:  # torch has no uint16 arithmetic: the bits travel as int16
            host = host.view(np.int16)
        if self.pool is not None:
            return self.pool.upload(host, self.device)
        return torch.from_numpy(host)

    def model_input(self, batch: Sequence[Any]) -> torch.Tensor:
        from vidsr.media.colour import planes_to_rgb, samples_to_int

        dc = self.dc
        if dc is not None and dc.source is not None:
            y, u, v = (self.upload(np.stack([getattr(f.planes, k) for f in batch])) for k in "yuv")
            return planes_to_rgb(
                y, u, v, dc.source, matrix=dc.matrix, colour_range=dc.colour_range,
                cosited=batch[0].planes.cosited,
            )  # fmt: skip
        host = np.stack([f.rgb for f in batch])  # (N, H, W, 3)
        x = samples_to_int(self.upload(host), 16 if host.dtype == np.uint16 else 8)
        return x.permute(0, 3, 1, 2).to(torch.float32).div_(float(np.iinfo(host.dtype).max))

    def __call__(self, batch: Sequence[Any], net: Any) -> Any:
        # On the model's GPU whatever this thread's current device is (copies, kernels, events)
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with torch.inference_mode(), on_device:
            x = self.model_input(batch)
            if self.held is not None:  # only what changed: the frames are made in order
                return self._held_step(x, batch, net)
            return self.finish(net(x, self.out_shape[:2]))

    def _held_step(self, x: torch.Tensor, batch: Sequence[Any], net: Any) -> Any:
        """(Held-frame reuse) what changed, computed; the whole frames also finished here, in
        the lane, as without reuse."""
        from vidsr.pipeline.infer import resize_output

        parts = self.held.compute(x, batch, net)
        whole = [k for k, (kind, _) in enumerate(parts.items) if kind == "whole"]
        if whole:
            y = torch.stack([parts.items[k][1] for k in whole])
            parts.finished = (whole, self.finish(resize_output(y, self.out_shape[:2])))
        return parts

    def compose(self, held: Any, parts: Any) -> list[np.ndarray]:
        """(Held-frame reuse) a batch's frames, in order, from its computed ``parts`` and the
        cache (which they update): the whole frames as the lane finished them, the others
        composed and finished here."""
        from vidsr.pipeline.infer import resize_output

        whole, done = parts.finished or ([], None)
        ready = _take(done)
        rows: list[np.ndarray] = []
        on_device = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with torch.inference_mode(), on_device:
            for k, item in enumerate(parts.items):
                y = held.compose(item)
                if item[0] == "whole":
                    rows.append(ready[whole.index(k)].copy())
                else:
                    rows.append(_take(self.finish(resize_output(y[None], self.out_shape[:2])))[0])
        return rows

    def finish(self, y: torch.Tensor) -> Any:
        """The network's output (resized, in [0, 1]) to the encoder's format and the host."""
        from vidsr.media.colour import rgb_to_planes

        dc = self.dc
        if dc is not None and dc.output is not None:
            out = rgb_to_planes(y, dc.output, matrix=dc.out_matrix, colour_range=dc.out_range)
        else:
            q = y.mul(self.peak).round_()  # not in place: with reuse, y is the cache
            q = q.to(torch.uint8) if self.peak <= 255 else q.to(torch.int32).to(torch.int16)
            out = q.permute(0, 2, 3, 1)  # NHWC: dense, the network's output is channels_last
        return self.download(out)

    def download(self, out: torch.Tensor) -> Any:
        """The result to the host: a :class:`~vidsr.pipeline.step.Pending` copy on CUDA."""
        # uint16 samples travel as int16 bit patterns (torch has no uint16 arithmetic)
        view = np.dtype(np.uint16) if out.dtype == torch.int16 else None
        if self.pool is not None:
            return self.pool.download(out, view=view)
        host = out.contiguous().numpy()
        return host.view(view) if view is not None else host
