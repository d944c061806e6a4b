"""The Python API: ``vidsr.upscale(input, output=None, model=..., **options)``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vidsr.config import InferConfig
from vidsr.errors import InputError
from vidsr.pipeline.video import EncodeConfig, UpscaleResult


def upscale(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str = "realesr-animevideov3",
    device: str = "auto",
    precision: str = "auto",
    tile: int = 0,
    tile_pad: int = 10,
    scale: float | None = None,
    denoise_strength: float | None = None,
    codec: str = "libx264",
    crf: float | None = None,
    encoder_preset: str | None = None,
    pix_fmt: str | None = None,
    encoder_options: Mapping[str, str] | None = None,
    batch_size: int = 0,
    lanes: int = 0,
    device_colour: str = "auto",
    compile: bool = False,
    hw_decode: str = "off",
    ignore_errors: bool = False,
    overwrite: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> UpscaleResult:
    """Upscale a video (or a single image) with the same options as ``vidsr upscale``.

    Returns an ``UpscaleResult``: ``frames``, ``output``, ``seconds``, ``fps``, ``stages``
    (decode / infer / encode figures) and ``bound`` (the stage that limited the run).
    ``on_event`` receives the same events as ``--json`` (start, progress, done). Raises a
    ``VidsrError`` subclass on bad input, a refused output, or a failed stage.
    """
    import time

    from vidsr.files import check_output_path
    from vidsr.jobs.runner import upscale_video
    from vidsr.media.image import is_image_path
    from vidsr.pipeline.encoder_process import encoder_pool
    from vidsr.pipeline.images import upscale_image_file
    from vidsr.pipeline.infer import build_upscaler
    from vidsr.pipeline.stages import StageStats
    from vidsr.pipeline.video import default_video_output, plan_video

    src = Path(input)
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    config = InferConfig(
        model=model,
        device=device,
        precision=precision,
        tile=tile,
        tile_pad=tile_pad,
        scale=scale,
        denoise_strength=denoise_strength,
        lanes=lanes,
        device_colour=device_colour,
        compile=compile,
        hw_decode=hw_decode,
    )
    if is_image_path(src):
        upscaler = build_upscaler(config)
        dst = (
            Path(output)
            if output
            else default_video_output(src, model, upscaler.scale).with_suffix(src.suffix)
        )
        check_output_path(dst, overwrite=overwrite, inputs=(src,))
        t0 = time.perf_counter()
        upscale_image_file(upscaler, src, dst)
        seconds = time.perf_counter() - t0
        return UpscaleResult(
            src,
            dst,
            1,
            seconds,
            {"infer": StageStats("infer", 1, seconds)},
            model,
            str(upscaler.device),
            upscaler.precision_name,
            1,
        )
    if codec == "auto":
        from vidsr.media.encode import resolve_codec
        from vidsr.pipeline.infer import resolve_device

        codec = resolve_codec(codec, resolve_device(device).type)
    encode = EncodeConfig(
        codec=codec,
        crf=crf,
        preset=encoder_preset,
        pix_fmt=pix_fmt,
        options=tuple((encoder_options or {}).items()),
    )
    # The encoder process starts first: its start-up overlaps loading the model.
    with encoder_pool(prestart=True):
        plan = plan_video(
            src,
            Path(output) if output else None,
            model=model,
            scale=scale,
            encode=encode,
            overwrite=overwrite,
        )
        upscaler = build_upscaler(config)
        return upscale_video(
            plan, upscaler, batch_size=batch_size, ignore_errors=ignore_errors, on_event=on_event
        )
