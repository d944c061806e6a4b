"""The command line: click commands -> frozen settings -> library calls.

Every option of ``upscale``, ``batch``, ``bench`` and ``preview`` is built from the option
table (:mod:`vidsr.options`); this module only parses, prints, draws progress bars and maps
errors to one line and an exit code (:mod:`vidsr.errors`). Heavy imports (torch, av) happen
inside commands so that ``vidsr --help`` is instant.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from vidsr.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NOT_USABLE,
    InputError,
    Interrupted,
    Terminated,
    VidsrError,
    spelling,
)
from vidsr.options import Option, options_for
from vidsr.run.events import ChunkDone, Event, Failed, InFile, JobStarted, Progress, RunWarning
from vidsr.settings import Settings, make_settings

# --- options from the table -------------------------------------------------------------------


def _shown_default(option: Option) -> str | None:
    """The default as ``--help`` shows it (None: nothing to show)."""
    d = option.default
    if d is None or d == () or option.kind.flag:
        return None
    if option.kind.name == "size":
        return f"{d[0]}x{d[1]}"
    if isinstance(d, tuple):
        return ",".join(str(v) for v in d)
    return str(d)


def click_option(option: Option) -> Callable[[Any], Any]:
    """The click option for a table entry. Values arrive as text and are read and checked by
    the table (so a bad value gets the same message as from Python or a preset); click's
    default is only shown, never used (options not given keep the table's default)."""
    decls = [option.flag, *([option.short] if option.short else []), option.name]
    if option.kind.flag:
        return click.option(*decls, is_flag=True, default=False, help=option.help)
    metavar = option.metavar or (
        "[" + "|".join(option.choices) + "]" if option.choices else option.kind.metavar
    )
    shown = _shown_default(option)
    return click.option(
        *decls,
        default=None if option.kind.multiple else shown,
        multiple=option.kind.multiple,
        metavar=metavar,
        show_default=shown is not None,
        help=option.help,
    )


def table_options(command: str) -> Callable[[Any], Any]:
    """Decorate a command with every option the table declares for ``command``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options_for(command)):
            func = click_option(option)(func)
        return func

    return decorate


_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)


def settings_from_cli(command: str, opts: dict[str, Any]) -> Settings:
    """``command``'s settings from the options given on this command line (read as text and
    checked by the table), a ``--preset`` filling in below them."""
    from vidsr.options import read_values
    from vidsr.run.presets import with_preset

    ctx = click.get_current_context()
    given = {
        o.name: opts[o.name]
        for o in options_for(command)
        if o.name in opts and ctx.get_parameter_source(o.name) in _GIVEN
    }
    values = read_values(command, given, "cli")
    return make_settings(command, with_preset(values, command), "api")


# --- output -----------------------------------------------------------------------------------


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str))


def _download_bar(desc: str) -> Callable[[int, int], None]:
    """A download progress callback (done_bytes, total_bytes) drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(
                total=total or None, unit="B", unit_scale=True, desc=desc, file=sys.stderr
            )
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    return update


class FrameBar:
    """A tqdm bar on stderr following a job's events (a resumed job starts where it was)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, unit="frame", desc="upscale", file=sys.stderr, dynamic_ncols=True
        )

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunWarning):
            self.bar.write(f"vidsr: warning: {event.message}", file=sys.stderr)
        elif isinstance(event, JobStarted) and event.frames_done:
            self.bar.update(event.frames_done - self.bar.n)
            self.bar.set_postfix_str(f"resumed, {event.chunks_todo} of {event.chunks} chunks to do")
        elif isinstance(event, Progress):
            self.bar.update(event.frames - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _print_summary(result: Any) -> None:
    click.echo(f"{result.input} -> {result.output}", err=True)
    click.echo(
        f"{result.frames} frames in {result.seconds:.1f} s ({result.fps:.2f} fps), "
        f"{result.model} on {result.device} {result.precision}"
        + (f" ({result.runtime})" if result.runtime != "torch" else "")
        + (f", {result.reused:.0%} of tiles reused" if result.reused is not None else "")
        + ", "
        f"batch {result.batch_size}"
        + (f", lanes {result.lanes}" if result.lanes > 1 else "")
        + (
            f", {result.encode_workers} chunks encoded at once" if result.encode_workers > 1 else ""
        ),
        err=True,
    )
    for name, st in result.stages.items():
        fps = f"{st.fps:.1f} fps" if st.busy_seconds > 0 else "-"
        click.echo(f"  {name:<7} {st.busy_seconds:7.2f} s busy  {fps}", err=True)
    click.echo(f"  bound by: {result.bound}", err=True)
    if result.damaged:
        click.echo(f"  damage ({len(result.damaged)}): {result.damaged[0]}", err=True)


# --- upscale ----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidsr")
def cli() -> None:
    """vidsr: video and image super-resolution with the Real-ESRGAN generators."""


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@table_options("upscale")
def upscale(input_path: Path, **opts: Any) -> None:
    """Upscale a video, an image (png, jpg, webp) or a folder of images.

    Without -o the result goes beside the input: a video as STEM.MODEL.xSCALE.mkv, an image
    as STEM.MODEL.xSCALE.EXT, a folder as FOLDER.MODEL.xSCALE/.
    """
    as_json = bool(opts.get("json"))
    try:
        settings = settings_from_cli("upscale", opts)
        if not input_path.exists():
            raise InputError(f"{input_path}: no such file or folder")
        from vidsr.media.image import is_image_path

        if input_path.is_dir():
            _upscale_folder(settings, input_path)
        elif is_image_path(input_path):
            _upscale_image(settings, input_path)
        else:
            _upscale_video(settings, input_path)
    except VidsrError as exc:
        if as_json:
            _echo_json(Failed(str(exc), exc.exit_code).as_dict())
        raise


def _upscale_video(settings: Settings, input_path: Path) -> None:
    from vidsr.pipeline.encoder_process import encoder_pool
    from vidsr.run.job import open_executor, prepare, run_job, runs_in_process

    # The encoder process starts before torch is imported: its start-up overlaps importing
    # torch and loading the model. Worker processes (--devices, --backend ray) start their own.
    prestart = runs_in_process(settings) and not settings.dry_run
    with encoder_pool(prestart=prestart), open_executor(settings) as executor:
        plan = prepare(settings, input_path, executor)
        if settings.dry_run:
            from vidsr.run.plan import format_plan

            click.echo(format_plan(plan))
            return
        sink: Callable[[Event], None] = lambda e: _echo_json(e.as_dict())  # noqa: E731
        bar = None if settings.json else FrameBar(plan.frames)
        try:
            result = run_job(plan, executor, on_event=bar or sink)
        finally:
            if bar is not None:
                bar.close()
    if not settings.json:
        _print_summary(result)


def _upscale_image(settings: Settings, input_path: Path) -> None:
    from vidsr.run.images import upscale_image

    run = upscale_image(settings, input_path, progress=_download_bar(f"download {settings.model}"))
    click.echo(
        f"{input_path} -> {run.output} ({run.width}x{run.height}, {run.model}, "
        f"{run.device}, {run.precision})",
        err=True,
    )


def _upscale_folder(settings: Settings, input_path: Path) -> None:
    from tqdm import tqdm

    from vidsr.run.images import upscale_image_folder

    bar: dict[str, Any] = {}

    def start(count: int) -> None:
        bar["bar"] = tqdm(total=count, unit="img", desc="upscale", file=sys.stderr)

    output, results = upscale_image_folder(
        settings,
        input_path,
        on_start=start,
        on_done=lambda r: bar["bar"].update(1),
        progress=_download_bar(f"download {settings.model}"),
    )
    bar["bar"].close()
    failed = [r for r in results if r.error]
    for r in failed:
        click.echo(f"vidsr: failed: {r.error}", err=True)
    click.echo(f"{len(results) - len(failed)} of {len(results)} images -> {output}", err=True)
    if failed:
        sys.exit(InputError.exit_code)


# --- batch ------------------------------------------------------------------------------------


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUTS...")
@table_options("batch")
def batch(inputs: tuple[str, ...], **opts: Any) -> None:
    """Upscale many videos into -o OUTDIR: files, folders, globs, @LIST.txt.

    Finished outputs are checked (same frame count) and skipped, partial ones resume, a
    failing file is reported and the rest go on. Exit 3 if any file failed, 75 when stopped
    by --max-hours. See docs/BATCH.md.
    """
    from vidsr.batch import format_summary, run_batch

    settings = settings_from_cli("batch", opts)
    passed_over: list[Path] = []
    items = _batch_inputs(settings, inputs, passed_over)
    printer = _BatchPrinter(settings)
    result = run_batch(
        items,
        settings,
        on_event=printer,
        on_plan=None if settings.json else printer.plan,
        passed_over=passed_over,
    )
    if not settings.json:
        click.echo(format_summary(result))
        if result.log_path:
            click.echo(f"log: {result.log_path}", err=True)
    if result.interrupted is not None:
        raise result.interrupted
    if result.exit_code:
        sys.exit(result.exit_code)


def _batch_inputs(settings: Settings, inputs: Sequence[str], passed_over: list[Path]) -> list[Any]:
    """The batch's inputs, in order (files in its folders that are not video go to
    ``passed_over``); a one-line ``UsageError`` when there are none."""
    from vidsr.batch import collect_inputs, order_inputs
    from vidsr.errors import UsageError, opt

    outdir = Path(settings.output)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{opt('output')} {outdir} is a file; batch writes into a folder")
    if not inputs and not settings.from_file:
        raise UsageError("batch needs inputs: files, folders, globs or @LIST.txt")
    items = collect_inputs(
        inputs,
        recursive=settings.recursive,
        from_files=settings.from_file,
        exclude=[outdir],
        passed_over=passed_over,
    )
    if not items:
        raise UsageError(
            f"no input videos found (folders: add {opt('recursive', True)} for sub-folders)"
        )
    return order_inputs(items, settings.order, settings.reverse)


class _BatchPrinter:
    """``vidsr batch``'s output: JSON lines, or a line per file and a bar per job."""

    def __init__(self, settings: Settings) -> None:
        self.as_json = settings.json
        self.bar: FrameBar | None = None

    def __call__(self, event: Event) -> None:
        from vidsr.batch import FileDone, FileStarted

        if self.as_json:
            _echo_json(event.as_dict())
            return
        if isinstance(event, FileStarted):
            n = f"[{event.index + 1}/{event.count}]"
            click.echo(f"{n} {event.file} -> {event.output or '?'}", err=True)
        elif isinstance(event, InFile):
            if isinstance(event.event, RunWarning):
                click.echo(f"  warning: {event.event.message}", err=True)
            if isinstance(event.event, JobStarted):
                self.bar = FrameBar(event.event.frames)
            if self.bar is not None and isinstance(event.event, JobStarted | Progress | ChunkDone):
                self.bar(event.event)
        elif isinstance(event, FileDone):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            rep = event.report
            click.echo(f"  {rep.status}" + (f": {rep.error}" if rep.error else ""), err=True)

    def plan(self, plan: Any) -> None:
        from vidsr.run.plan import format_plan

        click.echo(format_plan(plan))
        click.echo("")


# --- models, presets --------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """List and import models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Every model: architecture, scale, parameters, license, ready offline, cached."""
    from vidsr.models.loader import list_models

    rows = list_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("name", "arch", "scale", "params", "license", "offline", "cached")
    table = [header] + [
        (
            r["name"],
            r["arch"],
            f"x{r['scale']}",
            f"{r['params']:,}",
            r["license"],
            "yes" if r["offline"] else "no",
            "yes" if r["cached"] else "no",
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@models.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Name to register (default: the file's stem).")
def models_import(file: Path, name: str | None) -> None:
    """Import a .pth, .safetensors, .onnx or ncnn .param (+ .bin) file into the model cache
    (also VGG19 weights and Real-ESRGAN discriminators, for vidsr finetune)."""
    from vidsr.ops import import_any_model

    registered = import_any_model(file, name)
    click.echo(f"imported {file} as {registered}; use --model {registered}")


@cli.group()
def finetune() -> None:
    """Fine-tune a Real-ESRGAN generator on your own footage: prepare, train, export."""


@finetune.command("prepare")
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@table_options("finetune_prepare")
def finetune_prepare(sources: tuple[Path, ...], **opts: Any) -> None:
    """Frames from videos or image folders (or --lr/--hr pairs) into a dataset folder."""
    from vidsr.training.data import prepare

    settings = settings_from_cli("finetune_prepare", opts)
    manifest = prepare(list(sources), settings)
    n = len(manifest["items"])
    if settings.json:
        _echo_json({"event": "prepared", "dataset": str(settings.output), "frames": n,
                    "kind": manifest["kind"], "scale": manifest["scale"]})  # fmt: skip
    else:
        click.echo(f"wrote {n} {manifest['kind']} frames to {settings.output}", err=True)


@finetune.command("train")
@click.argument("dataset", type=click.Path(path_type=Path))
@table_options("finetune_train")
def finetune_train(dataset: Path, **opts: Any) -> None:
    """Real-ESRGAN's training recipe on DATASET into the run folder -o RUN (continued when
    it holds this run)."""
    from vidsr.training.train import run_training

    settings = settings_from_cli("finetune_train", opts)
    result = run_training(dataset, settings, _echo_json if settings.json else None)
    if settings.json:
        _echo_json(result)
    else:
        click.echo(f"trained {result['run']} to iteration {result['iter']}", err=True)


@finetune.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@table_options("finetune_export")
def finetune_export(run: Path, **opts: Any) -> None:
    """The run's EMA generator as a named model (vidsr upscale -m NAME) and a file."""
    from vidsr.training.export import export_model

    settings = settings_from_cli("finetune_export", opts)
    result = export_model(run, settings.name, iteration=settings.iter, output=settings.output)
    if settings.json:
        _echo_json(result)
    else:
        click.echo(
            f"exported {run} iteration {result['iteration']} as {result['name']} "
            f"({result['arch']} x{result['scale']}; file {result['file']}); use -m {result['name']}",
            err=True,
        )


@cli.group()
def presets() -> None:
    """List and show presets (bundled, and your own in $VIDSR_HOME/presets)."""


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def presets_list(as_json: bool) -> None:
    """Every preset: name, where it comes from, what it is for."""
    from vidsr.run.presets import available, describe, user_dir

    rows = available()
    if as_json:
        click.echo(json.dumps([describe(p) for p in rows], indent=2))
        return
    width = max((len(p.name) for p in rows), default=4)
    for p in rows:
        source = "user (overrides bundled)" if p.shadows else p.source
        click.echo(f"{p.name:<{width}}  {source:<24}  {p.description}".rstrip())
    click.echo(f"(your own: {user_dir()}/NAME.toml)", err=True)


@presets.command("show")
@click.argument("name", metavar="NAME|FILE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def presets_show(name: str, as_json: bool) -> None:
    """A preset's options (checked), as TOML."""
    from vidsr.run.presets import describe, find_preset, format_value, preset_values

    preset = find_preset(name)
    preset_values(preset)  # refuse unknown keys and bad values here too
    if as_json:
        click.echo(json.dumps(describe(preset), indent=2))
        return
    click.echo(f"# {preset.name}: {preset.source} preset, {preset.path}")
    if preset.shadows:
        click.echo(f"# overrides the bundled {preset.shadows}")
    if preset.description:
        click.echo(f"description = {format_value(preset.description)}")
    for key, value in preset.values.items():
        click.echo(f"{key} = {format_value(value)}")


# --- probe, preview, doctor, bench ------------------------------------------------------------


@cli.command("probe")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--container",
    default=".mkv",
    show_default=True,
    help="Output container to check what can be kept (.mkv, .mp4, .mov, .webm).",
)
@click.option("--codec", default="libx264", show_default=True, help="Output video codec.")
def probe_command(file: Path, as_json: bool, container: str, codec: str) -> None:
    """Streams, exact frame count, VFR, colour, rotation, and what vidsr keeps in a container."""
    from vidsr.ops import format_probe, probe_report

    report = probe_report(file, container, codec)
    click.echo(json.dumps(report, indent=2) if as_json else format_probe(report))


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@table_options("preview")
def preview(file: Path, **opts: Any) -> None:
    """One PNG: the source frame at --at (nearest-neighbour) beside each model's result."""
    from vidsr.ops import make_preview

    settings = settings_from_cli("preview", opts)
    result = make_preview(file, settings)
    click.echo(
        f"{file} frame {result['frame']} ({result['time']:.3f} s) -> {result['output']} "
        f"({result['size'][0]}x{result['size'][1]}, {len(settings.models)} models)",
        err=True,
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check torch and its devices, ffmpeg and its encoders, PyAV, the cache and the models.

    Exit 0 when vidsr can run here, 1 otherwise (with what to do)."""
    from vidsr.ops import doctor_report, format_doctor

    report = doctor_report()
    click.echo(json.dumps(report, indent=2, default=str) if as_json else format_doctor(report))
    if not report["usable"]:
        sys.exit(EXIT_NOT_USABLE)


@cli.command()
@table_options("bench")
def bench(**opts: Any) -> None:
    """Measure decode, model, encode, the pipeline and a serial baseline on a generated clip."""
    from vidsr.bench import format_table, run_bench, write_plot

    settings = settings_from_cli("bench", opts)
    result = run_bench(settings, on_stage=lambda name: click.echo(f"bench: {name}...", err=True))
    if settings.plot is not None:
        write_plot(result, settings.plot)
    click.echo(json.dumps(result) if settings.json else format_table(result))


# --- the entry point --------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("terminated (SIGTERM); the partial output was removed")


def _run(argv: list[str] | None, debug: bool) -> None:
    try:
        cli.main(args=argv, prog_name="vidsr", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns every KeyboardInterrupt (ours included) into Abort: unwrap ours.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Interrupted):
            click.echo(f"vidsr: {cause}", err=True)
            sys.exit(cause.exit_code)
        click.echo("vidsr: interrupted (Ctrl-C)", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        click.echo(f"vidsr: {exc}", err=True)
        sys.exit(exc.exit_code)
    except VidsrError as exc:
        if debug:
            raise
        click.echo(f"vidsr: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("vidsr: interrupted (Ctrl-C); the partial output was removed", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: one line, the traceback on request
        if debug:
            raise
        click.echo(
            f"vidsr: internal error: {type(exc).__name__}: {exc} "
            "(rerun with VIDSR_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors (options spelled as flags) and exit codes, never a
    traceback for a user error. Set VIDSR_DEBUG=1 to see tracebacks."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # unwind (cleanup runs), then exit 143
    with spelling("cli"):
        _run(argv, bool(os.environ.get("VIDSR_DEBUG")))


if __name__ == "__main__":
    main()
