"""Batch runs: many videos into one output folder, resumable night after night.

``vidsr batch INPUTS... -o OUTDIR`` takes files, folders (``--recursive``), globs and list files
(``@list.txt`` or ``--from-file``), names each output from a template, keeps each file's folder
relative to the input it was found under, and runs every file as a chunked job
(:func:`vidsr.jobs.runner.run_job`), so:

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vidsr.errors import InputError, Interrupted, OutputError, UsageError, VidsrError

#: What a folder or glob yields (an explicitly named file is taken whatever its suffix).
VIDEO_SUFFIXES = frozenset(
    {
        ".mkv",
        ".mp4",
        ".m4v",
        ".mov",
        ".webm",
        ".avi",
        ".ts",
        ".m2ts",
        ".mts",
        ".mpg",
        ".mpeg",
        ".vob",
        ".flv",
        ".wmv",
        ".ogv",
        ".3gp",
        ".y4m",
    }
)
DEFAULT_NAME = "{stem}.{model}.x{scale}.mkv"
NAME_FIELDS = ("stem", "name", "ext", "model", "scale", "codec")
ORDERS = ("name", "size", "mtime")
#: Exit codes: any file failed; stopped by --max-hours with nothing failed (EX_TEMPFAIL).
EXIT_FAILED = 3
EXIT_STOPPED = 75
#: Statuses in the report. ``stopped``: begun, state kept, resumes; ``pending``: not begun.
STATUSES = ("ok", "skipped", "failed", "stopped", "pending", "planned")
_WORK_SUFFIX = ".vidsr-work"
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


def _walk(folder: Path, recursive: bool, exclude: Sequence[Path]) -> list[Path]:
    """Video files in ``folder`` (and below, if ``recursive``), skipping hidden entries, job
    work folders and the excluded folders (the output folder)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if recursive
            and not d.startswith(".")
            and not d.endswith(_WORK_SUFFIX)
            and not _inside(root_path / d, exclude)
        )
        for name in sorted(files):
            p = root_path / name
            if name.startswith(".") or p.suffix.lower() not in VIDEO_SUFFIXES:
                continue
            found.append(p)
    return found


def collect_inputs(
    specs: Iterable[str],
    *,
    recursive: bool = False,
    from_files: Iterable[Path] = (),
    exclude: Sequence[Path] = (),
) -> list[BatchInput]:
    """Expand files, folders, globs and list files (``@list.txt``; ``from_files``) into one
    entry per video, in the order given, each source once. A spec that names nothing is kept
    as an entry with an ``error`` (the batch reports it and goes on)."""
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
            for p in _walk(path, recursive, excluded):
                add(p, p.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif _is_glob(spec):
            base = _glob_base(spec)
            matches = [
                Path(m)
                for m in sorted(glob.glob(spec, recursive=True))
                if Path(m).is_file()
                and Path(m).suffix.lower() in VIDEO_SUFFIXES
                and not _inside(Path(m), excluded)
            ]
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
    if order not in ORDERS:
        raise UsageError(f"--order must be one of {', '.join(ORDERS)}, not {order!r}")
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


def _label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def model_label(model: str) -> str:
    p = Path(model)
    return p.stem if p.suffix.lower() in (".pth", ".pt", ".safetensors", ".param") else model


def output_name(template: str, item: BatchInput, *, model: str, scale: float, codec: str) -> Path:
    """The output's path below OUTDIR: the input's folder (``item.rel``'s parent) joined with
    ``template`` filled in. Fields: ``{stem}`` ``{name}`` ``{ext}`` (no dot) ``{model}``
    ``{scale}`` ``{codec}``. ``UsageError`` for an unknown field, a name that leaves OUTDIR,
    or a container vidsr cannot write."""
    from vidsr.media.remux import SUPPORTED_SUFFIXES

    rel = item.rel
    fields = {
        "stem": rel.stem,
        "name": rel.name,
        "ext": rel.suffix.lstrip("."),
        "model": model_label(model),
        "scale": _label(scale),
        "codec": codec,
    }
    try:
        name = template.format_map(fields)
    except KeyError as exc:
        raise UsageError(
            f"--name: unknown field {{{exc.args[0]}}}; use {', '.join('{' + f + '}' for f in NAME_FIELDS)}"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise UsageError(f"--name {template!r}: {exc}") from None
    out = rel.parent / name
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise UsageError(f"--name must give a relative file name inside OUTDIR, not {name!r}")
    if out.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UsageError(
            f"--name gives {out.name!r}: the output must end in one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    return out


def estimate_video_bytes(plan: Any) -> int:
    """A rough size of the new video stream: output pixels x bits per pixel for the codec
    (doubling per 6 crf below the codec's default), or 60% of the raw size when lossless."""
    from vidsr.media.encode import CODEC_DEFAULTS, choose_pix_fmt

    v = plan.info.video
    enc = plan.encode
    pixels = plan.out_width * plan.out_height * plan.frames
    if enc.codec in _LOSSLESS:
        import av

        fmt = enc.pix_fmt or choose_pix_fmt(enc.codec, v.pix_fmt, v.bit_depth)
        try:
            raw = av.VideoFormat(fmt).bits_per_pixel
        except Exception:
            raw = 24
        bpp = 0.6 * raw
    else:
        bpp = _BITS_PER_PIXEL.get(enc.codec, 0.2)
        default = CODEC_DEFAULTS.get(enc.codec, {}).get("crf") or CODEC_DEFAULTS.get(
            enc.codec, {}
        ).get("cq")
        if enc.crf is not None and default is not None:
            bpp *= 2 ** ((float(default) - float(enc.crf)) / 6)
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
    tail = f"{len(result.files)} inputs: {counts} in {human_seconds(result.seconds)}"
    if result.stopped == "max-hours":
        tail += "; stopped by --max-hours: run the same command again to resume"
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


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    """Everything a batch needs besides its inputs. ``config``: InferConfig; ``encode``:
    EncodeConfig; ``job``: JobOptions (its ``work_dir``, if set, is a root under which each
    job gets ``REL/OUTPUT.vidsr-work``)."""

    outdir: Path
    config: Any
    encode: Any
    job: Any
    name: str = DEFAULT_NAME
    overwrite: bool = False
    batch_size: int = 0
    ignore_errors: bool = False
    dry_run: bool = False
    max_hours: float | None = None
    report: Path | None = None
    check_disk: bool = True


def _output_scale(config: Any) -> float:
    from vidsr.models.loader import expected_scale

    return float(config.scale) if config.scale else float(expected_scale(config.model))


def _single_slot(job: Any, config: Any) -> str | None:
    """The one device a job runs on in this process (so one upscaler can serve every file of
    the batch), or None when it runs in worker processes or on Ray."""
    devices = [d.strip() for d in job.devices if d.strip()]
    if job.backend != "local" or job.workers_per_device != 1 or len(devices) > 1:
        return None
    if devices and devices[0].lower() == "all":
        return None
    return devices[0] if devices else config.device


def verify_output(output: Path, source_frames: int) -> int:
    """The frame count of an existing output (probed); ``InputError`` if it cannot be read."""
    from vidsr.media.probe import probe

    try:
        return probe(output).video.frame_count
    except InputError as exc:
        raise OutputError(
            f"existing output {output} cannot be read ({exc}); pass --overwrite to redo it"
        ) from None


def run_batch(
    items: Sequence[BatchInput],
    settings: BatchSettings,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_plan: Callable[[Any], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BatchResult:
    """Run every input (see the module docstring). Never raises for one file's failure; an
    interrupt (Ctrl-C, SIGTERM) ends the batch with the report written and is returned in
    ``result.interrupted`` for the caller to re-raise. ``on_event`` gets each job's events
    (with ``file``) and ``file_start`` / ``file_done`` / ``batch_done``; ``on_plan`` gets each
    plan in a dry run."""
    from vidsr.files import atomic_write_text

    emit = on_event or (lambda e: None)
    t_start = time.perf_counter()
    deadline = clock() + settings.max_hours * 3600 if settings.max_hours else None
    outdir = Path(settings.outdir)
    result = BatchResult(
        [FileReport(str(i.source), str(i.rel)) for i in items],
        _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    if not settings.dry_run:
        outdir.mkdir(parents=True, exist_ok=True)
        log: BatchLog | _NullLog = BatchLog(outdir)
    else:
        log = _NullLog()
    result.log_path = log.path
    cfg, enc = settings.config, settings.encode
    log.write(
        f"vidsr batch: {len(items)} inputs -> {outdir}; model {cfg.model}, device {cfg.device}, "
        f"codec {enc.codec}, crf {enc.crf if enc.crf is not None else 'default'}, "
        f"name {settings.name!r}"
        + (f", max {settings.max_hours:g} h" if settings.max_hours else "")
    )
    scale = _output_scale(cfg)
    state: dict[str, Any] = {"upscaler": None}

    # Outputs first: a clash between two inputs is that input's failure, found before any work.
    outputs: dict[int, Path] = {}
    owners: dict[Path, str] = {}
    for n, item in enumerate(items):
        if item.error:
            continue
        try:
            rel_out = output_name(
                settings.name, item, model=cfg.model, scale=scale, codec=enc.codec
            )
        except UsageError as exc:
            _fail(result.files[n], exc)
            continue
        out = outdir / rel_out
        key = out.resolve()
        if key in owners:
            _fail(
                result.files[n],
                UsageError(
                    f"its output {out} is also the output of {owners[key]}; "
                    "put {ext} or a folder in --name"
                ),
            )
            continue
        owners[key] = str(item.source)
        outputs[n] = out
        result.files[n].output = str(out)

    def save_report() -> None:
        result.seconds = time.perf_counter() - t_start
        if settings.report:
            text = json.dumps(result.as_dict(), indent=1, default=str) + "\n"
            try:
                atomic_write_text(settings.report, text)
            except OutputError as exc:
                log.write(f"cannot write the report: {exc}")

    # One encoder process serves every file (it is started once, not per file or chunk).
    from vidsr.pipeline.encoder_process import encoder_pool

    pool = contextlib.ExitStack()
    pool.enter_context(encoder_pool())
    try:
        for n, item in enumerate(items):
            rep = result.files[n]
            if result.stopped:
                break
            if deadline is not None and clock() >= deadline:
                result.stopped = "max-hours"
                log.write(f"--max-hours {settings.max_hours:g} reached; stopping before {item.rel}")
                break
            emit(
                {
                    "event": "file_start",
                    "file": rep.rel,
                    "index": n,
                    "count": len(items),
                    "input": rep.input,
                    "output": rep.output,
                }
            )
            if rep.status == "failed":  # its output name clashed or could not be made
                log.write(f"[{n + 1}/{len(items)}] {item.source}: FAILED: {rep.error}")
                emit({"event": "file_done", "file": rep.rel, **rep.as_dict()})
                continue
            log.write(f"[{n + 1}/{len(items)}] {item.source} -> {rep.output or '?'}")
            t0 = time.perf_counter()
            try:
                if item.error:
                    raise InputError(item.error)
                _run_one(
                    item, outputs[n], rep, settings, state, log, emit, on_plan, clock, deadline
                )
            except _StopBatch:
                rep.status = "stopped"
                result.stopped = "max-hours"
                log.write(
                    f"  stopped after {rep.frames} of {rep.source_frames} frames: --max-hours "
                    f"{settings.max_hours:g} reached; the next run resumes here"
                )
            except KeyboardInterrupt as exc:  # Interrupted (Ctrl-C, SIGTERM) is one
                rep.status = "stopped"
                result.stopped = "interrupted"
                stop = exc if isinstance(exc, Interrupted) else Interrupted("interrupted (Ctrl-C)")
                result.interrupted = stop
                rep.error = str(stop)
                log.write(f"  interrupted: {stop}")
            except _Fatal as exc:
                _fail(rep, exc.error)
                result.stopped = "fatal"
                log.write(f"  FAILED: {rep.error}; stopping the batch (every file would fail)")
            except VidsrError as exc:
                _fail(rep, exc)
                log.write(f"  FAILED: {rep.error}")
            except Exception as exc:  # a bug: this file fails, the batch goes on
                _fail(rep, exc)
                log.write(f"  FAILED (internal error): {rep.error}\n{traceback.format_exc()}")
            rep.seconds = rep.seconds or time.perf_counter() - t0
            if rep.status == "ok":
                log.write(
                    f"  ok: {rep.frames} frames in {human_seconds(rep.seconds)} "
                    f"({rep.fps:.2f} fps), {human_bytes(rep.size)}"
                    + (f", {rep.resumed_frames} resumed" if rep.resumed_frames else "")
                )
            elif rep.status == "skipped":
                log.write(f"  skipped: {rep.error or 'already done'}")
            emit({"event": "file_done", "file": rep.rel, **rep.as_dict()})
            save_report()
    finally:
        pool.close()
        result.seconds = time.perf_counter() - t_start
        save_report()
        log.write(format_summary(result))
        log.close()
    emit({"event": "batch_done", **{k: v for k, v in result.as_dict().items() if k != "files"}})
    return result


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
        rep.error, rep.exit_code = f"internal error: {type(exc).__name__}: {exc}", 70


def _run_one(
    item: BatchInput,
    output: Path,
    rep: FileReport,
    settings: BatchSettings,
    state: dict[str, Any],
    log: Any,
    emit: Callable[[dict[str, Any]], None],
    on_plan: Callable[[Any], None] | None,
    clock: Callable[[], float],
    deadline: float | None,
) -> None:
    import tempfile

    from vidsr.jobs.runner import run_job
    from vidsr.jobs.state import default_work_dir
    from vidsr.media.image import is_image_path
    from vidsr.pipeline.video import plan_video

    cfg = settings.config
    if is_image_path(item.source):
        raise InputError(f"{item.source}: an image; batch takes videos (use `vidsr upscale`)")
    if output.exists() and not settings.overwrite:
        from vidsr.media.probe import probe

        source_frames = probe(item.source).video.frame_count
        rep.source_frames = source_frames
        frames = verify_output(output, source_frames)
        rep.frames, rep.size = frames, output.stat().st_size
        if frames == source_frames:
            rep.status, rep.error = "skipped", None
            return
        if settings.ignore_errors and 0 < frames < source_frames:
            rep.status = "skipped"
            rep.error = (
                f"kept: {frames} of {source_frames} frames (damaged source, --ignore-errors)"
            )
            return
        raise OutputError(
            f"existing output {output} has {frames} frames, the source {source_frames}; "
            "pass --overwrite to redo it"
        )
    plan_args = {
        "model": cfg.model,
        "scale": cfg.scale,
        "encode": settings.encode,
        "overwrite": settings.overwrite,
    }
    if settings.dry_run:  # plan against a scratch folder: a dry run creates nothing
        with tempfile.TemporaryDirectory() as scratch:
            plan = plan_video(item.source, Path(scratch) / output.name, **plan_args)
        plan.output = output
        rep.source_frames = plan.frames
        if on_plan:
            on_plan(plan)
        rep.status = "planned"
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_video(item.source, output, **plan_args)
    rep.source_frames = plan.frames
    job = settings.job
    if job.work_dir:
        rel_out = output.relative_to(settings.outdir)
        job = replace(job, work_dir=Path(job.work_dir) / f"{rel_out}{_WORK_SUFFIX}")
    work_dir = Path(job.work_dir) if job.work_dir else default_work_dir(output)
    if settings.check_disk:
        need = disk_needed(plan, work_dir)
        free = shutil.disk_usage(output.parent).free
        if free < need:
            raise OutputError(
                f"not enough free disk space in {output.parent}: this file needs about "
                f"{human_bytes(need)} (estimate), {human_bytes(free)} free"
            )
    upscaler = None
    device = _single_slot(job, cfg)
    if device is not None:  # built once, on the device run_job would use, for every file
        if state["upscaler"] is None:
            from vidsr.pipeline.infer import build_upscaler

            try:
                state["upscaler"] = build_upscaler(replace(cfg, device=device))
            except VidsrError as exc:
                raise _Fatal(exc) from exc
        upscaler = state["upscaler"]
    progress = {"todo": 0, "done": 0}

    def on_job_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            progress["todo"] = event.get("chunks_todo", 0)
            rep.resumed_frames = rep.frames = event.get("frames_done", 0)
            if rep.resumed_frames:
                log.write(
                    f"  resuming: {rep.resumed_frames} of {event.get('frames')} frames done, "
                    f"{progress['todo']} of {event.get('chunks')} chunks to do"
                )
        emit({**event, "file": rep.rel})
        if kind == "chunk_done":
            progress["done"] += 1
            rep.frames += event.get("frames", 0)
            log.write(
                f"  chunk {event.get('index')} done: frames {event.get('start')}-"
                f"{event.get('end')} ({event.get('worker')})"
            )
            if deadline is not None and progress["done"] < progress["todo"] and clock() >= deadline:
                raise _StopBatch()

    t0 = time.perf_counter()
    res = run_job(
        plan,
        cfg,
        job,
        upscaler=upscaler,
        batch_size=settings.batch_size,
        ignore_errors=settings.ignore_errors,
        on_event=on_job_event,
    )
    rep.seconds = time.perf_counter() - t0
    rep.frames = res.frames
    done_now = res.frames - rep.resumed_frames
    rep.fps = done_now / rep.seconds if rep.seconds > 0 else 0.0
    rep.damaged = [str(d) for d in res.damaged]
    rep.size = output.stat().st_size
    got = verify_output(output, plan.frames)
    if got != plan.frames and not (settings.ignore_errors and res.damaged):
        raise OutputError(f"the new output {output} has {got} frames, the source {plan.frames}")
    rep.status, rep.error = "ok", None
