"""The encoder stage in its own process, fed through a ring of shared-memory frame slots.

The parent acquires a free slot, writes an upscaled frame into it (no pickling of pixels),
and sends ``("frame", slot, pts)`` over a socket pair; the child encodes the slot with PyAV
at that pts and answers ``("free", slot)``. ``("end",)`` closes the segment, answered by
``("ok", frames, seconds)`` or ``("error", class, message, traceback)``. Inside
:func:`encoder_pool` a child that finished cleanly waits for the next ``("open", ...)``
(the next chunk or file) instead of exiting, so one process serves a whole job.

The child is started with ``subprocess`` (``python -c``), not ``multiprocessing``, so a
caller's script is never re-imported in it. It exits when the socket closes or its parent
dies, so it never outlives a killed parent; the parent checks that the child is alive
whenever it waits, so a dead encoder fails the run promptly instead of hanging. A child
that had to be killed (or died) cannot remove its partial file; the parent does. Ctrl-C is
left to the parent (the child ignores SIGINT and is stopped by the parent), and a failure
in the child reaches the parent as the same ``VidsrError`` class (an unknown codec stays a
``UsageError``, a full disk an ``OutputError``). What encoder libraries print straight to
the child's stderr (``x264 [error]: ...``) is kept out of the terminal; its last line is
added to the error message instead (``VIDSR_DEBUG=1`` shows it all).

Shared-memory segments are named ``vidsr_<pid>_<random>``; segments of processes that no
longer exist (a run killed with SIGKILL together with its resource tracker) are removed the
next time an encoder starts.

This module imports no torch: the child starts quickly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from vidsr import errors
from vidsr.errors import OutputError, PipelineError, VidsrError, opt
from vidsr.files import temps_for

_POLL = 0.5


@dataclass(frozen=True)
class EncodeStats:
    """What the encoder process did for one segment: frames, seconds spent encoding (not
    waiting), and the CPU-seconds its threads used meanwhile (``cpu_seconds / busy_seconds``
    is how many cores one encoder keeps busy)."""

    frames: int
    busy_seconds: float
    cpu_seconds: float = 0.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """(error class name, one-line message) for the parent to re-raise (the message's option
    names unrendered: the parent spells them for its reader)."""
    if isinstance(exc, OutputError):
        return "OutputError", exc.template
    if _disk_full(exc):
        return "OutputError", f"disk full while writing {path}"
    if isinstance(exc, VidsrError):
        return type(exc).__name__, exc.template
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


def _child_env() -> dict[str, str]:
    """The child's environment: vidsr importable as in this process, and one BLAS thread
    (the child does no linear algebra; OpenBLAS starting a thread per core costs ~0.1
    CPU-second at import, measured)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the vidsr package
    paths = [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


class _Child:
    """A started encoder process: ``python -c child_main()`` with a socket pair to it.

    Started with ``subprocess`` rather than ``multiprocessing``: spawn re-imports the
    caller's ``__main__`` in the child (a script importing torch added ~2 CPU-seconds to every
    start; a script without an ``if __name__ == "__main__"`` guard ran its job again), and
    fork is unsafe once torch has started its thread pools."""

    def __init__(self) -> None:
        parent, child = mp_connection.Pipe(duplex=True)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(child.fileno()), str(os.getpid())],
                pass_fds=(child.fileno(),),
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = parent
        self.busy = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the child has done its imports (its first message is ``ready``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            try:
                if self.conn.poll(_POLL) and self.conn.recv()[0] == "ready":
                    return
            except (EOFError, OSError):
                return

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and reap it."""
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)

    def release(self, timeout: float = 5.0) -> None:
        """Ask an idle child to exit (closing its socket is enough), then reap it."""
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()


_CHILD_CODE = "from vidsr.pipeline.encoder_process import child_main; child_main()"

# --- the reuse pool ---------------------------------------------------------------------------

_pool_lock = threading.Lock()
_pool_depth = 0
_idle: list[_Child] = []


@contextlib.contextmanager
def encoder_pool(*, prestart: bool = False, wait: bool = False) -> Iterator[None]:
    """Within this context, an ``EncoderProcess`` that finished cleanly leaves its process
    idle for the next one to reuse (chunk after chunk, file after file), and ``prestart``
    starts one now, so its start-up (~0.3 CPU-second of imports) overlaps whatever comes next
    (loading the model); ``wait`` then blocks until it is ready. Leaving the outermost
    context stops the idle processes. Nests."""
    global _pool_depth
    with _pool_lock:
        _pool_depth += 1
    try:
        if prestart:
            with _pool_lock:
                need = not _idle
            if need:
                child = _Child()
                with _pool_lock:
                    _idle.append(child)
                if wait:
                    child.wait_ready()
        yield
    finally:
        with _pool_lock:
            _pool_depth -= 1
            leaving = _idle[:] if _pool_depth == 0 else []
            if _pool_depth == 0:
                _idle.clear()
        for child in leaving:
            child.release()


def _take_child() -> _Child:
    with _pool_lock:
        while _idle:
            child = _idle.pop()
            if child.alive():
                return child
            child.stop()
    return _Child()


def _give_back(child: _Child) -> None:
    with _pool_lock:
        if _pool_depth > 0 and child.alive() and len(_idle) < 2:
            _idle.append(child)
            return
    child.release()


# --- the child --------------------------------------------------------------------------------


def _recv(conn: Any, parent_pid: int) -> Any:
    """The next message from the parent; None when the parent is gone (EOF, or it died)."""
    while True:
        try:
            if conn.poll(_POLL):
                return conn.recv()
        except (EOFError, OSError):
            return None
        if os.getppid() != parent_pid:
            return None


def child_main() -> None:
    """Entry point of the encoder process: ``argv = [fd, parent_pid]``. Encodes one
    segment per ``open`` message until the parent closes the socket or dies."""
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    # terminate() from the parent: unwind through the abort path below, leaving no file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(errors.EXIT_TERMINATED))
    # Ctrl-C reaches the whole process group: the parent unwinds and stops this process;
    # failing here first would turn the interrupt into an "encoder failed" error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    capture = _capture_native_stderr()
    conn = mp_connection.Connection(fd)
    import vidsr.media.encode  # noqa: F401 - the imports are most of the start-up: do them now

    with contextlib.suppress(OSError):
        conn.send(("ready",))
    while True:
        msg = _recv(conn, parent_pid)
        if msg is None or msg[0] != "open":
            return
        if capture is not None:  # only this segment's lines count for its error message
            with contextlib.suppress(OSError):
                capture.seek(0)
                capture.truncate()
        if not _encode_segment(conn, msg[1:], parent_pid, capture):
            return


def _encode_segment(conn: Any, spec: tuple[Any, ...], parent_pid: int, capture: Any) -> bool:
    """Encode one segment; True when it finished cleanly (the process may take another)."""
    encoder_kwargs, shm_name, shape, dtype, slots = spec
    shm = _attach(shm_name)
    try:
        ring = np.ndarray((slots, *shape), dtype=np.dtype(dtype), buffer=shm.buf)
        from vidsr.media.encode import VideoEncoder

        frames, busy, cpu0 = 0, 0.0, _cpu_seconds()
        kwargs = dict(encoder_kwargs)
        planar = bool(kwargs.pop("planar", False))
        info = kwargs.pop("info", None)
        if info is not None:  # an encoder matched to the source's stream (tags, rotation...)
            encoder = VideoEncoder.from_source(kwargs.pop("path"), info, **kwargs)
        else:
            encoder = VideoEncoder(**kwargs)
        try:
            while True:
                msg = _recv(conn, parent_pid)
                if msg is None:  # the parent died: leave nothing, do not linger
                    encoder.abort()
                    del ring
                    return False
                if msg[0] == "end":
                    break
                _, slot, pts = msg
                t0 = time.perf_counter()
                if planar:  # YUV planes converted where the model ran
                    encoder.write_planes(ring[slot], pts)
                else:
                    encoder.write(ring[slot], pts)
                busy += time.perf_counter() - t0
                frames += 1
                conn.send(("free", slot))
        except BaseException:
            encoder.abort()  # nothing half-written under the segment's name
            raise
        t0 = time.perf_counter()
        encoder.close()
        busy += time.perf_counter() - t0
        del ring
        conn.send(("ok", frames, busy, _cpu_seconds() - cpu0))
        return True
    except BaseException as exc:  # report anything, including a VidsrError, to the parent
        kind, msg_text = _describe_failure(exc, encoder_kwargs.get("path"))
        native = _last_line(capture)
        if native and native not in msg_text:
            msg_text = f"{msg_text} ({native})"
        with contextlib.suppress(OSError):
            conn.send(("error", kind, msg_text, traceback.format_exc()))
        return False
    finally:
        shm.close()


def _attach(name: str) -> SharedMemory:
    """Open the parent's segment without registering it with a resource tracker: the parent
    owns (and unlinks) it, and Python < 3.13 would start a tracker process in this child
    just to register an attached segment."""
    try:
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    except TypeError:  # Python < 3.13: no track argument
        from multiprocessing import resource_tracker

        register = resource_tracker.register
        resource_tracker.register = lambda *a, **k: None  # this process only: it is ours
        try:
            return SharedMemory(name=name)
        finally:
            resource_tracker.register = register


# --- the parent's side ------------------------------------------------------------------------

_SHM_PREFIX = "vidsr_"
_swept = False


#: Where SharedMemory puts its segments (Linux), and the share of its free room a ring takes.
SHM_DIR = "/dev/shm"
_SHM_SHARE = 0.8
_MIN_SLOTS = 2


def shm_free_bytes() -> int | None:
    """Free bytes in :data:`SHM_DIR` (None where there is no such folder)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _ring_memory(
    frame_bytes: int, slots: int, free_shm: Any, sharers: int = 1
) -> tuple[SharedMemory, int]:
    """The ring's shared memory: ``slots`` frames, fewer if ``/dev/shm`` holds fewer (a
    container's default is 64 MiB; writing past a tmpfs's end is a SIGBUS, not an error), and
    reserved at once (``posix_fallocate``), so a full /dev/shm is found here; ``sharers``
    rings made at once share the room. Fewer than two frames: an ``OutputError`` saying how to give it more room."""
    free = free_shm()
    if free is not None:  # each of the rings made at once takes its share
        share = int(free * _SHM_SHARE) // max(1, sharers)
        slots = min(slots, share // max(1, frame_bytes))
    if slots < _MIN_SLOTS:
        raise _shm_too_small(frame_bytes, free)
    while True:
        shm = _plain_ring(frame_bytes, slots)
        fd = getattr(shm, "_fd", -1)
        try:
            if fd >= 0 and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, max(1, frame_bytes * slots))
            return shm, slots
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return shm, slots  # this file system cannot reserve ahead: use it as it is
            shm.close()
            shm.unlink()
            if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                raise
            if slots <= _MIN_SLOTS:
                raise _shm_too_small(frame_bytes, free) from None
            slots = max(_MIN_SLOTS, slots // 2)


def _plain_ring(frame_bytes: int, slots: int) -> SharedMemory:
    """A ring where the file system cannot reserve space ahead (not tmpfs)."""
    return SharedMemory(
        name=f"{_SHM_PREFIX}{os.getpid()}_{secrets.token_hex(6)}",
        create=True,
        size=max(1, frame_bytes * slots),
    )


def _shm_too_small(frame_bytes: int, free: int | None) -> OutputError:
    mib = 1 << 20
    room = f"{free / mib:.0f} MiB free" if free is not None else "too little room"
    need = -(-2 * frame_bytes // mib)
    return OutputError(
        f"{SHM_DIR} has {room}; the encoder's frame ring needs at least two frames, "
        f"{need} MiB ({frame_bytes / mib:.1f} MiB a frame): give it more room (docker run "
        f"--shm-size=8g, or remount {SHM_DIR} larger) or a smaller {opt('scale')}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_segments(folder: str = "/dev/shm") -> list[str]:
    """Remove ``vidsr_<pid>_*`` segments whose process is gone (once per process; Linux
    keeps POSIX shared memory in /dev/shm). Returns the names removed."""
    global _swept
    if _swept:
        return []
    _swept = True
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if not name.startswith(_SHM_PREFIX):
                continue
            pid = name[len(_SHM_PREFIX) :].split("_", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    removed.append(name)
    return removed


class EncoderProcess:
    """An encoder process writing ``VideoEncoder(**encoder_kwargs)``.

    Frames are (H, W, C) arrays of ``dtype`` (the ``shape`` given); ``slots`` of them are
    in flight at most, which bounds memory - fewer where ``/dev/shm`` has less room
    (:func:`_ring_memory`; ``free_shm()`` says how much, for tests). Inside
    :func:`encoder_pool` the process is reused after a clean ``finish``; otherwise each
    instance starts and stops its own.
    """

    def __init__(
        self,
        encoder_kwargs: dict[str, Any],
        *,
        shape: tuple[int, ...],
        dtype: np.dtype | str = np.uint8,
        slots: int = 8,
        free_shm: Any = None,
        shm_sharers: int = 1,
    ) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        _sweep_stale_segments()
        self._shm, slots = _ring_memory(nbytes, slots, free_shm or shm_free_bytes, shm_sharers)
        self.slots = slots
        self._ring = np.ndarray((slots, *self.shape), dtype=self.dtype, buffer=self._shm.buf)
        self._free: list[int] = list(range(slots))
        self._result: tuple[Any, ...] | None = None
        # Partial files the child may leave if it is killed: VideoEncoder writes through
        # vidsr.files.atomic_output, i.e. to a vidsr.files.temp_path_for(path).
        target = encoder_kwargs.get("path")
        self._target: Path | None = Path(target) if target is not None else None
        self._partial_before: set[Path] = temps_for(self._target) if self._target else set()
        self._finished = False
        self._closed = False
        self._child: _Child | None = None
        try:
            self._child = _take_child()
            self._child.conn.send(
                ("open", encoder_kwargs, self._shm.name, self.shape, self.dtype.str, slots)
            )
        except BaseException:
            self.close()  # no shared memory or process left behind
            raise

    @property
    def pid(self) -> int | None:
        """The encoder process's pid."""
        return self._child.pid if self._child else None

    def _check_alive(self) -> None:
        assert self._child is not None
        if self._child.alive():
            return
        self._raise_child_failure()

    def _raise_child_failure(self) -> None:
        # The child's last word may still be in the socket.
        with contextlib.suppress(Exception):
            self._pump(1.0)
        if self._result is not None and self._result[0] == "error":
            raise self._error(*self._result[1:3])
        assert self._child is not None
        code = self._child.proc.poll()
        raise PipelineError(f"the encoder process died (exit code {code})") from None

    def _pump(self, timeout: float) -> bool:
        """Read what the child said within ``timeout``; False when nothing came."""
        assert self._child is not None
        conn = self._child.conn
        got = False
        while conn.poll(timeout):
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return got
            got = True
            timeout = 0
            if msg[0] == "free":
                self._free.append(msg[1])
            elif msg[0] in ("ok", "error"):
                self._result = msg
                return True
            # anything else ("ready" from a prestarted child) needs no action
        return got

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
        self._pump(0)
        while True:
            if self._result is not None:
                self._raise_child_failure()
            if self._free:
                slot = self._free.pop(0)
                return slot, self._ring[slot]
            if not self._pump(_POLL):
                self._check_alive()

    def submit(self, slot: int, pts: int) -> None:
        """Queue the frame in ``slot`` for encoding at ``pts`` (source time base)."""
        self._check_alive()
        assert self._child is not None
        try:
            self._child.conn.send(("frame", slot, int(pts)))
        except OSError:
            self._raise_child_failure()

    def finish(self, timeout: float = 600.0) -> EncodeStats:
        """Send the end of stream, wait for the encoder to flush and close the file."""
        assert self._child is not None
        try:
            self._child.conn.send(("end",))
        except OSError:
            self._raise_child_failure()
        deadline = time.monotonic() + timeout
        while self._result is None:
            if not self._pump(_POLL):
                if not self._child.alive():
                    self._raise_child_failure()
                if time.monotonic() > deadline:
                    raise PipelineError("the encoder did not finish in time") from None
        kind, *rest = self._result
        if kind != "ok":
            raise self._error(*rest[:2])
        self._finished = True
        child, self._child = self._child, None
        _give_back(child)  # reused inside encoder_pool(), else stopped
        self.close()
        cpu = rest[2] if len(rest) > 2 else 0.0
        return EncodeStats(frames=rest[0], busy_seconds=rest[1], cpu_seconds=cpu)

    def close(self) -> None:
        """Stop the child (if still running) and free the shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._child is not None:
            self._child.stop()
            self._child = None
        if not self._finished:
            self._remove_partial()
        del self._ring
        with contextlib.suppress(Exception):
            self._shm.close()
            self._shm.unlink()

    def _remove_partial(self) -> None:
        """Delete the partial file of a child that did not finish (killed children cannot)."""
        if self._target is None:
            return
        for path in temps_for(self._target) - self._partial_before:
            with contextlib.suppress(OSError):
                path.unlink()

    def __enter__(self) -> EncoderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
