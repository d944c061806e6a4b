"""Batch runs: many videos into one output folder, resumable night after night.

``vidsr batch INPUTS... -o OUTDIR`` takes files, folders (``--recursive``), globs and list files
(``@list.txt`` or ``--from-file``), names each output from a template, keeps each file's folder
relative to the input it was found under, and runs every file as a chunked job
(:func:`vidsr.run.job.run_job`), so:

- a finished output (probed: the same exact frame count as its source) is skipped untouched;
- a partial one (its ``OUTPUT.vidsr-work`` folder exists) resumes from its finished chunks;
- a failing file is reported and the batch goes on; the exit code says whether any failed;
- ``--max-hours`` stops between chunks (state saved), to resume with the same command later;
- before each file the free disk space is checked against an estimate of what it will need.

Every batch writes a log ``OUTDIR/vidsr-batch-YYYYmmdd-HHMMSS.log`` and, with ``--report``, a
JSON report with one entry per input (rewritten after each file, so it is current even if the
batch is killed).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vidsr.errors import (
    EXIT_FILES_FAILED,
    EXIT_INTERNAL,
    EXIT_STOPPED,
    InputError,
    Interrupted,
    OutputError,
    UsageError,
    VidsrError,
    opt,
    render,
)
from vidsr.media.formats import is_video_suffix
from vidsr.run.events import (
    ChunkDone,
    Event,
    EventSink,
    InFile,
    JobStarted,
    RunWarning,
    no_sink,
)
from vidsr.run.plan import WORK_SUFFIX
from vidsr.run.resolve import label_scale
from vidsr.settings import Settings

#: Exit codes (vidsr.errors): any file failed; stopped by --max-hours with nothing failed.
EXIT_FAILED = EXIT_FILES_FAILED
#: Statuses in the report. ``stopped``: begun, state kept, resumes; ``pending``: not begun.
STATUSES = ("ok", "skipped", "failed", "stopped", "pending", "planned")
_MARGIN_BYTES = 64 << 20
# Rough output bits per pixel at each codec's default quality (upscaled video is smooth).
_BITS_PER_PIXEL = {
    "libx264": 0.12,
    "libx265": 0.08,
    "libsvtav1": 0.06,
    "h264_nvenc": 0.15,
    "hevc_nvenc": 0.10,
    "av1_nvenc": 0.08,
}
_LOSSLESS = {"ffv1", "utvideo", "huffyuv", "ffvhuff", "rawvideo"}


class _StopBatch(Exception):
    """Raised from the job's event callback after a chunk when the time is up: ``run_job``
    has already recorded that chunk, so the job resumes from there."""


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchInput:
    """One input: ``source`` as found, ``rel`` its path below the input folder it was found
    in (its output keeps that folder), or ``error`` for an input that named nothing usable."""

    source: Path
    rel: Path
    error: str | None = None


def read_list_file(path: Path) -> list[str]:
    """Entries of a list file: one path, folder or glob per line; blank lines and lines
    starting with ``#`` are ignored; relative entries are relative to the list file's folder."""
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"list file {path}: cannot read it ({exc.strerror or exc})") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(line).expanduser()
        out.append(str(entry if entry.is_absolute() else Path(path).parent / entry))
    return out


def _is_glob(spec: str) -> bool:
    return glob.has_magic(spec)


def _glob_base(spec: str) -> Path:
    """The folder part of a glob before its first wildcard (``shows/**/*.mkv`` -> ``shows``)."""
    parts = Path(spec).parts
    base: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == f or f in resolved.parents for f in folders)


def _walk(
    folder: Path, recursive: bool, exclude: Sequence[Path], passed_over: list[Path]
) -> list[Path]:
    """Video files in ``folder`` (and below, if ``recursive``), skipping hidden entries, job
    work folders and the excluded folders (the output folder); other files go to
    ``passed_over``."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if recursive
            and not d.startswith(".")
            and not d.endswith(WORK_SUFFIX)
            and not _inside(root_path / d, exclude)
        )
        for name in sorted(files):
            p = root_path / name
            if name.startswith("."):
                continue
            (found if is_video_suffix(p.suffix) else passed_over).append(p)
    return found


def collect_inputs(
    specs: Iterable[str],
    *,
    recursive: bool = False,
    from_files: Iterable[Path] = (),
    exclude: Sequence[Path] = (),
    passed_over: list[Path] | None = None,
) -> list[BatchInput]:
    """Expand files, folders, globs and list files (``@list.txt``; ``from_files``) into one
    entry per video, in the order given, each source once. A spec that names nothing is kept
    as an entry with an ``error`` (the batch reports it and goes on). Folders and globs take
    the files the bundled FFmpeg demuxes as video (:mod:`vidsr.media.formats`); the others
    they hold are appended to ``passed_over``, so that the batch can say so."""
    skipped: list[Path] = [] if passed_over is None else passed_over
    expanded: list[str] = []
    for spec in specs:
        if spec.startswith("@") and len(spec) > 1:
            expanded += read_list_file(Path(spec[1:]).expanduser())
        else:
            expanded.append(spec)
    for f in from_files:
        expanded += read_list_file(Path(f))
    excluded = [Path(e).resolve() for e in exclude]
    items: list[BatchInput] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(BatchInput(path, rel))

    for spec in expanded:
        path = Path(spec).expanduser()
        if path.is_dir():
            for p in _walk(path, recursive, excluded, skipped):
                add(p, p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif _is_glob(spec):
            base = _glob_base(spec)
            found = [
                Path(m)
                for m in sorted(glob.glob(spec, recursive=True))
                if Path(m).is_file() and not _inside(Path(m), excluded)
            ]
            matches = [m for m in found if is_video_suffix(m.suffix)]
            skipped += [m for m in found if not is_video_suffix(m.suffix)]
            if not matches:
                items.append(BatchInput(path, Path(path.name), f"{spec}: matches no video file"))
            for m in matches:
                try:
                    rel = m.relative_to(base)
                except ValueError:
                    rel = Path(m.name)
                add(m, rel)
        else:
            items.append(BatchInput(path, Path(path.name), f"{spec}: no such file or folder"))
    return items


def order_inputs(
    items: Sequence[BatchInput], order: str, reverse: bool = False
) -> list[BatchInput]:
    """``name``: by path below its input folder; ``size``: smallest first; ``mtime``: oldest
    first. ``reverse`` flips it. Inputs in error keep their place at the end."""
    good = [i for i in items if i.error is None]
    bad = [i for i in items if i.error is not None]

    def key(item: BatchInput) -> Any:
        if order == "size":
            return (item.source.stat().st_size, str(item.rel))
        if order == "mtime":
            return (item.source.stat().st_mtime_ns, str(item.rel))
        return (str(item.rel).lower(), str(item.rel))

    return sorted(good, key=key, reverse=reverse) + bad


# --- outputs --------------------------------------------------------------------------------


def output_name(template: str, item: BatchInput, *, model: str, scale: float, codec: str) -> Path:
    """The output's path below OUTDIR for ``item``: its folder (``item.rel``'s parent) joined
    with ``template`` filled in (:func:`vidsr.run.naming.template_name`)."""
    from vidsr.run.naming import template_name

    return template_name(template, item.rel, model=model, scale=scale, codec=codec)


def estimate_video_bytes(plan: Any) -> int:
    """A rough size of the new video stream: output pixels x bits per pixel for the codec
    (doubling per 6 crf below the codec's default), or 60% of the raw size when lossless."""
    from vidsr.media.encode import CODEC_DEFAULTS, choose_pix_fmt

    v = plan.info.video
    s = plan.settings
    pixels = plan.out_width * plan.out_height * plan.frames
    if s.codec in _LOSSLESS:
        import av

        fmt = s.pix_fmt or choose_pix_fmt(s.codec, v.pix_fmt, v.bit_depth)
        try:
            raw = av.VideoFormat(fmt).bits_per_pixel
        except Exception:
            raw = 24
        bpp = 0.6 * raw
    else:
        bpp = _BITS_PER_PIXEL.get(s.codec, 0.2)
        defaults = CODEC_DEFAULTS.get(s.codec, {})
        default = defaults.get("crf") or defaults.get("cq")
        if s.crf is not None and default is not None:
            bpp *= 2 ** ((float(default) - float(s.crf)) / 6)
    return int(pixels * bpp / 8)


def _tree_bytes(folder: Path) -> int:
    total = 0
    if folder.is_dir():
        for root, _dirs, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += (Path(root) / name).stat().st_size
    return total


def disk_needed(plan: Any, work_dir: Path) -> int:
    """Bytes a job needs at its peak: the segments, the joined video and the final file
    (video plus the source's other streams) exist together for a moment; segments already in
    ``work_dir`` count as written."""
    video = estimate_video_bytes(plan)
    done = _tree_bytes(work_dir)
    return max(0, 3 * video - done) + Path(plan.input).stat().st_size + _MARGIN_BYTES


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}"


# --- results --------------------------------------------------------------------------------


@dataclass
class FileReport:
    """One input's outcome (one entry of ``--report``)."""

    input: str
    rel: str
    output: str | None = None
    status: str = "pending"
    frames: int = 0
    source_frames: int | None = None
    resumed_frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    size: int | None = None
    error: str | None = None
    exit_code: int | None = None
    damaged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        d["fps"] = round(self.fps, 3)
        return d


@dataclass
class BatchResult:
    files: list[FileReport]
    started: str
    seconds: float = 0.0
    stopped: str | None = None  # "max-hours" | "interrupted" | "fatal"
    log_path: Path | None = None
    interrupted: Interrupted | None = None
    passed_over: list[str] = field(default_factory=list)  # files in folders/globs, not video

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for f in self.files:
            out[f.status] = out.get(f.status, 0) + 1
        return {k: v for k, v in out.items() if v}

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return self.interrupted.exit_code
        if self.stopped == "fatal":  # the model or device: that error's own code
            return next((f.exit_code for f in self.files if f.exit_code), EXIT_FAILED)
        if any(f.status == "failed" for f in self.files):
            return EXIT_FAILED
        if self.stopped:
            return EXIT_STOPPED
        return 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "log": str(self.log_path) if self.log_path else None,
            "passed_over": self.passed_over,
            "files": [f.as_dict() for f in self.files],
        }


def format_summary(result: BatchResult) -> str:
    """The summary table: file, status, frames, time, fps, size, error."""
    header = ("file", "status", "frames", "time", "fps", "size", "error")
    rows = [header]
    for f in result.files:
        if f.status == "planned":
            frames = str(f.source_frames or "-")
        elif f.status == "pending" or (f.status == "failed" and not f.frames):
            frames = "-"
        elif f.source_frames is not None and f.frames != f.source_frames:
            frames = f"{f.frames}/{f.source_frames}"
        else:
            frames = str(f.frames)
        error = (f.error or "").splitlines()[0] if f.error else ""
        if len(error) > 90:
            error = error[:87] + "..."
        rows.append(
            (
                f.rel,
                f.status,
                frames,
                human_seconds(f.seconds) if f.seconds else "-",
                f"{f.fps:.2f}" if f.fps else "-",
                human_bytes(f.size),
                error,
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items())
    if result.passed_over:
        names = ", ".join(Path(p).name for p in result.passed_over[:8])
        more = f" and {len(result.passed_over) - 8} more" if len(result.passed_over) > 8 else ""
        lines.append(f"passed over as not video: {len(result.passed_over)} file(s): {names}{more}")
    tail = f"{len(result.files)} inputs: {counts} in {human_seconds(result.seconds)}"
    if result.stopped == "max-hours":
        tail += render(f"; stopped by {opt('max_hours')}: run the same command again to resume")
    elif result.stopped == "interrupted":
        tail += "; interrupted: run the same command again to resume"
    elif result.stopped == "fatal":
        tail += "; stopped: the model or device cannot be used"
    return "\n".join([*lines, tail])


class BatchLog:
    """``OUTDIR/vidsr-batch-YYYYmmdd-HHMMSS.log``: one timestamped line per event."""

    def __init__(self, outdir: Path) -> None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(100):
            path = outdir / f"vidsr-batch-{stamp}{'' if n == 0 else f'-{n}'}.log"
            try:
                self._f = open(path, "x", encoding="utf-8")  # noqa: SIM115 - closed in close()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover
            raise OutputError(f"cannot create a log file in {outdir}")
        self.path = path

    def write(self, message: str) -> None:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        for line in message.splitlines() or [""]:
            self._f.write(f"{stamp} {line}\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class _NullLog:
    path = None

    def write(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStarted(Event):
    """A batch begins one input (``index`` of ``count``)."""

    kind: ClassVar[str] = "file_start"
    file: str
    index: int
    count: int
    input: str
    output: str | None


@dataclass(frozen=True)
class FileDone(Event):
    """A batch is done with one input: its report entry."""

    kind: ClassVar[str] = "file_done"
    report: FileReport

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "file": self.report.rel, **self.report.as_dict()}


@dataclass(frozen=True)
class BatchDone(Event):
    """The batch ended: its counts and exit code (the report without the files)."""

    kind: ClassVar[str] = "batch_done"
    result: BatchResult

    def as_dict(self) -> dict[str, Any]:
        summary = {k: v for k, v in self.result.as_dict().items() if k != "files"}
        return {"event": self.kind, **summary}


# --- running ---------------------------------------------------------------------------------


def verify_output(output: Path) -> int:
    """The frame count of an existing output (probed); ``OutputError`` if it cannot be read."""
    from vidsr.media.probe import probe

    try:
        return probe(output).video.frame_count
    except InputError as exc:
        raise OutputError(
            f"existing output {output} cannot be read ({exc.template}); pass "
            f"{opt('overwrite', True)} to redo it"
        ) from None


class _Fatal(Exception):
    """The model or device cannot be used: every file would fail the same way."""

    def __init__(self, error: VidsrError) -> None:
        super().__init__(str(error))
        self.error = error


def _fail(rep: FileReport, exc: BaseException) -> None:
    rep.status = "failed"
    if isinstance(exc, VidsrError):
        rep.error, rep.exit_code = str(exc), exc.exit_code
    else:
        rep.error = f"internal error: {type(exc).__name__}: {exc}"
        rep.exit_code = EXIT_INTERNAL


def run_batch(
    items: Sequence[BatchInput],
    settings: Settings,
    *,
    on_event: EventSink | None = None,
    on_plan: Callable[[Any], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    passed_over: Sequence[Path] = (),
) -> BatchResult:
    """Run every input with the batch's ``settings`` (see the module docstring); ``passed_over``
    are the files its folders and globs held that are not video (named in the summary, the
    log and the report). Raises only
    for what every file shares (an unknown model or encoder, an absent device) before any
    file; never for one file's failure. An interrupt (Ctrl-C, SIGTERM) ends the batch with
    the report written and is returned in ``result.interrupted`` for the caller to re-raise.
    ``on_event`` gets each job's events (wrapped in ``InFile``) and ``FileStarted`` /
    ``FileDone`` / ``BatchDone``; ``on_plan`` gets each plan in a dry run; ``clock`` is the
    time ``--max-hours`` counts."""
    batch = _Batch(items, settings, on_event or no_sink, on_plan, clock)
    batch.result.passed_over = [str(p) for p in passed_over]
    return batch.run()


class _Batch:
    """One batch run: its inputs, settings, report and log (:func:`run_batch`)."""

    def __init__(
        self,
        items: Sequence[BatchInput],
        settings: Settings,
        emit: EventSink,
        on_plan: Callable[[Any], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.items = list(items)
        self.settings = settings
        self.resolved = settings
        self.emit = emit
        self.on_plan = on_plan
        self.clock = clock
        self.t_start = time.perf_counter()
        hours = settings.max_hours
        self.deadline = clock() + hours * 3600 if hours else None
        self.outdir = Path(settings.output)
        self.result = BatchResult(
            [FileReport(str(i.source), str(i.rel)) for i in items],
            _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        )
        self.outputs: dict[int, Path] = {}
        self.log: BatchLog | _NullLog = _NullLog()
        self.executor: Any = None
        self.ready = False

    # the whole batch --------------------------------------------------------------------

    def run(self) -> BatchResult:
        from vidsr.pipeline.encoder_process import encoder_pool
        from vidsr.run.job import open_executor
        from vidsr.run.resolve import resolve

        # One encoder process and one executor (one model) serve every file.
        with encoder_pool(), open_executor(self.settings) as executor:
            self.executor = executor
            self.resolved = resolve(self.settings, executor.device_type)
            self._open_log()
            self._plan_outputs()
            try:
                for n, item in enumerate(self.items):
                    if self._time_is_up(item):
                        break
                    self._file(n, item)
                    if self.result.stopped:
                        break
            finally:
                self._save_report()
                self.log.write(format_summary(self.result))
                self.log.close()
        self.emit(BatchDone(self.result))
        return self.result

    def _open_log(self) -> None:
        if not self.settings.dry_run:
            self.outdir.mkdir(parents=True, exist_ok=True)
            self.log = BatchLog(self.outdir)
        self.result.log_path = self.log.path
        s = self.resolved
        self.log.write(
            f"vidsr batch: {len(self.items)} inputs -> {self.outdir}; model {s.model}, "
            f"device {s.device}, codec {s.codec}"
            + (" (by each file's size and bit depth)" if s.codec == "auto" else "")
            + ", "
            f"crf {s.crf if s.crf is not None else 'default'}, name {s.name!r}"
            + (f", max {s.max_hours:g} h" if s.max_hours else "")
        )
        for p in self.result.passed_over:
            self.log.write(f"passed over (not video): {p}")

    def _plan_outputs(self) -> None:
        """Every input's output, before any work: a clash between two inputs is that input's
        failure."""
        s = self.resolved
        owners: dict[Path, str] = {}
        for n, item in enumerate(self.items):
            if item.error:
                continue
            rep = self.result.files[n]
            try:
                codec = self._codec_of(item)
                scale = label_scale(s)
                rel_out = output_name(s.name, item, model=s.model, scale=scale, codec=codec)
            except VidsrError as exc:
                _fail(rep, exc)
                continue
            out = self.outdir / rel_out
            key = out.resolve()
            if key in owners:
                clash = UsageError(
                    f"its output {out} is also the output of {owners[key]}; "
                    f"put {{ext}} or a folder in {opt('name')}"
                )
                _fail(rep, clash)
                continue
            owners[key] = str(item.source)
            self.outputs[n] = out
            rep.output = str(out)

    def _codec_of(self, item: BatchInput) -> str:
        """The codec for ``item``'s name: ``--codec auto`` on CUDA depends on each file's
        output size and bit depth, so the file is probed when the name uses ``{codec}``."""
        s = self.resolved
        if s.codec != "auto" or "{codec}" not in s.name:
            return s.codec
        from vidsr.media.probe import probe
        from vidsr.run.plan import encoder_settings

        return encoder_settings(s, probe(item.source), self.executor.device_type).codec

    def _time_is_up(self, item: BatchInput) -> bool:
        if self.deadline is None or self.clock() < self.deadline:
            return False
        self.result.stopped = "max-hours"
        self.log.write(
            render(
                f"{opt('max_hours')} {self.settings.max_hours:g} reached; "
                f"stopping before {item.rel}"
            )
        )
        return True

    def _save_report(self) -> None:
        from vidsr.files import atomic_write_text

        self.result.seconds = time.perf_counter() - self.t_start
        if self.settings.report:
            text = json.dumps(self.result.as_dict(), indent=1, default=str) + "\n"
            try:
                atomic_write_text(self.settings.report, text)
            except OutputError as exc:
                self.log.write(f"cannot write the report: {exc}")

    # one file -----------------------------------------------------------------------------

    def _file(self, n: int, item: BatchInput) -> None:
        rep = self.result.files[n]
        count = len(self.items)
        self.emit(FileStarted(rep.rel, n, count, rep.input, rep.output))
        if rep.status == "failed":  # its output name clashed or could not be made
            self.log.write(f"[{n + 1}/{count}] {item.source}: FAILED: {rep.error}")
            self.emit(FileDone(rep))
            return
        self.log.write(f"[{n + 1}/{count}] {item.source} -> {rep.output or '?'}")
        t0 = time.perf_counter()
        try:
            if item.error:
                raise InputError(item.error)
            self._one(item, self.outputs[n], rep)
        except BaseException as exc:
            self._record_failure(rep, exc)
        rep.seconds = rep.seconds or time.perf_counter() - t0
        self._log_outcome(rep)
        self.emit(FileDone(rep))
        self._save_report()

    def _record_failure(self, rep: FileReport, exc: BaseException) -> None:
        """How a file's run ended, other than well: stopped, interrupted, or failed."""
        result = self.result
        if isinstance(exc, _StopBatch):
            rep.status = "stopped"
            result.stopped = "max-hours"
            self.log.write(
                render(
                    f"  stopped after {rep.frames} of {rep.source_frames} frames: "
                    f"{opt('max_hours')} {self.settings.max_hours:g} reached; the next run "
                    "resumes here"
                )
            )
        elif isinstance(exc, KeyboardInterrupt):  # Interrupted (Ctrl-C, SIGTERM) is one
            rep.status = "stopped"
            result.stopped = "interrupted"
            stop = exc if isinstance(exc, Interrupted) else Interrupted("interrupted (Ctrl-C)")
            result.interrupted = stop
            rep.error = str(stop)
            self.log.write(f"  interrupted: {stop}")
        elif isinstance(exc, _Fatal):
            _fail(rep, exc.error)
            result.stopped = "fatal"
            self.log.write(f"  FAILED: {rep.error}; stopping the batch (every file would fail)")
        elif isinstance(exc, VidsrError):
            _fail(rep, exc)
            self.log.write(f"  FAILED: {rep.error}")
        elif isinstance(exc, Exception):  # a bug: this file fails, the batch goes on
            _fail(rep, exc)
            self.log.write(f"  FAILED (internal error): {rep.error}\n{traceback.format_exc()}")
        else:
            raise exc

    def _log_outcome(self, rep: FileReport) -> None:
        if rep.status == "ok":
            self.log.write(
                f"  ok: {rep.frames} frames in {human_seconds(rep.seconds)} "
                f"({rep.fps:.2f} fps), {human_bytes(rep.size)}"
                + (f", {rep.resumed_frames} resumed" if rep.resumed_frames else "")
            )
        elif rep.status == "skipped":
            self.log.write(f"  skipped: {rep.error or 'already done'}")

    def _one(self, item: BatchInput, output: Path, rep: FileReport) -> None:
        from vidsr.media.image import is_image_path
        from vidsr.run.job import run_job
        from vidsr.run.plan import plan_video

        if is_image_path(item.source):
            raise InputError(f"{item.source}: an image; batch takes videos (use `vidsr upscale`)")
        if output.exists() and not self.settings.overwrite:
            self._existing(item, output, rep)
            return
        if self.settings.dry_run:
            plan = plan_video(item.source, self.resolved, output=output, **self._where(False))
            rep.source_frames = plan.frames
            if self.on_plan:
                self.on_plan(plan)
            rep.status = "planned"
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        plan = plan_video(
            item.source,
            self.resolved,
            output=output,
            work_dir=self._work_dir(output),
            **self._where(True),
        )
        rep.source_frames = plan.frames
        self._check_disk(plan)
        self._get_ready()
        t0 = time.perf_counter()
        res = run_job(plan, self.executor, on_event=self._job_events(rep))
        rep.seconds = time.perf_counter() - t0
        rep.frames = res.frames
        done_now = res.frames - rep.resumed_frames
        rep.fps = done_now / rep.seconds if rep.seconds > 0 else 0.0
        rep.damaged = [str(d) for d in res.damaged]
        rep.size = output.stat().st_size
        got = verify_output(output)
        if got != plan.frames and not (self.settings.ignore_errors and res.damaged):
            raise OutputError(f"the new output {output} has {got} frames, the source {plan.frames}")
        rep.status, rep.error = "ok", None

    def _existing(self, item: BatchInput, output: Path, rep: FileReport) -> None:
        """An output already there: skipped when complete, refused otherwise (untouched)."""
        from vidsr.media.probe import probe
        from vidsr.run.plan import plan_video

        s = self.resolved
        if s.ivtc or s.deinterlace_rate == "field" or (s.start, s.end, s.duration) != (None,) * 3:
            # the options change the frame count: what a complete output holds is the plan's
            plan = plan_video(item.source, s, output=output, **self._where(False))
            source_frames = plan.frames
        else:
            source_frames = probe(item.source).video.frame_count
        rep.source_frames = source_frames
        frames = verify_output(output)
        rep.frames, rep.size = frames, output.stat().st_size
        if frames == source_frames:
            rep.status, rep.error = "skipped", None
            return
        if self.settings.ignore_errors and 0 < frames < source_frames:
            rep.status = "skipped"
            rep.error = render(
                f"kept: {frames} of {source_frames} frames (damaged source, "
                f"{opt('ignore_errors', True)})"
            )
            return
        raise OutputError(
            f"existing output {output} has {frames} frames, the source {source_frames}; "
            f"pass {opt('overwrite', True)} to redo it"
        )

    def _where(self, check_output: bool) -> dict[str, Any]:
        ex = self.executor
        return {"check_output": check_output, "device": ex.name, "device_type": ex.device_type}

    def _work_dir(self, output: Path) -> Path | None:
        """A job's work folder below the batch's work folder root, if one was given."""
        root = self.settings.work_dir
        if not root:
            return None
        return Path(root) / f"{output.relative_to(self.outdir)}{WORK_SUFFIX}"

    def _check_disk(self, plan: Any) -> None:
        if self.settings.no_disk_check:
            return
        need = disk_needed(plan, plan.work_dir)
        free = shutil.disk_usage(plan.output.parent).free
        if free < need:
            raise OutputError(
                f"not enough free disk space in {plan.output.parent}: this file needs about "
                f"{human_bytes(need)} (estimate), {human_bytes(free)} free"
            )

    def _get_ready(self) -> None:
        """Load the model once, before the first job: if it cannot be loaded, every file would
        fail the same way."""
        from vidsr.run.job import weights_digest_for

        if self.ready:
            return
        try:
            weights_digest_for(self.executor, self.resolved)
        except VidsrError as exc:
            raise _Fatal(exc) from exc
        self.ready = True

    def _job_events(self, rep: FileReport) -> EventSink:
        """The job's event sink: the batch's ``on_event`` (events wrapped with the file),
        the log, and the ``--max-hours`` stop after a chunk."""
        progress = {"todo": 0, "done": 0}

        def on_job_event(event: Event) -> None:
            if isinstance(event, RunWarning):
                self.log.write(f"  warning: {event.message}")
            if isinstance(event, JobStarted):
                progress["todo"] = event.chunks_todo
                rep.resumed_frames = rep.frames = event.frames_done
                if rep.resumed_frames:
                    self.log.write(
                        f"  resuming: {rep.resumed_frames} of {event.frames} frames done, "
                        f"{progress['todo']} of {event.chunks} chunks to do"
                    )
            self.emit(InFile(rep.rel, event))
            if isinstance(event, ChunkDone):
                progress["done"] += 1
                rep.frames += event.frames
                self.log.write(
                    f"  chunk {event.index} done: frames {event.start}-{event.end} ({event.worker})"
                )
                more = progress["done"] < progress["todo"]
                if self.deadline is not None and more and self.clock() >= self.deadline:
                    raise _StopBatch()

        return on_job_event
