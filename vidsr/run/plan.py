"""A video run decided before any work: probe, output, work folder, what becomes of every
stream, each frame's output time, refusals and warnings (``--dry-run`` prints it).

Refusals come before any work, each in one line saying what cannot be done and the ways
forward. Warnings say what the run will do that a user may not expect (timestamps moved, an
alpha channel dropped, interlaced or telecined content upscaled as is, RGB written as YUV
4:4:4, subtitles converted, streams left out); ``vidsr probe`` shows the same ones
(:func:`warnings_for`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidsr.errors import UsageError, render
from vidsr.run.source import output_geometry, output_step, plan_source
from vidsr.settings import Settings


@dataclass(frozen=True)
class VideoPlan:
    """What a video run will do. ``settings`` are the run's resolved settings (what the
    chunks read); ``streams`` what becomes of every other stream of the source; ``out_pts``
    every frame's output time (strictly increasing); ``warnings`` what the run says first."""

    input: Path
    output: Path
    work_dir: Path
    info: Any  # MediaInfo
    settings: Settings
    out_width: int
    out_height: int
    streams: tuple[Any, ...]  # media.remux.StreamPlan
    out_pts: tuple[int, ...]
    warnings: tuple[str, ...] = ()
    device: str = ""  # where the chunks run (for the reader), e.g. "cpu" or "cuda:0,cuda:1"
    device_type: str = ""  # cpu | cuda
    source: Any = None  # SourcePlan: the frames the model sees (range, repair, crop)
    out_sar: Fraction = Fraction(1)

    @property
    def kept(self) -> tuple[str, ...]:
        """Every stream the output keeps, as ``--dry-run`` lists them."""
        return tuple(_kept(p) for p in self.streams if p.kept and p.action != "chapters")

    @property
    def frames(self) -> int:
        """Output frames (the time range's, after any field repair)."""
        return len(self.out_pts)

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def scale(self) -> float:
        from vidsr.run.resolve import label_scale

        return label_scale(self.settings)


def default_work_dir(output: Path) -> Path:
    """``OUTPUT.vidsr-work`` beside the output."""
    return output.with_name(output.name + WORK_SUFFIX)


#: The suffix of a job's work folder (batch runs skip such folders when collecting inputs).
WORK_SUFFIX = ".vidsr-work"


def _describe(s: Any) -> str:
    bits = [f"#{s.index} {s.type}", s.codec or "?"]
    if s.language:
        bits.append(s.language)
    if s.title:
        bits.append(repr(s.title))
    if getattr(s, "filename", None):
        bits.append(s.filename)
    return " ".join(bits)


def _kept(plan: Any) -> str:
    text = _describe(plan.stream)
    if plan.action == "convert":
        text += f" (as {plan.codec})"
    elif plan.action == "timecode":
        text += f" (timecode {plan.stream.timecode})"
    return text


def warnings_for(
    info: Any, suffix: str, codec: str, pix_fmt: str | None, streams: Sequence[Any]
) -> list[str]:
    """What a run of ``info`` into a ``suffix`` output with ``codec`` (and ``pix_fmt``) will do
    that a user may not expect, one line each (``streams``: :func:`~vidsr.media.remux.
    plan_streams`'s plan)."""
    from vidsr.media import colour
    from vidsr.media.encode import choose_pix_fmt
    from vidsr.media.remux import STRUCTURAL_DATA, describe_stream

    v = info.video
    out: list[str] = []
    moved, most = v.moved_frames(output_step(suffix, v.time_base))
    if moved:
        bad = []
        if v.duplicate_times:
            bad.append(f"{v.duplicate_times} share the time of the frame before")
        if v.steps_back:
            bad.append(f"{v.steps_back} step back in time")
        out.append(
            f"timestamps do not increase ({'; '.join(bad)}): {moved} frame(s) move forward, "
            f"by at most {float(most * v.time_base) * 1000:.3f} ms (every frame is kept)"
        )
    if v.has_alpha:
        out.append(f"the source has an alpha channel ({v.pix_fmt}): it is dropped")
    fmt = pix_fmt or choose_pix_fmt(codec, v.pix_fmt, v.bit_depth)
    if colour.is_rgb_format(v.pix_fmt) and not colour.is_rgb_format(fmt):
        what = "grey" if v.pix_fmt.startswith(("gray", "ya")) else "RGB"
        out.append(f"the source is {what} ({v.pix_fmt}): it is written as {fmt} (YUV)")
    lossy = [p for p in streams if p.action == "convert" and p.note]
    for p in lossy:
        out.append(f"{describe_stream(p.stream)} becomes {p.codec}: {p.note}")
    dropped = [
        p
        for p in streams
        if p.action == "drop" and p.note and p.stream.codec not in STRUCTURAL_DATA
    ]
    if dropped:
        out.append(
            f"leaving out {len(dropped)} stream(s) {suffix} cannot carry: "
            + "; ".join(describe_stream(p.stream) for p in dropped)
        )
    return out


def plan_video(
    input_path: Path,
    settings: Settings,
    *,
    output: Path | None = None,
    work_dir: Path | None = None,
    check_output: bool = True,
    device: str = "",
    device_type: str = "",
) -> VideoPlan:
    """Probe ``input_path`` and decide the run for resolved ``settings``: the output (``output``,
    else the settings' own, else the default name), the work folder, the output size, every
    stream's fate and every frame's time; refuse early an existing output, an output equal to
    the input, a pixel format the codec cannot encode, a picture size that changes mid-stream,
    or a container that cannot carry every stream (unless ``drop_unsupported``).
    ``check_output=False`` skips the output's own checks (a dry run of a batch whose folder
    does not exist yet)."""
    from vidsr.files import check_output_path
    from vidsr.media.encode import encoder_pix_fmts
    from vidsr.media.probe import probe
    from vidsr.media.remux import plan_streams, refusal
    from vidsr.run.naming import default_output
    from vidsr.run.resolve import label_scale, resolve_runtime

    info = probe(input_path)
    _refuse_size_changes(info)
    out = Path(
        output
        or settings.output
        or default_output(input_path, settings.model, label_scale(settings))
    )
    source, settings = plan_source(info, settings, out.suffix)
    runtime = resolve_runtime(settings, (source.width, source.height), device_type or "cpu")
    settings = settings.replace(runtime=runtime)
    ow, oh, sar = output_geometry(info, settings, (source.width, source.height))
    settings = encoder_settings(settings, info, device_type, (ow, oh))
    supported = encoder_pix_fmts(settings.codec)  # UsageError for an unknown encoder
    if settings.pix_fmt and supported and settings.pix_fmt not in supported:
        raise UsageError(
            f"{settings.codec} cannot encode {settings.pix_fmt} (it takes {', '.join(supported)})"
        )
    if check_output:
        check_output_path(out, overwrite=settings.overwrite, inputs=(input_path,))
    streams = plan_streams(info, out.suffix, drop_unsupported=settings.drop_unsupported)
    problem = refusal(info, out.suffix, settings.codec, drop_unsupported=settings.drop_unsupported)
    if problem:
        raise UsageError(problem)
    warnings = warnings_for(info, out.suffix, settings.codec, settings.pix_fmt, streams)
    return VideoPlan(
        input_path,
        out,
        Path(work_dir or settings.work_dir or default_work_dir(out)),
        info,
        settings,
        ow,
        oh,
        tuple(streams),
        source.timeline.out_pts,
        (*source.warnings, *warnings),
        device,
        device_type,
        source,
        sar,
    )


def output_size(info: Any, settings: Settings) -> tuple[int, int]:
    """(width, height) of the upscaled video of the whole picture (no crop): see
    :func:`~vidsr.run.source.output_geometry`."""
    v = info.video
    ow, oh, _sar = output_geometry(info, settings, (v.width, v.height))
    return ow, oh


def encoder_settings(
    settings: Settings, info: Any, device_type: str, size: tuple[int, int] | None = None
) -> Settings:
    """``settings`` with ``--codec auto`` decided for this file's output (size, bit depth:
    :func:`~vidsr.media.encode.auto_codec`), and an NVENC codec that cannot encode it here
    refused (``UsageError``, one line). With Ray the chunks run on other machines: NVENC is
    not probed here - auto takes the software encoders, and only NVENC's size limits are
    checked."""
    from vidsr.media.colour import bit_depth
    from vidsr.media.encode import NVENC_MAX_SIDE, auto_codec, choose_pix_fmt, nvenc_refusal
    from vidsr.run.resolve import with_codec

    v = info.video
    width, height = size or output_size(info, settings)
    bits = bit_depth(settings.pix_fmt) if settings.pix_fmt else v.bit_depth
    remote = settings.backend == "ray"
    gpu = _first_gpu(settings)
    if settings.codec == "auto":
        codec = auto_codec(
            device_type or "cpu",
            width=width,
            height=height,
            source_pix_fmt=v.pix_fmt,
            bit_depth=bits,
            nvenc=not remote,
            pix_fmt=settings.pix_fmt,
            gpu=gpu,
        )
        settings = with_codec(settings, codec)
    fmt = settings.pix_fmt or choose_pix_fmt(settings.codec, v.pix_fmt, v.bit_depth)

    def size_only(codec: str, w: int, h: int, _fmt: str) -> str | None:
        return "too large" if max(w, h) > NVENC_MAX_SIDE.get(codec, 1 << 30) else None

    refusal_text = nvenc_refusal(
        settings.codec, width, height, fmt, problem=size_only if remote else None, gpu=gpu
    )
    if refusal_text:
        raise UsageError(refusal_text)
    return settings


def _first_gpu(settings: Settings) -> int | None:
    """The index of the first CUDA device the run names (where NVENC is probed), or None."""
    for spec in (*settings.devices, settings.device):
        spec = spec.strip().lower()
        if spec.startswith("cuda"):
            index = spec.partition(":")[2]
            return int(index) if index.isdigit() else 0
    return None


def _refuse_size_changes(info: Any) -> None:
    """A picture size that changes mid-stream is refused before any work."""
    from vidsr.errors import InputError

    v = info.video
    if v.size_changes:
        (_, w0, h0), (pts, w, h) = v.size_changes[0], v.size_changes[1]
        at = float((pts - v.frame_pts[0]) * v.time_base)
        raise InputError(
            f"{info.path}: the picture size changes mid-stream ({w0}x{h0} -> {w}x{h} at "
            f"{at:.3f} s), which vidsr does not upscale; cut the file at the change (ffmpeg "
            "-ss/-t with -c copy) and upscale each part"
        )


# Measured model cost per input pixel on this project's 2-core CPU machines, fp32
# (docs/BENCHMARKS.md); scaled by layer count for other sizes of the same architecture.
_CPU_SECONDS_PER_PIXEL = {"SRVGGNetCompact": (10e-6, 16), "RRDBNet": (270e-6, 23)}


def estimate_seconds(plan: VideoPlan) -> float | None:
    """A rough CPU time estimate for ``--dry-run``; None where there is no measurement."""
    if plan.device_type != "cpu":
        return None
    from vidsr.models.registry import find_record

    record = find_record(plan.model)
    if record is None:
        return None
    per_px, layers = _CPU_SECONDS_PER_PIXEL[record.arch]
    depth = record.kwargs.get("num_conv") or record.kwargs.get("num_block") or layers
    src = plan.source
    pixels = (
        src.width * src.height
        if src is not None
        else plan.info.video.width * plan.info.video.height
    )
    return plan.frames * pixels * per_px * depth / layers


def _range_text(plan: VideoPlan) -> str:
    """Which source frames the run takes, and from when to when."""
    src, v = plan.source, plan.info.video
    origin = plan.info.origin
    t0 = float(v.frame_time(src.first) - origin)
    t1 = float(v.frame_time(src.last - 1) - origin)
    what = f"source frames {src.first} to {src.last - 1} ({t0:.3f} to {t1:.3f} s)"
    if src.time_range is None:
        what = "every source frame"
    return f"{what} -> {plan.frames} output frames at {float(src.rate):.5g} fps"


def format_plan(plan: VideoPlan) -> str:
    """The plan as ``--dry-run`` prints it."""
    v = plan.info.video
    s = plan.settings
    dar = v.display_aspect
    lines = [
        f"input:     {plan.input} ({v.codec} {v.width}x{v.height} {v.pix_fmt}, "
        f"{v.frame_count} frames, {'VFR' if v.is_vfr else 'CFR'}, display aspect "
        f"{float(dar):.4g} (SAR {v.sample_aspect_ratio}))",
        f"output:    {plan.output} ({s.codec} {plan.out_width}x{plan.out_height}) at SAR "
        f"{plan.out_sar}, display aspect "
        f"{float(plan.out_sar * plan.out_width / plan.out_height):.4g}",
        f"model:     {s.model} (x{plan.scale:g}) on {plan.device} {s.precision}",
        f"batch:     {s.batch_size or 'auto'}; tile: {s.tile or 'whole frame'}",
        "streams kept: " + ("; ".join(plan.kept) if plan.kept else "none besides the video"),
    ]
    if plan.source is not None:
        lines += list(plan.source.notes)
        lines.append(f"frames:    {_range_text(plan)}")
    if plan.info.chapters:
        lines.append(f"chapters:  {len(plan.info.chapters)}")
    est = estimate_seconds(plan)
    lines.append(
        f"estimate:  ~{est:.0f} s (rough, from the model's cost per pixel)"
        if est is not None
        else "estimate:  unknown"
    )
    lines += [f"warning:   {w}" for w in plan.warnings]
    return render("\n".join(lines))
