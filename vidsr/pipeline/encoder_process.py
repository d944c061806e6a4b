"""The encoder stage in its own process, fed through a ring of shared-memory frame slots.

The parent acquires a free slot, writes an upscaled frame into it (no pickling of pixels),
and submits ``(slot, pts)``; the child encodes the slot with PyAV at that pts and hands the
slot back. One ``None`` marks the end of the stream. The child checks every half second that
its parent is alive, so it never outlives a killed parent; the parent checks that the child
is alive whenever it waits, so a dead encoder fails the run promptly instead of hanging.

This module imports no torch: the spawned child starts quickly.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from vidsr.errors import PipelineError

_POLL = 0.5


@dataclass(frozen=True)
class EncodeStats:
    frames: int
    busy_seconds: float


def _child(
    encoder_kwargs: dict[str, Any],
    shm_name: str,
    shape: tuple[int, ...],
    dtype: str,
    slots: int,
    filled: Any,
    free: Any,
    result: Any,
    parent_pid: int,
) -> None:
    # terminate() from the parent: unwind through the abort path below, leaving no file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    shm = SharedMemory(name=shm_name)
    try:
        ring = np.ndarray((slots, *shape), dtype=np.dtype(dtype), buffer=shm.buf)
        from vidsr.media.encode import VideoEncoder

        frames, busy = 0, 0.0
        kwargs = dict(encoder_kwargs)
        info = kwargs.pop("info", None)
        if info is not None:  # an encoder matched to the source's stream (tags, rotation...)
            encoder = VideoEncoder.from_source(kwargs.pop("path"), info, **kwargs)
        else:
            encoder = VideoEncoder(**kwargs)
        try:
            while True:
                try:
                    item = filled.get(timeout=_POLL)
                except queue.Empty:
                    if os.getppid() != parent_pid:
                        encoder.abort()  # the parent died: leave nothing, do not linger
                        return
                    continue
                if item is None:
                    break
                slot, pts = item
                t0 = time.perf_counter()
                encoder.write(ring[slot], pts)
                busy += time.perf_counter() - t0
                frames += 1
                free.put(slot)
        except BaseException:
            encoder.abort()  # nothing half-written under the segment's name
            raise
        t0 = time.perf_counter()
        encoder.close()
        busy += time.perf_counter() - t0
        del ring
        result.put(("ok", frames, busy))
    except BaseException as exc:  # report anything, including a VidsrError, to the parent
        msg = str(exc) if hasattr(exc, "exit_code") else f"{type(exc).__name__}: {exc}"
        result.put(("error", msg, traceback.format_exc()))
    finally:
        shm.close()


class EncoderProcess:
    """Start an encoder process writing ``VideoEncoder(**encoder_kwargs)``.

    Frames are (H, W, C) arrays of ``dtype`` (the ``shape`` given); ``slots`` of them are
    in flight at most, which bounds memory.
    """

    def __init__(
        self,
        encoder_kwargs: dict[str, Any],
        *,
        shape: tuple[int, ...],
        dtype: np.dtype | str = np.uint8,
        slots: int = 8,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.slots = slots
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._shm = SharedMemory(create=True, size=max(1, nbytes * slots))
        self._ring = np.ndarray((slots, *self.shape), dtype=self.dtype, buffer=self._shm.buf)
        self._free = ctx.Queue()
        self._filled = ctx.Queue()
        self._result = ctx.Queue()
        for i in range(slots):
            self._free.put(i)
        self._proc = ctx.Process(
            target=_child,
            args=(
                encoder_kwargs,
                self._shm.name,
                self.shape,
                self.dtype.str,
                slots,
                self._filled,
                self._free,
                self._result,
                os.getpid(),
            ),
            name="vidsr-encoder",
            daemon=True,
        )
        self._proc.start()
        self._closed = False

    def _check_alive(self) -> None:
        if self._proc.is_alive():
            return
        self._raise_child_failure()

    def _raise_child_failure(self) -> None:
        try:
            kind, *rest = self._result.get(timeout=1.0)
        except queue.Empty:
            raise PipelineError(
                f"the encoder process died (exit code {self._proc.exitcode})"
            ) from None
        if kind == "error":
            raise PipelineError(f"encoder failed: {rest[0]}")
        raise PipelineError("the encoder process stopped before the end of the stream")

    def acquire(self) -> tuple[int, np.ndarray]:
        """Wait for a free slot; return its index and a writable view of it."""
        while True:
            try:
                slot = self._free.get(timeout=_POLL)
                return slot, self._ring[slot]
            except queue.Empty:
                self._check_alive()

    def submit(self, slot: int, pts: int) -> None:
        """Queue the frame in ``slot`` for encoding at ``pts`` (source time base)."""
        self._check_alive()
        self._filled.put((slot, int(pts)))

    def finish(self, timeout: float = 600.0) -> EncodeStats:
        """Send the end of stream, wait for the encoder to flush and close the file."""
        self._filled.put(None)
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, *rest = self._result.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self._proc.is_alive():
                    self._raise_child_failure()
                if time.monotonic() > deadline:
                    raise PipelineError("the encoder did not finish in time") from None
        self._proc.join(timeout=10)
        self.close()
        if kind == "error":
            raise PipelineError(f"encoder failed: {rest[0]}")
        return EncodeStats(frames=rest[0], busy_seconds=rest[1])

    def close(self) -> None:
        """Stop the child (if still running) and free the shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        for q in (self._free, self._filled, self._result):
            q.cancel_join_thread()
            q.close()
        del self._ring
        with contextlib.suppress(Exception):
            self._shm.close()
            self._shm.unlink()

    def __enter__(self) -> EncoderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
