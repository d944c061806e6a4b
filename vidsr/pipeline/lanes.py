"""Frame-parallel inference lanes for the CPU.

One forward call on the CPU splits every layer across torch's intra-op threads, which meet
at a barrier after each layer: on small frames the barriers cost a large share, and a thread
that another process (the encoder, the decoder) preempts stalls its partners at the next
barrier. A *lane* is a thread that runs whole batches with fewer intra-op threads (one, on
a small machine); several lanes work on different frames at once and never wait for each
other. Measured on the 2-core development machine (docs/BENCHMARKS.md): two one-thread
lanes run realesr-animevideov3 ~10-20% faster than one two-thread call, at 128x72 and at
640x360 input.

Results come back in submission order, so frames reach the encoder in order. Lanes are
daemon threads: an interrupted run does not wait for a long forward call to finish before
the process can exit. On CUDA there is one lane (the GPU already runs a batch in parallel).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

MAX_AUTO_LANES = 4
# Activation bytes per input pixel for one lane, fp32: the widest layer (64 channels) in and
# out, plus the upscaled output; used to keep auto lanes within a share of free memory.
_BYTES_PER_PIXEL_PER_LANE = 64 * 4 * 3


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def auto_lanes(device: torch.device, height: int, width: int, *, scale: int = 4) -> int:
    """How many lanes to run: 1 on CUDA; on the CPU one per intra-op thread, at most
    ``MAX_AUTO_LANES``, and no more than half the available memory holds (``height`` x
    ``width`` input frames, ``scale`` x upscaling)."""
    if device.type != "cpu":
        return 1
    threads = max(1, torch.get_num_threads())
    lanes = min(threads, MAX_AUTO_LANES)
    avail = _available_memory()
    if avail is not None:
        per_lane = height * width * (_BYTES_PER_PIXEL_PER_LANE + scale * scale * 3 * 4)
        lanes = min(lanes, max(1, int(avail * 0.5 // max(per_lane, 1))))
    return max(1, lanes)


def threads_per_lane(lanes: int) -> int:
    """Intra-op threads each lane uses: the process's threads shared out evenly."""
    return max(1, torch.get_num_threads() // max(1, lanes))


class Lanes:
    """``lanes`` daemon threads, each running ``fn`` on items with ``threads`` intra-op
    threads. ``map(items)`` yields ``(item, fn(item))`` in order, with at most ``lanes + 1``
    items taken from ``items`` ahead of the one being yielded. Use as a context manager;
    leaving it stops the lanes (a lane busy in a forward call finishes that call on its own
    and exits) and restores torch's thread count in the calling thread."""

    def __init__(self, fn: Callable[[T], R], lanes: int, threads: int) -> None:
        self.fn = fn
        self.lanes = max(1, lanes)
        self.threads = max(1, threads)
        self._todo: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._main_threads = torch.get_num_threads()
        self._workers = [
            threading.Thread(target=self._work, name=f"vidsr-lane-{i}", daemon=True)
            for i in range(self.lanes)
        ]
        for w in self._workers:
            w.start()

    def _work(self) -> None:
        # Per thread with torch's OpenMP backend; also sets the count that threads created
        # later start with, which __exit__ puts back.
        torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            try:
                job = self._todo.get(timeout=0.2)
            except queue.Empty:
                continue
            if job is None:
                return
            item, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self.fn(item))
            except BaseException as exc:
                fut.set_exception(exc)

    def submit(self, item: T) -> Future[R]:
        fut: Future[R] = Future()
        self._todo.put((item, fut))
        return fut

    def map(self, items: Iterable[T]) -> Iterator[tuple[T, R]]:
        pending: deque[tuple[T, Future[R]]] = deque()
        for item in items:
            pending.append((item, self.submit(item)))
            if len(pending) > self.lanes:
                first, fut = pending.popleft()
                yield first, fut.result()
        while pending:
            first, fut = pending.popleft()
            yield first, fut.result()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        while True:  # cancel what no lane has started
            try:
                job = self._todo.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1].cancel()
        for _ in self._workers:
            self._todo.put(None)
        for w in self._workers:
            w.join(timeout=0.05)
        torch.set_num_threads(self._main_threads)

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
