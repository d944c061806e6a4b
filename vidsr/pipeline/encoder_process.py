"""The encoder stage in its own process, fed through a ring of shared-memory frame slots.

The parent acquires a free slot, writes an upscaled frame into it (no pickling of pixels),
and submits ``(slot, pts)``; the child encodes the slot with PyAV at that pts and hands the
slot back. One ``None`` marks the end of the stream. The child checks every half second that
its parent is alive, so it never outlives a killed parent; the parent checks that the child
is alive whenever it waits, so a dead encoder fails the run promptly instead of hanging.
A child that had to be killed (or died) cannot remove its partial file; the parent does.
Ctrl-C is left to the parent (the child ignores SIGINT and is stopped by the parent), and a
failure in the child reaches the parent as the same ``VidsrError`` class (an unknown codec
stays a ``UsageError``, a full disk an ``OutputError``). What encoder libraries print
straight to the child's stderr (``x264 [error]: ...``) is kept out of the terminal; its last
line is added to the error message instead (``VIDSR_DEBUG=1`` shows it all).

This module imports no torch: the spawned child starts quickly.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import multiprocessing as mp
import os
import queue
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from vidsr import errors
from vidsr.errors import OutputError, PipelineError, VidsrError

_POLL = 0.5


@dataclass(frozen=True)
class EncodeStats:
    frames: int
    busy_seconds: float


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is "no space left on device"."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if getattr(cur, "errno", None) == errno.ENOSPC or "No space left on device" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _describe_failure(exc: BaseException, path: Any) -> tuple[str, str]:
    """(error class name, one-line message) for the parent to re-raise."""
    if isinstance(exc, OutputError):
        return "OutputError", str(exc)
    if _disk_full(exc):
        return "OutputError", f"disk full while writing {path}"
    if isinstance(exc, VidsrError):
        return type(exc).__name__, str(exc)
    return "PipelineError", f"{type(exc).__name__}: {exc}"


def _capture_native_stderr() -> Any:
    """Point this process's fd 2 at a temporary file: encoder libraries write there directly,
    which would add lines to the CLI's one-line errors. None with ``VIDSR_DEBUG`` set."""
    if os.environ.get("VIDSR_DEBUG"):
        return None
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 - open for the process lifetime
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
    except OSError:
        return None
    return capture


def _last_line(capture: Any) -> str:
    if capture is None:
        return ""
    try:
        sys.stderr.flush()
        capture.seek(0, os.SEEK_END)
        capture.seek(max(0, capture.tell() - 4096))
        text = capture.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


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
    # Ctrl-C reaches the whole process group: the parent unwinds and stops this process;
    # failing here first would turn the interrupt into an "encoder failed" error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    capture = _capture_native_stderr()
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
        kind, msg = _describe_failure(exc, encoder_kwargs.get("path"))
        native = _last_line(capture)
        if native and native not in msg:
            msg = f"{msg} ({native})"
        result.put(("error", kind, msg, traceback.format_exc()))
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
        # Partial files the child may leave if it is killed: VideoEncoder writes through
        # vidsr.files.atomic_output, i.e. to temp_path_for(path) = ".STEM.*.partSUFFIX".
        target = encoder_kwargs.get("path")
        self._partial_pattern: str | None = None
        self._partial_before: set[str] = set()
        if target is not None:
            target = Path(target)
            self._partial_pattern = str(
                target.parent / f".{glob.escape(target.stem)}.*.part{glob.escape(target.suffix)}"
            )
            self._partial_before = set(glob.glob(self._partial_pattern))
        self._finished = False
        self._closed = False
        try:
            self._proc.start()
        except BaseException:
            self.close()  # no shared memory or queue left behind
            raise

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
            raise self._error(*rest[:2])
        raise PipelineError("the encoder process stopped before the end of the stream")

    @staticmethod
    def _error(kind: str, message: str) -> VidsrError:
        """The child's failure as the parent's exception: the same VidsrError class."""
        cls = getattr(errors, kind, None)
        if (
            isinstance(cls, type)
            and issubclass(cls, VidsrError)
            and cls not in (VidsrError, PipelineError)
        ):
            return cls(message)
        return PipelineError(f"encoder failed: {message}")

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
        if kind == "error":
            raise self._error(*rest[:2])
        self._finished = True
        self._proc.join(timeout=10)
        self.close()
        return EncodeStats(frames=rest[0], busy_seconds=rest[1])

    def close(self) -> None:
        """Stop the child (if still running) and free the shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        started = self._proc.pid is not None
        if started and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        elif started:
            self._proc.join(timeout=1)  # reap it: no zombie
        if not self._finished:
            self._remove_partial()
        for q in (self._free, self._filled, self._result):
            q.cancel_join_thread()
            q.close()
        del self._ring
        with contextlib.suppress(Exception):
            self._shm.close()
            self._shm.unlink()

    def _remove_partial(self) -> None:
        """Delete the partial file of a child that did not finish (killed children cannot)."""
        if self._partial_pattern is None:
            return
        for name in set(glob.glob(self._partial_pattern)) - self._partial_before:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def __enter__(self) -> EncoderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
