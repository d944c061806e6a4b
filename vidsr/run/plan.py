"""A video run decided before any work: probe, output, work folder, refusals (``--dry-run``
prints it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidsr.errors import UsageError
from vidsr.settings import Settings


@dataclass(frozen=True)
class VideoPlan:
    """What a video run will do. ``settings`` are the run's resolved settings (what the
    chunks read); ``kept`` describes every stream copied from the source."""

    input: Path
    output: Path
    work_dir: Path
    info: Any  # MediaInfo
    settings: Settings
    out_width: int
    out_height: int
    kept: tuple[str, ...]
    device: str = ""  # where the chunks run (for the reader), e.g. "cpu" or "cuda:0,cuda:1"
    device_type: str = ""  # cpu | cuda

    @property
    def frames(self) -> int:
        return self.info.video.frame_count

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def scale(self) -> float:
        return float(self.settings.scale)


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
    else the settings' own, else the default name), the work folder, the output size; refuse
    early an existing output, an output equal to the input, a pixel format the codec cannot
    encode, or a container that cannot carry every stream. ``check_output=False`` skips the
    output's own checks (a dry run of a batch whose folder does not exist yet)."""
    from vidsr.files import check_output_path
    from vidsr.media.encode import encoder_pix_fmts
    from vidsr.media.probe import probe
    from vidsr.media.remux import check_container_support
    from vidsr.models.loader import expected_scale
    from vidsr.pipeline.infer import scaled_size
    from vidsr.run.naming import default_output

    info = probe(input_path)
    supported = encoder_pix_fmts(settings.codec)  # UsageError for an unknown encoder
    if settings.pix_fmt and supported and settings.pix_fmt not in supported:
        raise UsageError(
            f"{settings.codec} cannot encode {settings.pix_fmt} (it takes {', '.join(supported)})"
        )
    out = Path(
        output or settings.output or default_output(input_path, settings.model, settings.scale)
    )
    if check_output:
        check_output_path(out, overwrite=settings.overwrite, inputs=(input_path,))
    problems = check_container_support(info, out.suffix, settings.codec)
    if problems:
        raise UsageError(
            f"{out.suffix} cannot carry everything in {input_path.name}: "
            + "; ".join(problems)
            + " - write .mkv instead"
        )
    v = info.video
    native = expected_scale(settings.model)
    oh, ow = scaled_size(v.height, v.width, settings.scale, native, even=True)
    return VideoPlan(
        input_path,
        out,
        Path(work_dir or settings.work_dir or default_work_dir(out)),
        info,
        settings,
        ow,
        oh,
        tuple(_describe(s) for s in info.copied_streams),
        device,
        device_type,
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
    v = plan.info.video
    return plan.frames * v.width * v.height * per_px * depth / layers


def format_plan(plan: VideoPlan) -> str:
    """The plan as ``--dry-run`` prints it."""
    v = plan.info.video
    s = plan.settings
    lines = [
        f"input:     {plan.input} ({v.codec} {v.width}x{v.height} {v.pix_fmt}, "
        f"{plan.frames} frames, {'VFR' if v.is_vfr else 'CFR'})",
        f"output:    {plan.output} ({s.codec} {plan.out_width}x{plan.out_height})",
        f"model:     {s.model} (x{plan.scale:g}) on {plan.device} {s.precision}",
        f"batch:     {s.batch_size or 'auto'}; tile: {s.tile or 'whole frame'}",
        "streams kept: " + ("; ".join(plan.kept) if plan.kept else "none besides the video"),
    ]
    if plan.info.chapters:
        lines.append(f"chapters:  {len(plan.info.chapters)}")
    est = estimate_seconds(plan)
    lines.append(
        f"estimate:  ~{est:.0f} s (rough, from the model's cost per pixel)"
        if est is not None
        else "estimate:  unknown"
    )
    return "\n".join(lines)
