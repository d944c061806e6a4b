"""The command line: click commands -> frozen config -> library calls.

This module owns progress bars and exit codes; the work is done in the library. Heavy
imports (torch, av) happen inside commands so that ``vidsr --help`` is instant.
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

from vidsr.batch import DEFAULT_NAME, ORDERS
from vidsr.config import SWITCH
from vidsr.errors import InputError, Interrupted, UsageError, VidsrError
from vidsr.presets import apply_preset, preset_option

EXIT_INTERNAL = 70


def _progress_bar(desc: str) -> Callable[[int, int], None]:
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


def infer_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every processing command shares."""
    options = [
        click.option(
            "--model",
            "-m",
            default="realesr-animevideov3",
            show_default=True,
            help="Registry name (see `vidsr models list`), imported name, or a "
            ".pth/.safetensors/.param file.",
        ),
        click.option(
            "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N."
        ),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
            default="auto",
            show_default=True,
            help="auto = fp16 on CUDA, fp32 on CPU. fp16 on CPU is refused.",
        ),
        click.option(
            "--tile",
            type=int,
            default=0,
            show_default=True,
            help="Tile edge in input pixels (0 = whole frame).",
        ),
        click.option(
            "--tile-pad",
            type=int,
            default=10,
            show_default=True,
            help="Context pixels around each tile.",
        ),
        click.option(
            "--scale",
            "-s",
            type=float,
            default=None,
            help="Final scale factor (default: the model's own).",
        ),
        click.option(
            "--denoise-strength",
            type=float,
            default=None,
            help="realesr-general-x4v3 only: 0 keeps noise, 1 removes it "
            "(default 0.5, as Real-ESRGAN).",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Path(path_type=Path),
            default=None,
            help="Output file (or folder for a folder input).",
        ),
        click.option("--overwrite", is_flag=True, help="Replace an existing output."),
        click.option(
            "--compile",
            "use_compile",
            is_flag=True,
            help="torch.compile the model (compiles on the first frames; see docs/BENCHMARKS.md).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _infer_config(opts: dict[str, Any]):  # -> InferConfig (lazy import)
    from vidsr.config import InferConfig

    return InferConfig(
        model=opts["model"],
        device=opts["device"],
        precision=opts["precision"],
        tile=opts["tile"],
        tile_pad=opts["tile_pad"],
        scale=opts["scale"],
        denoise_strength=opts["denoise_strength"],
        lanes=opts.get("lanes", 0),
        device_colour=opts.get("device_colour", "auto"),
        compile=opts.get("use_compile", False),
        hw_decode=opts.get("hw_decode", "off"),
    )


def _scale_label(scale: float) -> str:
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


def _model_label(model: str) -> str:
    p = Path(model)
    return p.stem if p.suffix.lower() in (".pth", ".pt", ".safetensors", ".param") else model


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidsr")
def cli() -> None:
    """vidsr: video and image super-resolution with the Real-ESRGAN generators."""


def _switch(flag: str, help: str, default: str = "auto") -> Callable[..., Any]:
    """An auto/on/off option (:data:`vidsr.config.SWITCH`)."""
    return click.option(
        flag, type=click.Choice(list(SWITCH)), default=default, show_default=True, help=help
    )


def video_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Encoding and pipeline options for video inputs."""
    options = [
        click.option(
            "--codec",
            default="libx264",
            show_default=True,
            help="libx264, libx265, libsvtav1, h264_nvenc, hevc_nvenc, ffv1 (lossless), or auto "
            "(h264_nvenc with CUDA where it opens, else libx264).",
        ),
        click.option(
            "--crf", type=float, default=None, help="Quality (lower is better); default per codec."
        ),
        click.option("--encoder-preset", default=None, help="Encoder speed preset."),
        click.option(
            "--pix-fmt",
            default=None,
            help="Output pixel format (default: the source's bit depth, 4:2:0).",
        ),
        click.option(
            "--encoder-opt",
            multiple=True,
            metavar="KEY=VALUE",
            help="Passed to the encoder; repeatable.",
        ),
        click.option(
            "--batch-size",
            type=int,
            default=0,
            show_default=True,
            help="Frames per model call (0 = auto).",
        ),
        click.option(
            "--lanes",
            type=int,
            default=0,
            show_default=True,
            help="CPU only: batches run at once, each on a share of the threads (0 = auto).",
        ),
        _switch(
            "--device-colour",
            "Where YUV<->RGB runs: auto = on the GPU with CUDA, numpy on the CPU otherwise.",
        ),
        _switch(
            "--hw-decode",
            "NVDEC decoding (auto = with CUDA); falls back to software where unusable. Off by "
            "default until a GPU benchmark shows it helps.",
            default="off",
        ),
        click.option(
            "--ignore-errors",
            is_flag=True,
            help="Process what decodes from a damaged file and report the damage.",
        ),
        click.option("--dry-run", is_flag=True, help="Probe and print the plan; do nothing else."),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="Print JSON lines (start, progress, chunk_done, done, error) instead of a bar.",
        ),
        click.option(
            "--chunk-frames", type=int, default=None, help="Frames per chunk (the resumable unit)."
        ),
        click.option(
            "--chunk-seconds",
            type=float,
            default=None,
            help="Seconds of video per chunk (default 30).",
        ),
        click.option(
            "--work-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Job state folder (default: OUTPUT.vidsr-work beside the output).",
        ),
        click.option("--restart", is_flag=True, help="Discard an earlier job's state."),
        click.option(
            "--keep-work", is_flag=True, help="Keep the work folder (segments) after success."
        ),
        click.option(
            "--devices", default=None, help="Worker devices: cuda:0,cuda:1 | all | cpu,cpu."
        ),
        click.option(
            "--workers-per-device",
            type=int,
            default=1,
            show_default=True,
            help="Worker processes per device.",
        ),
        click.option(
            "--encode-workers",
            type=int,
            default=0,
            show_default=True,
            help="Chunks encoded at once in one process (0 = auto: more when the encoder "
            "bounds the run and cores are free).",
        ),
        click.option(
            "--backend",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Run chunks locally or as Ray tasks.",
        ),
        click.option(
            "--ray-address", default=None, help="Ray cluster address (default: start a local Ray)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@infer_options
@video_options
@preset_option
def upscale(input_path: Path, **opts: Any) -> None:
    """Upscale a video, an image (png, jpg, webp) or a folder of images.

    Without -o the result goes beside the input: a video as STEM.MODEL.xSCALE.mkv, an image
    as STEM.MODEL.xSCALE.EXT, a folder as FOLDER.MODEL.xSCALE/.
    """
    from vidsr.media.image import is_image_path
    from vidsr.models.loader import check_model_spec

    try:
        opts = apply_preset(opts)
        config = _infer_config(opts)
        if not input_path.exists():
            raise InputError(f"{input_path}: no such file or folder")
        check_model_spec(config.model)
        if input_path.is_dir():
            _upscale_folder(input_path, config, opts)
        elif is_image_path(input_path):
            _upscale_image(input_path, config, opts)
        else:
            _upscale_video(input_path, config, opts)
    except VidsrError as exc:
        if opts.get("as_json"):
            click.echo(
                json.dumps({"event": "error", "message": str(exc), "exit_code": exc.exit_code})
            )
        raise


def _encode_config(opts: dict[str, Any]):  # -> EncodeConfig
    from vidsr.pipeline.video import EncodeConfig

    pairs = []
    for item in opts["encoder_opt"]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--encoder-opt takes KEY=VALUE, not {item!r}")
        pairs.append((key, value))
    codec = opts["codec"]
    if codec == "auto":  # NVENC where the model runs on CUDA and NVENC opens, else libx264
        from vidsr.media.encode import resolve_codec
        from vidsr.pipeline.infer import resolve_device

        codec = resolve_codec(codec, resolve_device(opts.get("device") or "auto").type)
    return EncodeConfig(
        codec=codec,
        crf=opts["crf"],
        preset=opts["encoder_preset"],
        pix_fmt=opts["pix_fmt"],
        options=tuple(pairs),
    )


def _job_options(opts: dict[str, Any]):  # -> JobOptions
    from vidsr.jobs.runner import JobOptions

    devices = tuple(d for d in (opts["devices"] or "").split(",") if d.strip())
    return JobOptions(
        work_dir=opts["work_dir"],
        chunk_frames=opts["chunk_frames"],
        chunk_seconds=opts["chunk_seconds"],
        restart=opts["restart"],
        keep_work=opts["keep_work"],
        devices=devices,
        workers_per_device=opts["workers_per_device"],
        encode_workers=opts["encode_workers"],
        backend=opts["backend"],
        ray_address=opts["ray_address"],
    )


def _upscale_video(input_path: Path, config, opts: dict[str, Any]) -> None:
    from vidsr.pipeline.encoder_process import encoder_pool

    # Start the encoder process first (no torch in it): its start-up overlaps importing torch
    # and loading the model. Worker processes (--devices, --backend ray) start their own.
    devices = [d for d in (opts["devices"] or "").split(",") if d.strip()]
    in_process = opts["backend"] == "local" and len(devices) <= 1
    in_process = in_process and opts["workers_per_device"] <= 1
    with encoder_pool(prestart=in_process and not opts["dry_run"]):
        _run_video(input_path, config, opts)


def _run_video(input_path: Path, config, opts: dict[str, Any]) -> None:
    from vidsr.jobs.runner import run_job
    from vidsr.pipeline.video import plan_video

    if opts["batch_size"] < 0:
        raise UsageError("--batch-size must be 0 (auto) or positive")
    job = _job_options(opts)
    plan = plan_video(
        input_path,
        opts["output"],
        model=config.model,
        scale=config.scale,
        encode=_encode_config(opts),
        overwrite=opts["overwrite"],
    )
    if opts["dry_run"]:
        _print_plan(plan, config, opts)
        return
    sink, close = _event_sink(opts["as_json"], plan.frames)
    try:
        result = run_job(
            plan,
            config,
            job,
            batch_size=opts["batch_size"],
            ignore_errors=opts["ignore_errors"],
            on_event=sink,
        )
    finally:
        close()
    if not opts["as_json"]:
        _print_summary(result)


def _event_sink(as_json: bool, total: int):
    """(on_event, close): JSON lines on stdout, or a tqdm bar on stderr."""
    if as_json:

        def emit(event: dict[str, Any]) -> None:
            click.echo(json.dumps(event, default=str))

        return emit, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", desc="upscale", file=sys.stderr, dynamic_ncols=True)

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "start" and event.get("frames_done"):
            bar.update(event["frames_done"] - bar.n)  # resumed: finished chunks count
            bar.set_postfix_str(
                f"resumed, {event['chunks_todo']} of {event['chunks']} chunks to do"
            )
        elif event["event"] == "progress":
            bar.update(event["frames"] - bar.n)

    return on_event, bar.close


def _print_summary(result) -> None:
    click.echo(f"{result.input} -> {result.output}", err=True)
    click.echo(
        f"{result.frames} frames in {result.seconds:.1f} s ({result.fps:.2f} fps), "
        f"{result.model} on {result.device} {result.precision}, "
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


def _print_plan(plan, config, opts: dict[str, Any]) -> None:
    from vidsr.pipeline.infer import resolve_device, resolve_precision
    from vidsr.pipeline.video import estimate_seconds

    v = plan.info.video
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    lines = [
        f"input:     {plan.input} ({v.codec} {v.width}x{v.height} {v.pix_fmt}, "
        f"{plan.frames} frames, {'VFR' if v.is_vfr else 'CFR'})",
        f"output:    {plan.output} ({plan.encode.codec} {plan.out_width}x{plan.out_height})",
        f"model:     {config.model} (x{plan.scale:g}) on {device} "
        f"{str(precision).removeprefix('torch.')}",
        f"batch:     {opts['batch_size'] or 'auto'}; tile: {config.tile or 'whole frame'}",
        "streams kept: " + ("; ".join(plan.kept) if plan.kept else "none besides the video"),
    ]
    if plan.info.chapters:
        lines.append(f"chapters:  {len(plan.info.chapters)}")
    est = estimate_seconds(plan, config.model, device.type)
    lines.append(
        f"estimate:  ~{est:.0f} s (rough, from the model's cost per pixel)"
        if est is not None
        else "estimate:  unknown"
    )
    for line in lines:
        click.echo(line)


def _default_output(input_path: Path, config, scale: float) -> Path:
    label = f"{_model_label(config.model)}.x{_scale_label(scale)}"
    if input_path.is_dir():
        return input_path.with_name(f"{input_path.name}.{label}")
    return input_path.with_name(f"{input_path.stem}.{label}{input_path.suffix}")


def _upscale_image(input_path: Path, config, opts: dict[str, Any]) -> None:
    from vidsr.files import check_output_path
    from vidsr.media.image import read_image
    from vidsr.models.loader import expected_scale
    from vidsr.pipeline.images import upscale_image_file
    from vidsr.pipeline.infer import build_upscaler

    read_image(input_path)  # fail fast on a bad image, before loading a model
    output = opts["output"] or _default_output(
        input_path, config, config.scale or expected_scale(config.model)
    )
    check_output_path(output, overwrite=opts["overwrite"], inputs=(input_path,))
    upscaler = build_upscaler(config, progress=_progress_bar(f"download {config.model}"))
    w, h = upscale_image_file(upscaler, input_path, output)
    click.echo(
        f"{input_path} -> {output} ({w}x{h}, {config.model}, "
        f"{upscaler.device}, {upscaler.precision_name})",
        err=True,
    )


def _upscale_folder(input_path: Path, config, opts: dict[str, Any]) -> None:
    from tqdm import tqdm

    from vidsr.models.loader import expected_scale
    from vidsr.pipeline.images import plan_folder, upscale_folder
    from vidsr.pipeline.infer import build_upscaler

    output = opts["output"] or _default_output(
        input_path, config, config.scale or expected_scale(config.model)
    )
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file; a folder input needs an output folder")
    pairs = plan_folder(input_path, output, overwrite=opts["overwrite"])
    upscaler = build_upscaler(config, progress=_progress_bar(f"download {config.model}"))
    output.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(pairs), unit="img", desc="upscale", file=sys.stderr)
    results = upscale_folder(upscaler, pairs, on_done=lambda r: bar.update(1))
    bar.close()
    failed = [r for r in results if r.error]
    for r in failed:
        click.echo(f"vidsr: failed: {r.error}", err=True)
    click.echo(f"{len(results) - len(failed)} of {len(results)} images -> {output}", err=True)
    if failed:
        sys.exit(3)


def batch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of ``vidsr batch`` besides those it shares with ``vidsr upscale``."""
    options = [
        click.option(
            "--recursive", "-r", is_flag=True, help="Take videos in sub-folders of folder inputs."
        ),
        click.option(
            "--from-file",
            "from_file",
            multiple=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help="A text file of inputs, one per line (also: @FILE as an input); repeatable.",
        ),
        click.option(
            "--name",
            "name_template",
            default=DEFAULT_NAME,
            show_default=True,
            help="Output name template: {stem} {name} {ext} {model} {scale} {codec}.",
        ),
        click.option(
            "--order",
            type=click.Choice(ORDERS),
            default="name",
            show_default=True,
            help="Processing order: name, size (smallest first) or mtime (oldest first).",
        ),
        click.option("--reverse", is_flag=True, help="Reverse --order."),
        click.option(
            "--report",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Write a JSON report: one entry per input (ok / skipped / failed, error).",
        ),
        click.option(
            "--max-hours",
            type=float,
            default=None,
            help="Stop cleanly between chunks after H hours; the same command resumes.",
        ),
        click.option(
            "--no-disk-check", is_flag=True, help="Skip the free-space check before each file."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def batch_command(inputs: Sequence[str], opts: dict[str, Any]) -> None:
    """``vidsr batch``: parse, run, print the summary, exit (3 if any file failed, 75 when
    stopped by --max-hours, 130/143 when interrupted)."""
    from vidsr.batch import (
        BatchInput,
        BatchSettings,
        _output_scale,
        collect_inputs,
        format_summary,
        order_inputs,
        output_name,
        run_batch,
    )
    from vidsr.media.encode import encoder_pix_fmts
    from vidsr.models.loader import check_model_spec
    from vidsr.presets import apply_preset

    opts = apply_preset(opts)
    outdir = opts["output"]
    if outdir is None:
        raise UsageError("batch needs -o OUTDIR (the folder for every output)")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"-o {outdir} is a file; batch writes into a folder")
    if not inputs and not opts["from_file"]:
        raise UsageError("batch needs inputs: files, folders, globs or @LIST.txt")
    if opts["max_hours"] is not None and opts["max_hours"] <= 0:
        raise UsageError("--max-hours must be positive")
    if opts["batch_size"] < 0:
        raise UsageError("--batch-size must be 0 (auto) or positive")
    config = _infer_config(opts)
    check_model_spec(config.model)
    if not opts["dry_run"]:  # an absent device or a refused precision, before any work
        from vidsr.pipeline.infer import resolve_device, resolve_precision

        resolve_precision(config.precision, resolve_device(config.device))
    encode = _encode_config(opts)
    encoder_pix_fmts(encode.codec)  # an unknown encoder is a usage error, before any work
    sample = BatchInput(Path("sample.mkv"), Path("sample.mkv"))
    output_name(  # a bad template is a usage error before any work
        opts["name_template"],
        sample,
        model=config.model,
        scale=_output_scale(config),
        codec=encode.codec,
    )
    items = collect_inputs(
        inputs, recursive=opts["recursive"], from_files=opts["from_file"], exclude=[outdir]
    )
    if not items:
        raise UsageError("no input videos found (folders: add --recursive for sub-folders)")
    items = order_inputs(items, opts["order"], opts["reverse"])
    settings = BatchSettings(
        outdir=outdir,
        config=config,
        encode=encode,
        job=_job_options(opts),
        name=opts["name_template"],
        overwrite=opts["overwrite"],
        batch_size=opts["batch_size"],
        ignore_errors=opts["ignore_errors"],
        dry_run=opts["dry_run"],
        max_hours=opts["max_hours"],
        report=opts["report"],
        check_disk=not opts["no_disk_check"],
    )
    as_json = opts["as_json"]
    bar: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event, default=str))
            return
        kind = event["event"]
        if kind == "file_start":
            click.echo(
                f"[{event['index'] + 1}/{event['count']}] {event['file']} -> {event['output'] or '?'}",
                err=True,
            )
        elif kind == "start":
            bar["sink"], bar["close"] = _event_sink(False, event["frames"])
            bar["sink"](event)
        elif kind in ("progress", "chunk_done") and "sink" in bar:
            bar["sink"](event)
        elif kind == "file_done":
            if "close" in bar:
                bar.pop("close")()
                bar.pop("sink", None)
            line = f"  {event['status']}"
            if event.get("error"):
                line += f": {event['error']}"
            click.echo(line, err=True)

    def on_plan(plan: Any) -> None:
        _print_plan(plan, config, opts)
        click.echo("")

    result = run_batch(items, settings, on_event=on_event, on_plan=on_plan if not as_json else None)
    if not as_json:
        click.echo(format_summary(result))
        if result.log_path:
            click.echo(f"log: {result.log_path}", err=True)
    if result.interrupted is not None:
        raise result.interrupted
    code = result.exit_code
    if code:
        sys.exit(code)


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
    """Import a .pth, .safetensors or ncnn .param (+ .bin) file into the model cache."""
    from vidsr.models.sources import import_model_file

    registered = import_model_file(file, name)
    click.echo(f"imported {file} as {registered}; use --model {registered}")


# --- batch, presets, probe, preview, doctor (bodies in vidsr.batch / vidsr.presets / vidsr.ops)


@cli.command()
@click.argument("inputs", nargs=-1, metavar="INPUTS...")
@infer_options
@video_options
@preset_option
@batch_options
def batch(inputs: tuple[str, ...], **opts: Any) -> None:
    """Upscale many videos into -o OUTDIR: files, folders, globs, @LIST.txt.

    Finished outputs are checked (same frame count) and skipped, partial ones resume, a
    failing file is reported and the rest go on. Exit 3 if any file failed, 75 when stopped
    by --max-hours. See docs/BATCH.md.
    """
    batch_command(inputs, opts)


@cli.group()
def presets() -> None:
    """List and show presets (bundled, and your own in $VIDSR_HOME/presets)."""


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def presets_list(as_json: bool) -> None:
    """Every preset: name, where it comes from, what it is for."""
    from vidsr.presets import available, describe, user_dir

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
    from vidsr.presets import describe, find_preset, format_value, preset_values

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
@click.option("--at", "at", required=True, help="Time: SECONDS, MM:SS or HH:MM:SS(.fff).")
@click.option(
    "--models",
    default="realesr-animevideov3",
    show_default=True,
    help="Comma-separated models to compare.",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="PNG file.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
)
@click.option("--tile", type=int, default=0, show_default=True, help="Tile edge (0 = whole).")
@click.option("--tile-pad", type=int, default=10, show_default=True)
@click.option("--scale", "-s", type=float, default=None, help="Common scale (default: largest).")
@click.option("--denoise-strength", type=float, default=None, help="For realesr-general-x4v3.")
@click.option("--crop", default=None, metavar="WxH+X+Y", help="Only this region of the frame.")
@click.option("--columns", type=int, default=0, help="Panels per row (0 = all in one row).")
@click.option("--overwrite", is_flag=True, help="Replace an existing PNG.")
def preview(file: Path, at: str, models: str, **opts: Any) -> None:
    """One PNG: the source frame at --at (nearest-neighbour) beside each model's result."""
    from vidsr.ops import make_preview

    names = [m.strip() for m in models.split(",") if m.strip()]
    result = make_preview(file, at, names, **opts)
    click.echo(
        f"{file} frame {result['frame']} ({result['time']:.3f} s) -> {result['output']} "
        f"({result['size'][0]}x{result['size'][1]}, {len(names)} models)",
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
        sys.exit(1)


@cli.command()
@click.option("--model", "-m", default="realesr-animevideov3", show_default=True)
@click.option("--size", default="128x72", show_default=True, help="Input size WIDTHxHEIGHT.")
@click.option("--frames", type=int, default=48, show_default=True, help="Frames in the clip.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--batch-size", type=int, default=0, show_default=True, help="0 = auto.")
@click.option(
    "--lanes", type=int, default=0, show_default=True, help="CPU lanes for the pipeline (0 = auto)."
)
@click.option("--codec", default="libx264", show_default=True, help="Video encoder.")
@_switch("--device-colour", "Where YUV<->RGB runs in the pipeline stages.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
)
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the model.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Bar chart PNG.")
def bench(**opts: Any) -> None:
    """Measure decode, model, encode, the pipeline and a serial baseline on a generated clip."""
    from vidsr.bench import format_table, parse_size, run_bench, write_plot

    size = parse_size(opts["size"])
    plot = opts["plot"]
    if plot is not None and plot.suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG: give a .png file, not {plot.name!r}")
    result = run_bench(
        model=opts["model"],
        size=size,
        frames=opts["frames"],
        device=opts["device"],
        precision=opts["precision"],
        batch_size=opts["batch_size"],
        lanes=opts["lanes"],
        device_colour=opts["device_colour"],
        codec=opts["codec"],
        compile=opts["use_compile"],
        on_stage=lambda name: click.echo(f"bench: {name}...", err=True),
    )
    if plot is not None:
        write_plot(result, plot)
    click.echo(json.dumps(result) if opts["as_json"] else format_table(result))


def _on_sigterm(signum: int, frame: Any) -> None:
    exc = Interrupted("terminated (SIGTERM); the partial output was removed")
    exc.exit_code = 143
    raise exc


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and exit codes, never a traceback for a user
    error. Set VIDSR_DEBUG=1 to see tracebacks."""
    debug = bool(os.environ.get("VIDSR_DEBUG"))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)  # unwind (cleanup runs), then exit 143
    try:
        cli.main(args=argv, prog_name="vidsr", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns every KeyboardInterrupt (ours included) into Abort: unwrap ours.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Interrupted):
            click.echo(f"vidsr: {cause}", err=True)
            sys.exit(cause.exit_code)
        click.echo("vidsr: interrupted (Ctrl-C)", err=True)
        sys.exit(130)
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
        sys.exit(130)
    except Exception as exc:  # a bug: one line, the traceback on request
        if debug:
            raise
        click.echo(
            f"vidsr: internal error: {type(exc).__name__}: {exc} "
            "(rerun with VIDSR_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
