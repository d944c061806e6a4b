"""Upscaling still images and folders of images."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidsr.errors import InputError, UsageError, VidsrError, opt
from vidsr.files import atomic_output, check_output_path
from vidsr.media.image import IMAGE_SUFFIXES, read_image, write_image
from vidsr.pipeline.infer import Upscaler, scaled_size

# ITU-R BT.601 luma weights: how Real-ESRGAN folds the upscaled alpha (run through the
# model as a grey RGB image) back to one channel (cv2.COLOR_BGR2GRAY).
_GREY = torch.tensor([0.299, 0.587, 0.114])


def upscale_pixels(
    upscaler: Upscaler, pixels: np.ndarray, scale: float | None = None
) -> np.ndarray:
    """(H, W, 3|4) float [0, 1] -> (sH, sW, 3|4) float [0, 1], s = ``scale`` (default: the
    network's own). Alpha goes through the model as a grey image, as Real-ESRGAN's default
    alpha upsampler does."""
    h, w = pixels.shape[:2]
    size = scaled_size(h, w, scale if scale is not None else upscaler.net_scale, upscaler.net_scale)
    rgb = torch.from_numpy(np.ascontiguousarray(pixels[..., :3].transpose(2, 0, 1)))[None]
    out = upscaler(rgb, size)[0]
    if pixels.shape[2] == 4:
        alpha = torch.from_numpy(np.ascontiguousarray(pixels[..., 3]))[None, None]
        a = upscaler(alpha.expand(1, 3, -1, -1), size)[0]
        a = (a * _GREY.to(a.device)[:, None, None]).sum(0, keepdim=True)
        out = torch.cat([out, a], 0)
    return out.permute(1, 2, 0).cpu().numpy()


def upscale_image_file(
    upscaler: Upscaler, src: Path, dst: Path, scale: float | None = None
) -> tuple[int, int]:
    """Upscale one image file into ``dst`` (written atomically) by ``scale`` (default: the
    network's own). Returns the output (W, H)."""
    img = read_image(src)
    out = upscale_pixels(upscaler, img.pixels, scale)
    with atomic_output(dst) as tmp:
        write_image(tmp, out, img.mode, img.bits)  # tmp keeps dst's suffix, hence format
    return out.shape[1], out.shape[0]


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ImageResult:
    source: Path
    output: Path | None
    error: str | None = None


def plan_folder(src: Path, dst: Path, *, overwrite: bool) -> list[tuple[Path, Path]]:
    """(source, output) pairs for every image of ``src``, outputs named alike inside ``dst``.
    Refuses before any work when an output exists (without ``overwrite``)."""
    images = list_images(src)
    if not images:
        raise InputError(f"{src}: no images (png, jpg, webp) in this folder")
    if dst.resolve() == src.resolve():
        raise UsageError("the output folder is the input folder; choose another one")
    pairs = [(p, dst / p.name) for p in images]
    if not overwrite:
        for _, out in pairs:
            if out.exists():
                raise UsageError(
                    f"output {out} exists; pass {opt('overwrite', True)} to replace it"
                )
    return pairs


def upscale_folder(
    upscaler: Upscaler,
    pairs: Iterable[tuple[Path, Path]],
    *,
    scale: float | None = None,
    on_done: Callable[[ImageResult], None] | None = None,
) -> list[ImageResult]:
    """Upscale every pair; a bad image is recorded and the rest go on."""
    results = []
    for src, dst in pairs:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            check_output_path(dst, overwrite=True, inputs=(src,))
            upscale_image_file(upscaler, src, dst, scale)
            result = ImageResult(src, dst)
        except VidsrError as exc:
            result = ImageResult(src, None, str(exc))
        results.append(result)
        if on_done:
            on_done(result)
    return results
