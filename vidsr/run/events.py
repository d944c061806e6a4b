"""What a run tells its caller: typed events while it runs, and its result.

Progress sinks (``on_event`` of ``vidsr.upscale()``, the CLI's bar and ``--json`` lines) get
these objects; ``event.as_dict()`` is the JSON form (``{"event": "progress", ...}``), the same
fields the ``--json`` lines carry. Batch runs wrap each job event in :class:`InFile`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vidsr.pipeline.stages import StageStats


@dataclass
class UpscaleResult:
    """The outcome of a video run: frames, the output, and each stage's figures."""

    input: Path
    output: Path
    frames: int
    seconds: float
    stages: dict[str, StageStats]
    model: str
    device: str
    precision: str
    batch_size: int
    damaged: list[str] = field(default_factory=list)
    lanes: int = 1
    encode_workers: int = 1
    runtime: str = "torch"
    reused: float | None = None  # held-frame reuse: the share of tiles reused (None: off)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def bound(self) -> str:
        """The stage that spent the most time working: the one that bounds the run."""
        return max(self.stages.values(), key=lambda s: s.busy_seconds).name

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "model": self.model,
            "device": self.device,
            "precision": self.precision,
            "runtime": self.runtime,
            "reused_tiles": self.reused,
            "batch_size": self.batch_size,
            "lanes": self.lanes,
            "encode_workers": self.encode_workers,
            "bound": self.bound,
            "stages": {k: v.as_dict() for k, v in self.stages.items()},
            "damaged": self.damaged,
        }


@dataclass(frozen=True)
class Event:
    """Base of every event; ``kind`` is its ``"event"`` value in JSON."""

    kind: ClassVar[str] = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class JobStarted(Event):
    """A job begins (or resumes: ``frames_done`` of ``frames`` are already done)."""

    kind: ClassVar[str] = "start"
    input: str
    output: str
    frames: int
    frames_done: int
    chunks: int
    chunks_todo: int
    model: str
    work_dir: str
    batch_size: int | str


@dataclass(frozen=True)
class Progress(Event):
    """Frames handed to the encoder so far (finished chunks of a resumed job included)."""

    kind: ClassVar[str] = "progress"
    frames: int
    total: int
    fps: float | None


@dataclass(frozen=True)
class ChunkDone(Event):
    """A chunk's segment is finished and recorded in the job state."""

    kind: ClassVar[str] = "chunk_done"
    index: int
    start: int
    end: int
    frames: int
    worker: str


@dataclass(frozen=True)
class JobDone(Event):
    """The output is in place."""

    kind: ClassVar[str] = "done"
    result: UpscaleResult
    resumed_frames: int

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **self.result.as_dict(), "resumed_frames": self.resumed_frames}


@dataclass(frozen=True)
class RunWarning(Event):
    """Something the run does that a user may not expect (one line; the plan's warnings come
    before the job starts)."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class Failed(Event):
    """The run failed with a one-line error (the CLI's ``--json`` prints it)."""

    kind: ClassVar[str] = "error"
    message: str
    exit_code: int


@dataclass(frozen=True)
class InFile(Event):
    """A job event of one file of a batch: ``event`` with the file's name added."""

    file: str
    event: Event

    def as_dict(self) -> dict[str, Any]:
        return {**self.event.as_dict(), "file": self.file}


EventSink = Callable[[Event], None]


def no_sink(event: Event) -> None:
    """The sink that ignores every event."""
