"""A whole job: plan chunks, resume from the work folder, run the pending chunks on an
executor, join the segments without re-encoding, mux every other stream from the source,
rename into place, and clear the work folder.

Only this driver writes ``job.json``; workers only write segments.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidsr.config import InferConfig
from vidsr.errors import Interrupted, UsageError
from vidsr.jobs.chunk import ChunkResult, ChunkTask
from vidsr.jobs.plan import plan_chunks
from vidsr.jobs.state import JobState, default_work_dir, settings_fingerprint
from vidsr.media.remux import MP4_SUFFIXES
from vidsr.pipeline.stages import StageStats
from vidsr.pipeline.video import UpscaleResult, VideoPlan

EventSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class JobOptions:
    """Chunking, resume and placement options."""

    work_dir: Path | None = None
    chunk_frames: int | None = None
    chunk_seconds: float | None = None
    restart: bool = False
    keep_work: bool = False
    devices: tuple[str, ...] = ()
    workers_per_device: int = 1
    encode_workers: int = 0  # in-process runs: chunks encoded at once (0 = auto)
    backend: str = "local"
    ray_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _segment_suffix(output: Path) -> str:
    # mkv stores times in ms; an mp4 output keeps finer source times through mp4 segments.
    return ".mp4" if output.suffix.lower() in MP4_SUFFIXES else ".mkv"


def _remove_stale_temps(output: Path) -> None:
    """Temporary files of an earlier, killed run for this output (ours by their pattern)."""
    pattern = re.compile(rf"^\.{re.escape(output.stem)}\.[^.]+\.part{re.escape(output.suffix)}$")
    for p in output.parent.iterdir():
        if pattern.match(p.name):
            p.unlink(missing_ok=True)


def make_executor(config: InferConfig, options: JobOptions, upscaler: Any = None) -> Any:
    from vidsr.jobs.local import InProcessExecutor, ProcessPoolExecutor, expand_devices

    if options.backend == "ray":
        from vidsr.jobs.ray_executor import RayExecutor

        return RayExecutor(config, options)
    if options.backend != "local":
        raise UsageError(f"unknown backend {options.backend!r}; use local or ray")
    slots = expand_devices(options.devices or (config.device,), options.workers_per_device)
    if len(slots) == 1:
        from dataclasses import replace

        return InProcessExecutor(
            replace(config, device=slots[0]), upscaler, encode_workers=options.encode_workers
        )
    return ProcessPoolExecutor(config, slots)


def run_job(
    plan: VideoPlan,
    config: InferConfig,
    options: JobOptions | None = None,
    *,
    upscaler: Any = None,
    batch_size: int = 0,
    ignore_errors: bool = False,
    on_event: EventSink | None = None,
) -> UpscaleResult:
    """Run (or resume) the job for ``plan``. See the module docstring."""
    from vidsr.jobs.local import InProcessExecutor
    from vidsr.media.concat import concat_segments, count_packets
    from vidsr.media.remux import remux
    from vidsr.pipeline.encoder_process import encoder_pool

    options = options or JobOptions()
    emit = on_event or (lambda e: None)
    info, v = plan.info, plan.info.video
    work_dir = Path(options.work_dir) if options.work_dir else default_work_dir(plan.output)
    chunks = plan_chunks(
        v.frame_pts,
        v.time_base,
        chunk_frames=options.chunk_frames,
        chunk_seconds=options.chunk_seconds,
    )
    settings = settings_fingerprint(
        model=config.model,
        denoise_strength=config.denoise_strength,
        scale=plan.scale,
        precision=config.precision,
        tile=config.tile,
        tile_pad=config.tile_pad,
        width=plan.out_width,
        height=plan.out_height,
        chunk_frames=options.chunk_frames,
        chunk_seconds=options.chunk_seconds,
        ignore_errors=ignore_errors,
        **{f"encode_{k}": val for k, val in plan.encode.encoder_kwargs().items()},
    )
    if options.encode_workers < 0:
        raise UsageError("--encode-workers must be 0 (auto) or positive")
    executor = make_executor(config, options, upscaler)  # refuse a missing backend first
    _remove_stale_temps(plan.output)
    state = JobState.open(
        work_dir, source_path=plan.input, settings=settings, chunks=chunks, restart=options.restart
    )
    todo = state.verify(count_packets)
    suffix = _segment_suffix(plan.output)
    tasks = [
        ChunkTask(
            plan.input,
            state.segment_path(c),
            c,
            info,
            plan.out_width,
            plan.out_height,
            plan.encode.encoder_kwargs(),
            batch_size,
            ignore_errors,
        )
        for c in todo
    ]
    resumed = state.frames_done
    emit(
        {
            "event": "start",
            "input": str(plan.input),
            "output": str(plan.output),
            "frames": plan.frames,
            "frames_done": resumed,
            "chunks": len(state.chunks),
            "chunks_todo": len(todo),
            "model": plan.model,
            "work_dir": str(work_dir),
            "batch_size": batch_size or "auto",
        }
    )
    t_start = time.perf_counter()
    stages = {n: StageStats(n) for n in ("decode", "infer", "encode")}
    done_frames = resumed
    damaged: list[str] = []
    workers: set[str] = set()
    used: dict[str, Any] = {}  # precision and batch size the chunks actually ran with

    def on_frames(index: int, n: int) -> None:
        nonlocal done_frames
        done_frames += n
        elapsed = time.perf_counter() - t_start
        emit(
            {
                "event": "progress",
                "frames": done_frames,
                "total": plan.frames,
                "fps": round((done_frames - resumed) / elapsed, 3) if elapsed > 0 else None,
            }
        )

    def on_done(res: ChunkResult) -> None:
        chunk = state.chunks[res.index]
        state.mark_done(chunk, res.frames, state.segment_path(chunk))
        for name, (frames, busy) in res.stages.items():
            stages[name].frames += frames
            stages[name].busy_seconds += busy
        damaged.extend(res.damaged)
        workers.add(res.worker)
        used.setdefault("precision", res.precision)
        used.setdefault("batch_size", res.batch_size)
        used.setdefault("lanes", res.lanes)
        used["encode_workers"] = max(used.get("encode_workers", 1), res.encode_workers)
        emit(
            {
                "event": "chunk_done",
                "index": res.index,
                "start": chunk.start,
                "end": chunk.end,
                "frames": res.frames,
                "worker": res.worker,
            }
        )

    try:
        try:
            # Chunks run here share one encoder process, started now so that its start-up
            # overlaps loading the model; worker processes keep their own.
            in_process = isinstance(executor, InProcessExecutor)
            with encoder_pool(prestart=in_process and bool(tasks)):
                executor.run(tasks, on_frames, on_done)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (an Interrupted, exit 143)
            stopped = Interrupted(
                f"stopped after {len(state.done)} of {len(state.chunks)} chunks; "
                "run the same command again to resume"
            )
            stopped.exit_code = getattr(exc, "exit_code", 130)
            raise stopped from exc
        t0 = time.perf_counter()
        joined = work_dir / f"joined{suffix}"
        concat_segments(
            [state.segment_path(c) for c in state.chunks if c.index in state.done], joined
        )
        remux(joined, plan.input, plan.output, info=info)
    except BaseException:
        if not state.done:  # nothing to keep: leave no work folder behind
            state.remove()
        raise
    stages["encode"].busy_seconds += time.perf_counter() - t0
    frames = state.frames_done
    if not options.keep_work:
        state.remove()
    else:
        joined.unlink(missing_ok=True)
    device = ",".join(sorted(workers)) or "none (resumed)"
    precision = used.get("precision") or getattr(upscaler, "precision_name", config.precision)
    result = UpscaleResult(
        plan.input,
        plan.output,
        frames,
        time.perf_counter() - t_start,
        stages,
        plan.model,
        device,
        precision,
        used.get("batch_size", batch_size),
        damaged,
        lanes=used.get("lanes", 1),
        encode_workers=used.get("encode_workers", 1),
    )
    emit({"event": "done", **result.as_dict(), "resumed_frames": resumed})
    return result


def upscale_video(
    plan: VideoPlan,
    upscaler: Any,
    *,
    options: JobOptions | None = None,
    batch_size: int = 0,
    ignore_errors: bool = False,
    on_event: EventSink | None = None,
) -> UpscaleResult:
    """Run ``plan`` in this process with an ``Upscaler`` already built (a job like any other:
    chunked, resumable, its work folder removed after success)."""
    config = InferConfig(
        model=plan.model,
        device=str(upscaler.device),
        precision=upscaler.precision_name,
        tile=upscaler.tile,
        tile_pad=upscaler.tile_pad,
        scale=plan.scale,
    )
    return run_job(
        plan,
        config,
        options,
        upscaler=upscaler,
        batch_size=batch_size,
        ignore_errors=ignore_errors,
        on_event=on_event,
    )
