"""Still images and folders of images: resolve, name the output, upscale."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidsr.errors import UsageError
from vidsr.settings import Settings


@dataclass(frozen=True)
class ImageRun:
    """One upscaled image: where it went, its size, and what made it."""

    input: Path
    output: Path
    width: int
    height: int
    model: str
    device: str
    precision: str
    seconds: float


#: Options of video runs that an image run refuses.
VIDEO_ONLY = (
    "deinterlace", "ivtc", "start", "end", "duration", "crop", "size", "width", "height",
    "square_pixels", "reuse",
)  # fmt: skip


def _resolved(settings: Settings) -> Settings:
    """``settings`` resolved for the device images run on: this process, on the first of the
    run's devices (``--device``, or the first of ``--devices``)."""
    from vidsr.errors import opt
    from vidsr.run.resolve import placement, resolve

    if settings.backend != "local":
        raise UsageError(
            f"{opt('backend', settings.backend)} runs the chunks of videos; images are upscaled "
            f"in this process: leave {opt('backend')} out"
        )
    video_only = [n for n in VIDEO_ONLY if getattr(settings, n) not in (None, False, "off")]
    if video_only:
        names = ", ".join(opt(n) for n in video_only)
        raise UsageError(f"{names}: for videos only; an image takes {opt('scale')}")
    slot = placement(settings.replace(workers_per_device=1)).slots[0]
    return resolve(settings.replace(device=slot, devices=()), "cuda" if "cuda" in slot else "cpu")


def _upscaler(settings: Settings, progress: Callable[[int, int], None] | None) -> Any:
    from vidsr.jobs.chunk import upscaler_for

    return upscaler_for(settings, progress=progress)


def upscale_image(
    settings: Settings, input_path: Path, *, progress: Callable[[int, int], None] | None = None
) -> ImageRun:
    """Upscale one image (png, jpg, webp; alpha kept) to the settings' output, else
    ``STEM.MODEL.xSCALE.EXT`` beside it. ``progress`` follows a weights download."""
    from vidsr.files import check_output_path
    from vidsr.media.image import read_image
    from vidsr.pipeline.images import upscale_image_file
    from vidsr.run.naming import default_output

    read_image(input_path)  # fail fast on a bad image, before loading a model
    s = _resolved(settings)
    output = Path(s.output or default_output(input_path, s.model, s.scale, "image"))
    check_output_path(output, overwrite=s.overwrite, inputs=(input_path,))
    upscaler = _upscaler(s, progress)
    t0 = time.perf_counter()
    w, h = upscale_image_file(upscaler, input_path, output, s.scale)
    return ImageRun(
        input_path,
        output,
        w,
        h,
        s.model,
        str(upscaler.device),
        upscaler.precision_name,
        time.perf_counter() - t0,
    )


def upscale_image_folder(
    settings: Settings,
    folder: Path,
    *,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, list[Any]]:
    """Upscale every image directly in ``folder`` into the settings' output folder, else
    ``FOLDER.MODEL.xSCALE/`` beside it; a bad image is recorded and the rest go on. Returns
    (output folder, one ``ImageResult`` per image); ``on_start(count)`` before the first."""
    from vidsr.pipeline.images import plan_folder, upscale_folder
    from vidsr.run.naming import default_output

    s = _resolved(settings)
    output = Path(s.output or default_output(folder, s.model, s.scale, "folder"))
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file; a folder input needs an output folder")
    pairs = plan_folder(folder, output, overwrite=s.overwrite)
    upscaler = _upscaler(s, progress)
    output.mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start(len(pairs))
    return output, upscale_folder(upscaler, pairs, scale=s.scale, on_done=on_done)
