"""One batch's whole step on the model's device, made resilient and, on CUDA, asynchronous.

- :class:`ResilientStep` runs ``step(batch, upscaler)`` - upload, colour conversion, network,
  packing, download: everything that allocates on the device - and when any of it runs out
  of memory, or meets a tensor too large for 32-bit indexing, runs the batch again in halves,
  then one frame at a time in tiles smaller than any in use, before failing. The results of
  the parts are kept apart (never concatenated on the device, which could run out of memory
  itself) and handed on in order: no frame is dropped or repeated. What a retry learned is
  kept in the network's :class:`~vidsr.pipeline.memory.MemoryState` for later chunks.
  An fp16/bf16 network whose first batch gives NaN or Inf is switched to fp32, with a
  warning, and the batch run again.
- :class:`PinnedPool` holds the page-locked host buffers uploads are staged in and downloads
  land in. A buffer is taken again only once the copy that used it is done (a CUDA event
  recorded after it) and, for a download, once its reader released it: safe by
  construction, whatever the caller overlaps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from vidsr.errors import GpuMemoryError, PipelineError, opt
from vidsr.pipeline.infer import NonFiniteOutput, Upscaler
from vidsr.pipeline.memory import MemoryState, needs_smaller, release_cuda_memory

log = logging.getLogger(__name__)

#: Tile sizes tried, largest first, when one frame does not fit whole.
TILES_ON_OOM = (512, 256, 128)

Step = Callable[[Sequence[Any], Upscaler], Any]

# CPU lanes run batches of one network at once: what they learn is written one at a time.
_LEARNING = threading.Lock()


class ResilientStep:
    """``ResilientStep(upscaler, step, key)(batch)`` -> the list of ``step``'s results for the
    parts ``batch`` was run in (one part, unless memory ran short), in order. ``batch`` is
    any sequence (frames, or a tensor of them); ``key`` its frames' (height, width)."""

    def __init__(
        self, upscaler: Upscaler, step: Step, key: tuple[int, int], *, check_first: bool = True
    ) -> None:
        self.upscaler = upscaler
        self.step = step
        self.key = key
        # fp16/bf16 runs check their first batch for NaN (OpenVINO's tensors are fp32 whatever
        # its inference precision: its own precision counts)
        reduced = upscaler.dtype != torch.float32 or getattr(
            upscaler, "runtime_precision", ""
        ) not in ("", "fp32")
        self.check = check_first and reduced

    @property
    def state(self) -> MemoryState:
        return self.upscaler.memory

    @property
    def max_batch(self) -> int | None:
        return self.state.max_batch.get(self.key)

    @property
    def tiled(self) -> Upscaler | None:
        tile = self.state.tile.get(self.key)
        return None if tile is None else self._tiled(tile)

    def __call__(self, batch: Sequence[Any]) -> list[Any]:
        cap = self.max_batch
        if cap and len(batch) > cap:
            return [part for i in range(0, len(batch), cap) for part in self(batch[i : i + cap])]
        net = self.tiled or self.upscaler  # what this attempt runs (lanes share the state)
        try:
            return [self._run(batch, net)]
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            if needs_smaller(exc) is None:
                raise
        release_cuda_memory()
        if len(batch) > 1:
            with _LEARNING:
                known = self.state.max_batch.get(self.key, len(batch))
                self.state.max_batch[self.key] = max(1, min(known, len(batch) // 2))
            return self(batch)
        return [self._tiled_single(batch, net.tile)]

    def _run(self, batch: Sequence[Any], net: Upscaler) -> Any:
        if not self.check:
            return self.step(batch, net)
        try:
            out = self.step(batch, _Checked(net))
            self.check = False  # the first batch that ran (an OOM retry is checked too)
            return out
        except NonFiniteOutput:
            self.check = False
        log.warning(
            "the model gave NaN or Inf at %s on the first batch (an overflow): running in "
            "fp32 from now on",
            self.upscaler.precision_name,
        )
        self.upscaler.use_fp32()
        net = self.tiled or self.upscaler
        return self.step(batch, net)

    def _tiled(self, tile: int) -> Upscaler:
        base = self.upscaler
        net = self.state.tiled.get(tile)
        runtime = getattr(base, "runtime", "torch")
        stale = runtime != "torch" and net is not None and net.module is not base.module
        if net is None or net.dtype != base.dtype or stale:
            net = Upscaler(base.net, device=base.device, dtype=base.dtype, tile=tile,
                           tile_pad=base.tile_pad)  # fmt: skip
            if runtime != "torch":  # the same runtime in tiles (OpenVINO stays)
                net.module = base.module
                net.runtime, net.runtime_precision = base.runtime, base.runtime_precision
            self.state.tiled[tile] = net
        return net

    def _tiled_single(self, batch: Sequence[Any], failed: int) -> Any:
        """One frame in the largest tile smaller than any that failed or is in use."""
        in_use = [t for t in (self.upscaler.tile, failed) if t]
        limit = min(in_use) if in_use else None
        tiles = [t for t in TILES_ON_OOM if limit is None or t < limit]
        for tile in tiles:
            try:
                out = self._run(batch, self._tiled(tile))
            except RuntimeError as exc:
                if needs_smaller(exc) is None:
                    raise
                release_cuda_memory()
                continue
            with _LEARNING:
                known = self.state.tile.get(self.key)
                self.state.tile[self.key] = min(known, tile) if known else tile
            return out
        smallest = min([*tiles, *in_use]) if (tiles or in_use) else TILES_ON_OOM[-1]
        raise GpuMemoryError(
            f"out of GPU memory even for one frame in {smallest}-pixel tiles; "
            f"use a smaller model or {opt('device', 'cpu')}"
        )


class _Checked:
    """An upscaler whose output is checked for NaN/Inf (the first batch of a run)."""

    def __init__(self, net: Upscaler) -> None:
        self.net = net

    def __getattr__(self, name: str) -> Any:
        return getattr(self.net, name)

    def __call__(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.net(x, size, check_finite=True)


# --- pinned host buffers ----------------------------------------------------------------------


class PinnedPool:
    """Page-locked host buffers by (shape, dtype), each reused only after the copy that used
    it is done (its event) and - for downloads - after :meth:`give` returned it.
    ``event()`` makes the completion marker (a recorded ``torch.cuda.Event`` by default);
    ``pin`` whether buffers are page-locked (tests run it on the CPU)."""

    def __init__(
        self,
        event: Callable[[], Any] | None = None,
        *,
        pin: bool = True,
        device: torch.device | None = None,
    ) -> None:
        self._free: dict[tuple[tuple[int, ...], torch.dtype], list[tuple[torch.Tensor, Any]]] = {}
        self._event = event or (lambda: _cuda_event(device))
        self._pin = pin
        self.allocated = 0

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """A buffer no copy is using any more (waiting for the oldest one if need be)."""
        free = self._free.setdefault((tuple(shape), dtype), [])
        for i, (buf, done) in enumerate(free):
            if done is None or done.query():
                del free[i]
                return buf
        if len(free) >= 2:  # more in flight than the step overlaps: wait for the oldest
            buf, done = free.pop(0)
            done.synchronize()
            return buf
        self.allocated += 1
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=self._pin)

    def give(self, buf: torch.Tensor, after: Any = None) -> None:
        """Return ``buf``: free once ``after`` (an event, or True: "record one now") is done."""
        if after is True:
            after = self._event()
        self._free.setdefault((tuple(buf.shape), buf.dtype), []).append((buf, after))

    def upload(self, host: np.ndarray, device: torch.device) -> torch.Tensor:
        """``host`` on ``device`` through a staging buffer (free again once the copy is)."""
        src = torch.from_numpy(host)
        buf = self.take(src.shape, src.dtype)
        buf.copy_(src)
        out = buf.to(device, non_blocking=True)
        self.give(buf, after=True)
        return out

    def download(self, t: torch.Tensor, view: np.dtype | None = None) -> Pending:
        """Start copying device tensor ``t`` into a host buffer: :class:`Pending` (its array
        seen as ``view`` when given)."""
        t = t.contiguous()  # a strided device->host copy is ~20x slower than a dense one
        buf = self.take(t.shape, t.dtype)
        buf.copy_(t, non_blocking=True)
        return Pending(buf, self._event(), self, view)


class Pending:
    """A download in flight: :meth:`array` waits for it; :meth:`release` hands its buffer
    back once the array was read (copied on)."""

    def __init__(
        self, buf: torch.Tensor, done: Any, pool: PinnedPool, view: np.dtype | None = None
    ) -> None:
        self.buf, self.done, self.pool, self.view = buf, done, pool, view
        self._released = False

    def array(self) -> np.ndarray:
        if self._released:
            raise PipelineError("a released download was read")
        self.done.synchronize()
        host = self.buf.numpy()
        return host.view(self.view) if self.view is not None else host

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool.give(self.buf, None)


def _cuda_event(device: torch.device | None) -> Any:
    """An event recorded on ``device``'s current stream (where its copies were queued: not
    the current device's, which may be another GPU); waiting for it sleeps, not spins."""
    event = torch.cuda.Event(blocking=True)
    event.record(torch.cuda.current_stream(device))
    return event
