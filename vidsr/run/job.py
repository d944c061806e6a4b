"""A whole video run: place it, resolve its settings, plan it, then run it as a job - plan
chunks, resume from the work folder, run the pending chunks on an executor, join the segments
without re-encoding, mux every other stream from the source, rename into place, and clear
the work folder.

Only this driver writes ``job.json``; workers only write segments. The resume fingerprint is
computed here, once, from the resolved settings (:func:`vidsr.settings.fingerprint`) and the
hash of the weights actually loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidsr.errors import Interrupted, render
from vidsr.jobs.chunk import ChunkResult, ChunkTask
from vidsr.jobs.plan import plan_chunks
from vidsr.jobs.state import JobState
from vidsr.media.remux import MP4_SUFFIXES
from vidsr.pipeline.stages import StageStats
from vidsr.run.events import (
    ChunkDone,
    EventSink,
    JobDone,
    JobStarted,
    Progress,
    RunWarning,
    UpscaleResult,
    no_sink,
)
from vidsr.run.plan import VideoPlan, plan_video
from vidsr.run.resolve import Placement, placement, resolve
from vidsr.settings import Settings, fingerprint

# --- executors --------------------------------------------------------------------------------


def runs_in_process(settings: Settings) -> bool:
    """Whether the chunks will run in this process (known without importing torch: the CLI
    starts the encoder process before torch loads when they will)."""
    devices = [d for d in settings.devices if d.lower() != "all"]
    return (
        settings.backend == "local"
        and len(devices) <= 1
        and len(settings.devices) <= 1
        and settings.workers_per_device == 1
    )


def make_executor(settings: Settings, where: Placement, upscaler: Any = None) -> Any:
    """The executor for ``where``: in this process (one local slot; ``upscaler``, if given,
    is one already built for these settings there), worker processes, or Ray."""
    from vidsr.jobs.local import InProcessExecutor, ProcessPoolExecutor

    if where.backend == "ray":
        from vidsr.jobs.ray_executor import RayExecutor

        return RayExecutor(settings)
    if where.in_process:
        return InProcessExecutor(where.slots[0], upscaler)
    return ProcessPoolExecutor(where.slots)


@contextlib.contextmanager
def open_executor(settings: Settings, upscaler: Any = None) -> Iterator[Any]:
    """An executor for ``settings``' placement, connected (Ray) and closed afterwards."""
    executor = make_executor(settings, placement(settings), upscaler)
    try:
        if hasattr(executor, "open"):
            executor.open()
        yield executor
    finally:
        executor.close()


def prepare(
    settings: Settings,
    input_path: Path,
    executor: Any,
    *,
    output: Path | None = None,
    work_dir: Path | None = None,
    check_output: bool = True,
) -> VideoPlan:
    """Resolve ``settings`` for the executor's device type and plan the run of
    ``input_path`` (nothing is written)."""
    device_type = executor.device_type
    return plan_video(
        input_path,
        resolve(settings, device_type),
        output=output,
        work_dir=work_dir,
        check_output=check_output,
        device=executor.name,
        device_type=device_type,
    )


# --- the job ----------------------------------------------------------------------------------


def _segment_suffix(output: Path) -> str:
    """Segments for an MP4/MOV output are MP4/MOV files: they keep the source's time base
    (Matroska would round every time to the millisecond) and a .mov output's codecs
    (ProRes ...) that the mp4 muxer refuses."""
    suffix = output.suffix.lower()
    if suffix not in MP4_SUFFIXES:
        return ".mkv"
    return ".mov" if suffix == ".mov" else ".mp4"


_DIGESTS: dict[tuple[Any, ...], str] = {}


def weights_digest_for(executor: Any, settings: Settings) -> str:
    """The hash of the weights this run's chunks use: the in-process upscaler's own (built
    here, once), or - for worker processes and Ray - the same weights read here (once per
    model, blend and file version)."""
    if hasattr(executor, "upscaler_for"):
        return executor.upscaler_for(settings).net.digest
    from vidsr.models.loader import weights_digest

    model = settings.model
    stamp = None
    with contextlib.suppress(OSError):
        st = Path(model).stat()
        stamp = (st.st_size, st.st_mtime_ns)
    key = (model, settings.denoise_strength, stamp)
    if key not in _DIGESTS:
        _DIGESTS[key] = weights_digest(model, denoise_strength=settings.denoise_strength)
    return _DIGESTS[key]


def _chunk_unit(plan: VideoPlan) -> int:
    """Chunks start at multiples of this many output frames: field repair's unit, and with
    held-frame reuse also the cache's period (so chunks start with it empty, as one pass
    has it there)."""
    import math

    from vidsr.pipeline.reuse import PERIOD

    unit = plan.source.timeline.unit
    return math.lcm(unit, PERIOD) if plan.settings.reuse != "off" else unit


def open_job_state(plan: VideoPlan, executor: Any) -> JobState:
    """The job's work folder, resumed or new: refused (``JobStateError``) when it holds a job
    for another source or for settings that would give other output bytes."""
    from vidsr.files import remove_stale_temps

    s = plan.settings
    src = plan.source
    chunks = plan_chunks(
        plan.out_pts,
        src.timeline.time_base,
        chunk_frames=s.chunk_frames,
        chunk_seconds=s.chunk_seconds,
        unit=_chunk_unit(plan),
    )
    prints = fingerprint(
        s,
        weights=weights_digest_for(executor, s),
        out_size=[plan.out_width, plan.out_height],
        source=[src.first, src.last, src.filters.describe(), len(plan.out_pts)],
    )
    remove_stale_temps(plan.output)
    return JobState.open(
        plan.work_dir,
        source_path=plan.input,
        settings=prints,
        chunks=chunks,
        restart=s.restart,
        suffix=_segment_suffix(plan.output),
    )


@dataclass
class _Tally:
    """What the finished chunks add up to (the driver's callbacks fill it in)."""

    plan: VideoPlan
    state: JobState
    emit: EventSink
    resumed: int
    done_frames: int = 0
    t_start: float = field(default_factory=time.perf_counter)
    stages: dict[str, StageStats] = field(
        default_factory=lambda: {n: StageStats(n) for n in ("decode", "infer", "encode")}
    )
    damaged: list[str] = field(default_factory=list)
    workers: set[str] = field(default_factory=set)
    used: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.done_frames = self.resumed

    def on_frames(self, _index: int, n: int) -> None:
        self.done_frames += n
        elapsed = time.perf_counter() - self.t_start
        fps = round((self.done_frames - self.resumed) / elapsed, 3) if elapsed > 0 else None
        self.emit(Progress(self.done_frames, self.plan.frames, fps))

    def on_done(self, res: ChunkResult) -> None:
        chunk = self.state.chunks[res.index]
        self.state.mark_done(chunk, res.frames, self.state.segment_path(chunk))
        for name, (frames, busy) in res.stages.items():
            self.stages[name].frames += frames
            self.stages[name].busy_seconds += busy
        self.damaged.extend(res.damaged)
        self.workers.add(res.worker)
        self.used.setdefault("precision", res.precision)
        self.used.setdefault("batch_size", res.batch_size)
        self.used.setdefault("lanes", res.lanes)
        self.used["encode_workers"] = max(self.used.get("encode_workers", 1), res.encode_workers)
        self.used["tiles"] = self.used.get("tiles", 0) + res.tiles
        self.used["reused"] = self.used.get("reused", 0) + res.reused
        self.emit(ChunkDone(res.index, chunk.start, chunk.end, res.frames, res.worker))

    def result(self, frames: int) -> UpscaleResult:
        s = self.plan.settings
        return UpscaleResult(
            self.plan.input,
            self.plan.output,
            frames,
            time.perf_counter() - self.t_start,
            self.stages,
            self.plan.model,
            ",".join(sorted(self.workers)) or "none (resumed)",
            self.used.get("precision") or s.precision,
            self.used.get("batch_size", s.batch_size),
            self.damaged,
            lanes=self.used.get("lanes", 1),
            encode_workers=self.used.get("encode_workers", 1),
            runtime=s.runtime,
            reused=(
                round(self.used["reused"] / self.used["tiles"], 4)
                if self.used.get("tiles")
                else None
            ),
        )


def _task(plan: VideoPlan, state: JobState, c: Any) -> ChunkTask:
    """Chunk ``c``'s task: its output frames, the source frames (and context) that make them,
    the filters, the output geometry."""
    from vidsr.media.repair import chunk_span

    src = plan.source
    return ChunkTask(
        plan.input,
        state.segment_path(c),
        c,
        plan.info,
        plan.out_width,
        plan.out_height,
        plan.settings,
        plan.out_pts[c.start : c.end],
        span=chunk_span(src.timeline, src.filters, c.start, c.end, plan.info.video.frame_count),
        filters=src.filters if src.filters.active else None,
        sar=plan.out_sar,
        rate=src.rate,
        time_base=src.timeline.time_base,
    )


def _run_chunks(executor: Any, tasks: list[ChunkTask], tally: _Tally) -> None:
    """Run ``tasks``; Ctrl-C or SIGTERM becomes an ``Interrupted`` that says how to resume."""
    from vidsr.jobs.local import InProcessExecutor
    from vidsr.pipeline.encoder_process import encoder_pool

    state = tally.state
    try:
        # Chunks run here share one encoder process, started now so that its start-up
        # overlaps loading the model; worker processes keep their own.
        in_process = isinstance(executor, InProcessExecutor)
        with encoder_pool(prestart=in_process and bool(tasks)):
            executor.run(tasks, tally.on_frames, tally.on_done)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (a Terminated)
        message = (
            f"stopped after {len(state.done)} of {len(state.chunks)} chunks; "
            "run the same command again to resume"
        )
        stop = exc.again(message) if isinstance(exc, Interrupted) else Interrupted(message)
        raise stop from exc


def _join_and_mux(plan: VideoPlan, state: JobState) -> Path:
    """Join the finished segments (no re-encode) and mux every other stream into the output
    (renamed into place when complete). Returns the joined file (inside the work folder)."""
    from vidsr.media.concat import concat_segments
    from vidsr.media.remux import remux

    joined = plan.work_dir / f"joined{state.suffix}"
    concat_segments(state.finished_segments(), joined)
    remux(
        joined,
        plan.input,
        plan.output,
        info=plan.info,
        drop_unsupported=plan.settings.drop_unsupported,
        time_range=plan.source.time_range,
        display_aspect=plan.out_sar * plan.out_width / plan.out_height,
    )
    return joined


def run_job(plan: VideoPlan, executor: Any, *, on_event: EventSink | None = None) -> UpscaleResult:
    """Run (or resume) the job for ``plan`` on ``executor``. See the module docstring."""
    from vidsr.media.concat import count_packets

    emit = on_event or no_sink
    for warning in plan.warnings:
        emit(RunWarning(render(warning)))
    state = open_job_state(plan, executor)
    todo = state.verify(count_packets)
    tasks = [_task(plan, state, c) for c in todo]
    tally = _Tally(plan, state, emit, state.frames_done)
    emit(
        JobStarted(
            input=str(plan.input),
            output=str(plan.output),
            frames=plan.frames,
            frames_done=tally.resumed,
            chunks=len(state.chunks),
            chunks_todo=len(todo),
            model=plan.model,
            work_dir=str(plan.work_dir),
            batch_size=plan.settings.batch_size or "auto",
        )
    )
    try:
        _run_chunks(executor, tasks, tally)
        t0 = time.perf_counter()
        joined = _join_and_mux(plan, state)
    except BaseException:
        if not state.done:  # nothing to keep: leave no work folder behind
            state.remove()
        raise
    tally.stages["encode"].busy_seconds += time.perf_counter() - t0
    frames = state.frames_done
    if plan.settings.keep_work:
        joined.unlink(missing_ok=True)
    else:
        state.remove()
    result = tally.result(frames)
    emit(JobDone(result, tally.resumed))
    return result


def upscale_video(
    settings: Settings,
    input_path: Path,
    *,
    on_event: EventSink | None = None,
    upscaler: Any = None,
) -> UpscaleResult:
    """The whole video run of ``input_path`` with ``settings`` (see the module docstring).
    ``upscaler``: one already built for these settings on their device (one local slot)."""
    from vidsr.pipeline.encoder_process import encoder_pool

    # The encoder process starts first (no torch in it): its start-up overlaps importing
    # torch and loading the model. Worker processes (devices, Ray) start their own.
    with (
        encoder_pool(prestart=runs_in_process(settings)),
        open_executor(settings, upscaler) as executor,
    ):
        plan = prepare(settings, Path(input_path), executor)
        return run_job(plan, executor, on_event=on_event)
