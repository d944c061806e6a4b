"""Local executors: chunks in this process (one device), or one worker process per device
slot pulling chunks from a shared queue (a faster device does more chunks).

An executor runs chunk tasks; what each chunk does comes from its task's settings. The
upscaler a worker builds (from the first task's settings, on its slot's device) is kept for
the chunks after it. The in-process executor keeps its upscaler across the files of a batch
(while the settings describe the same network); worker processes live for one job, so each
file's job starts them, and their models, again.

A worker that dies puts its chunk back in the queue and is replaced (a few times at most);
the driver never waits on a dead worker, so a job never hangs.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vidsr.errors import PipelineError, VidsrError
from vidsr.jobs.chunk import ChunkResult, ChunkTask, network_key, run_chunk, upscaler_for

log = logging.getLogger(__name__)

OnFrames = Callable[[int, int], None]  # (chunk index, frames) as frames are handed on
OnDone = Callable[[ChunkResult], None]

_POLL = 0.25
MAX_WORKER_RESTARTS = 3
MAX_CHUNK_ATTEMPTS = 2


MAX_ENCODE_WORKERS = 4


def encode_workers_for(result: ChunkResult, cpus: int, limit: int = MAX_ENCODE_WORKERS) -> int:
    """How many chunks to encode at once, judged from a finished chunk: 1 unless the encoder
    bounded it (worked longer than the model); then as many encoders as the CPUs hold, given
    how many cores one encoder kept busy (its CPU-seconds per working second)."""
    infer_busy = result.stages.get("infer", (0, 0.0))[1]
    encode_busy = result.stages.get("encode", (0, 0.0))[1]
    if encode_busy <= 0 or encode_busy <= 1.1 * infer_busy:
        return 1
    cores_per_encoder = max(1.0, result.encoder_cpu_seconds / encode_busy)
    return max(1, min(limit, int(cpus // cores_per_encoder)))


class _Stopped(Exception):
    """Raised in a chunk's progress callback to stop it when another chunk failed."""


class InProcessExecutor:
    """Every chunk in this process, on one device (``slot``): no worker processes at all.

    Chunks run one after another while the model bounds them. When a chunk shows that the
    encoder bounds the run (:func:`encode_workers_for`; the settings' ``encode_workers`` fixes
    the number instead, 0 = auto), the next chunks run that many at once: each has its own
    decoder thread and encoder process, and they share the one model, so every core encodes.

    ``upscaler``: one already built for these settings on ``slot`` (else built on first
    use, see :meth:`upscaler_for`)."""

    def __init__(self, slot: str, upscaler: Any = None) -> None:
        self.slot = slot
        self._upscaler = upscaler
        self._key: tuple[Any, ...] | None = None

    @property
    def device_type(self) -> str:
        return "cuda" if self.slot.startswith("cuda") else "cpu"

    @property
    def name(self) -> str:
        """Where the chunks run, for the reader."""
        return self.slot

    def upscaler_for(self, settings: Any) -> Any:
        """The upscaler for ``settings`` on this executor's device: the one it holds while
        the settings describe the same network, else a new one."""
        key = network_key(settings, self.slot)
        if self._upscaler is None or (self._key is not None and self._key != key):
            self._upscaler = upscaler_for(settings, self.slot)
        self._key = key
        return self._upscaler

    def close(self) -> None:
        """Nothing to stop: chunks ran in this process."""

    def run(self, tasks: Sequence[ChunkTask], on_frames: OnFrames, on_done: OnDone) -> None:
        if not tasks:
            return
        settings = tasks[0].settings
        upscaler = self.upscaler_for(settings)
        worker = f"{upscaler.device}#0"
        todo = list(tasks)
        fixed = settings.encode_workers
        k = max(1, fixed)
        while todo and (k == 1 or len(todo) == 1):
            task = todo.pop(0)
            index = task.chunk.index
            result = run_chunk(task, upscaler, lambda n, i=index: on_frames(i, n))
            on_done(replace(result, worker=worker))
            if fixed == 0:  # auto: decide from the first chunk
                k = encode_workers_for(result, _cpu_count())
                if k > 1:
                    log.info("the encoder bounds this run: %d chunks at once from now", k)
        if todo:
            self._run_parallel(todo, upscaler, worker, k, on_frames, on_done)

    def _run_parallel(
        self,
        tasks: list[ChunkTask],
        upscaler: Any,
        worker: str,
        k: int,
        on_frames: OnFrames,
        on_done: OnDone,
    ) -> None:
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        lock = threading.Lock()  # the callbacks write the job state: one at a time
        stop = threading.Event()

        def one(task: ChunkTask) -> None:
            index = task.chunk.index

            def frames(n: int) -> None:
                if stop.is_set():
                    raise _Stopped
                with lock:
                    on_frames(index, n)

            if stop.is_set():
                return
            result = run_chunk(task, upscaler, frames, sharers=k)
            with lock:
                on_done(replace(result, worker=worker, encode_workers=k))

        pool = ThreadPoolExecutor(max_workers=k, thread_name_prefix="vidsr-chunk")
        futures = [pool.submit(one, t) for t in tasks]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                stop.set()
                wait(futures)
                errors = [f.exception() for f in futures if f.exception() is not None]
                first = next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
                raise first  # type: ignore[misc]
        except BaseException:
            stop.set()  # Ctrl-C, SIGTERM, a failed chunk: the others stop at their next batch
            for f in futures:
                f.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker at once if the driver is gone (its encoder child follows)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)


def pinned_env(device: str) -> dict[str, str]:
    """The environment a worker for ``device`` starts with: a CUDA device ``cuda:N`` is made
    the only GPU the worker sees (``CUDA_VISIBLE_DEVICES=N``), before torch, PyAV or an
    encoder child could open a CUDA context anywhere else: torch's ``cuda:0``, NVDEC's
    device 0 and NVENC's ``gpu`` 0 in that worker, and in its encoder process, are GPU N."""
    if not device.startswith("cuda"):
        return {}
    index = device.partition(":")[2] or "0"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:  # already narrowed: cuda:N is the N-th of those
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        index = ids[int(index)] if int(index) < len(ids) else index
    return {"CUDA_VISIBLE_DEVICES": index}


def worker_device(device: str) -> str:
    """The torch device inside a worker pinned by :func:`pinned_env`."""
    return "cuda:0" if device.startswith("cuda") else device


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Any:
    """``os.environ`` with ``extra`` while a child process is started (spawn copies it)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in extra}
        os.environ.update(extra)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def start_worker(ctx: Any, target: Any, device: str, args: tuple[Any, ...], name: str) -> Any:
    """Start ``target(*args)`` in a spawned process pinned to ``device`` (:func:`pinned_env`)."""
    p = ctx.Process(target=target, name=name, args=args)
    with _environ(pinned_env(device)):
        p.start()
    return p


def _worker_main(
    slot: int, device: str, tasks: Any, results: Any, parent_pid: int, cpu_threads: int
) -> None:
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    pool = contextlib.ExitStack()  # this worker's chunks share one encoder process
    try:
        from vidsr.pipeline.encoder_process import encoder_pool

        pool.enter_context(encoder_pool(prestart=True))  # starts while torch loads

        import torch

        if device == "cpu":  # CPU workers share the cores instead of oversubscribing them
            torch.set_num_threads(cpu_threads)
    except BaseException as exc:
        pool.close()
        results.put(("fatal", slot, None, _message(exc)))
        return
    with pool:
        _worker_loop(slot, InProcessExecutor(worker_device(device)), tasks, results, device)


def _worker_loop(
    slot: int, local: InProcessExecutor, tasks: Any, results: Any, device: str
) -> None:
    name = f"{device}#{slot}"  # the GPU as the driver names it (the worker sees it as cuda:0)
    while True:
        task = tasks.get()
        if task is None:
            return
        try:  # the model, from the first task's settings (kept for the next ones)
            upscaler = local.upscaler_for(task.settings)
        except BaseException as exc:
            results.put(("fatal", slot, None, _message(exc)))
            tasks.put(task)  # for another worker; the driver fails once none is left
            return
        index = task.chunk.index
        results.put(("start", slot, index, None))
        try:
            res = run_chunk(task, upscaler, lambda n, i=index: results.put(("frames", slot, i, n)))
            results.put(("done", slot, index, replace(res, worker=name)))
        except BaseException as exc:
            results.put(("error", slot, index, _message(exc)))
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                return


def _message(exc: BaseException) -> tuple[str, str]:
    """A worker's failure for the driver: (error class, one-line message). A VidsrError keeps
    its class (so its exit code) and its message unrendered (the driver spells its option
    names for the reader); anything else is a PipelineError naming the exception, its
    traceback in this worker's log."""
    if isinstance(exc, VidsrError):
        return type(exc).__name__, exc.template
    log.error("worker failure:\n%s", traceback.format_exc(limit=5))
    first = str(exc).strip().splitlines()
    return "PipelineError", f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": ")


def _error(kind: str, message: str) -> VidsrError:
    """A worker's failure as the driver's exception: the same VidsrError class."""
    from vidsr import errors

    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, VidsrError):
        return cls(message)
    return PipelineError(message)


@dataclass
class _Slot:
    device: str
    proc: Any
    chunk: int | None = None
    restarts: int = 0


class ProcessPoolExecutor:
    """One worker process per device slot, pulling chunks from a shared queue."""

    def __init__(self, slots: Sequence[str]) -> None:
        self.devices = list(slots)

    @property
    def device_type(self) -> str:
        return "cuda" if self.devices[0].startswith("cuda") else "cpu"

    @property
    def name(self) -> str:
        """Where the chunks run, for the reader."""
        return ",".join(self.devices)

    def close(self) -> None:
        """Nothing to stop: workers live only while :meth:`run` runs."""

    def run(self, tasks: Sequence[ChunkTask], on_frames: OnFrames, on_done: OnDone) -> None:
        if not tasks:
            return
        ctx = mp.get_context("spawn")
        task_q, result_q = ctx.Queue(), ctx.Queue()
        by_index = {t.chunk.index: t for t in tasks}
        pending = set(by_index)
        attempts = dict.fromkeys(by_index, 0)
        progress = dict.fromkeys(by_index, 0)
        for t in tasks:
            task_q.put(t)
        n_cpu = sum(1 for d in self.devices if d == "cpu")
        cpu_threads = max(1, (os.cpu_count() or 1) // max(1, n_cpu))

        def start(i: int, device: str, restarts: int = 0) -> _Slot:
            args = (i, device, task_q, result_q, os.getpid(), cpu_threads)
            p = start_worker(ctx, _worker_main, device, args, f"vidsr-worker-{i}")
            return _Slot(device, p, None, restarts)

        slots = [start(i, d) for i, d in enumerate(self.devices)]
        fatal: list[tuple[str, str]] = []
        try:
            while pending:
                try:
                    kind, i, index, payload = result_q.get(timeout=_POLL)
                except queue.Empty:
                    self._reap(slots, start, task_q, by_index, progress, on_frames, fatal)
                    if not any(s.proc.is_alive() for s in slots):
                        if fatal:  # the model or device: its own error, as in one process
                            raise _error(*fatal[-1]) from None
                        raise PipelineError("every worker has stopped") from None
                    continue
                slot = slots[i]
                if kind == "fatal":
                    fatal.append(payload)
                elif kind == "start":
                    slot.chunk = index
                elif kind == "frames":
                    progress[index] += payload
                    on_frames(index, payload)
                elif kind == "done":
                    slot.chunk = None
                    if index in pending:  # a requeued chunk may finish twice: count it once
                        pending.discard(index)
                        on_done(payload)
                elif kind == "error":
                    slot.chunk = None
                    attempts[index] += 1
                    on_frames(index, -progress[index])
                    progress[index] = 0
                    if attempts[index] >= MAX_CHUNK_ATTEMPTS:
                        kind_name, message = payload
                        raise _error(kind_name, f"chunk {index} failed: {message}")
                    task_q.put(by_index[index])
        finally:
            for _ in slots:
                with contextlib.suppress(Exception):
                    task_q.put(None)
            deadline = time.monotonic() + 5
            for s in slots:
                s.proc.join(timeout=max(0.1, deadline - time.monotonic()))
                if s.proc.is_alive():
                    s.proc.terminate()
                    s.proc.join(timeout=5)
            for q in (task_q, result_q):
                q.cancel_join_thread()
                q.close()

    def _reap(
        self,
        slots: list[_Slot],
        start: Any,
        task_q: Any,
        by_index: dict[int, ChunkTask],
        progress: dict[int, int],
        on_frames: OnFrames,
        fatal: list[tuple[str, str]],
    ) -> None:
        """Requeue the chunk of any dead worker and start a replacement."""
        for i, s in enumerate(slots):
            if s.proc.is_alive() or (s.proc.exitcode == 0 and s.chunk is None):
                continue
            if s.chunk is not None:
                on_frames(s.chunk, -progress[s.chunk])
                progress[s.chunk] = 0
                task_q.put(by_index[s.chunk])
                s.chunk = None
            crashed = s.proc.exitcode not in (0, None)
            if crashed and s.restarts < MAX_WORKER_RESTARTS and not fatal:
                slots[i] = start(i, s.device, s.restarts + 1)
            # else: dead for good; the driver fails once no worker is left
