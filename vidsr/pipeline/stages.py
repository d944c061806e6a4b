"""Threads joined by bounded queues, with one end-of-stream marker and failures that travel
downstream to be re-raised in the caller. Also the per-stage timing figures."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

END = object()  # the one end-of-stream marker


@dataclass
class StageStats:
    """Frames through a stage and the seconds it spent working (not waiting)."""

    name: str
    frames: int = 0
    busy_seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.busy_seconds if self.busy_seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        fps = self.fps
        return {
            "frames": self.frames,
            "seconds": round(self.busy_seconds, 4),
            "fps": round(fps, 3) if fps != float("inf") else None,
        }


@dataclass
class _Failure:
    exc: BaseException


@dataclass
class ProducerThread:
    """Runs ``iterable`` in a thread and puts its items into a bounded queue, then END.

    An exception in the producer is put into the queue and re-raised by ``__iter__`` in
    the consumer. ``stop()`` makes the producer give up promptly (it never blocks forever).
    """

    iterable: Iterable[Any]
    maxsize: int
    stats: StageStats
    name: str = "vidsr-decode"
    _queue: queue.Queue[Any] = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=max(1, self.maxsize))
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            it = iter(self.iterable)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.stats.busy_seconds += time.perf_counter() - t0
                    break
                self.stats.busy_seconds += time.perf_counter() - t0
                self.stats.frames += 1
                if not self._put(item):
                    return
            self._put(END)
        except BaseException as exc:
            self._put(_Failure(exc))
        finally:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"{self.name} thread ended without an end marker") from None
                continue
            if item is END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def stop(self) -> None:
        """Ask the producer to stop and wait briefly for it."""
        self._stop.set()
        self._thread.join(timeout=5)
