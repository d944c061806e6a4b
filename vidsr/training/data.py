"""Training data: ``vidsr finetune prepare`` (frames from videos or images, as PNG with a
manifest) and the random crops training draws from it.

A dataset folder holds ``manifest.json`` and PNG files: ``hr/`` (high-resolution frames:
synthetic pairs are made from them while training) and, for a paired dataset, ``lr/`` beside
them (the low-resolution frames that correspond, each exactly ``scale`` times smaller).

Frames are sampled evenly across each source; a frame is skipped when it is near-black (a
fade, a cut to black) or held (it differs from the last frame kept from that source by less
than :data:`HELD_LEVELS` on average: anime holds drawings for two, three or many frames).
Video frames are decoded as ``upscale`` decodes them, with each stream's own colour matrix
and range. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidsr.errors import InputError, OutputError, UsageError

MANIFEST = "manifest.json"
#: A frame whose mean absolute difference from the last frame kept is below this many 8-bit
#: levels (on a 64-pixel-wide thumbnail) is a held frame, and is skipped.
HELD_LEVELS = 2.0
#: A frame whose brightest thumbnail pixel is below this level is near-black, and is skipped.
BLACK_LEVEL = 24
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Frame:
    """One sampled frame: 8-bit RGB pixels and where it came from."""

    rgb: np.ndarray
    source: str
    index: int


def _thumb(rgb: np.ndarray) -> np.ndarray:
    step = max(1, rgb.shape[1] // 64)
    return rgb[::step, ::step].astype(np.float32)


def is_black(rgb: np.ndarray) -> bool:
    """Near-black: a fade or a cut to black."""
    return float(_thumb(rgb).max()) < BLACK_LEVEL


def is_held(rgb: np.ndarray, last: np.ndarray | None) -> bool:
    """Held: nearly the same picture as ``last`` (the last frame kept)."""
    if last is None or last.shape != rgb.shape:
        return False
    return float(np.abs(_thumb(rgb) - _thumb(last)).mean()) < HELD_LEVELS


def _to8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint16:
        return np.clip((rgb.astype(np.uint32) + 128) // 257, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _read_rgb8(path: Path) -> np.ndarray:
    from vidsr.media.image import read_image

    data = read_image(path)
    return np.clip(np.rint(data.pixels[..., :3] * 255.0), 0, 255).astype(np.uint8)


def _video_frame_count(path: Path) -> tuple[Any, int]:
    from vidsr.media.probe import probe

    info = probe(path)
    return info, int(info.video.frame_count)


def _video_frame(path: Path, info: Any, index: int) -> np.ndarray:
    from vidsr.media.decode import FrameDecoder

    with FrameDecoder(path, index, index + 1, info=info) as frames:
        return _to8(next(iter(frames)).rgb)


def slots(count: int, wanted: int) -> list[list[int]]:
    """``wanted`` slots spread evenly over ``count`` frames, each a few frame indices to try
    in order (its first frame, then two later ones inside the slot): a skipped frame is made
    up for near where it was, so the whole source is sampled."""
    n = min(count, max(1, wanted))
    starts = [int(i) for i in np.linspace(0, count, n, endpoint=False)]
    out = []
    for j, a in enumerate(starts):
        b = starts[j + 1] if j + 1 < n else count
        out.append(list(dict.fromkeys([a, a + (b - a) // 3, a + 2 * (b - a) // 3])))
    return out


def sample_source(path: Path, wanted: int) -> Iterator[Frame]:
    """Up to ``wanted`` frames of a video file or image folder, evenly spread, neither
    near-black nor held."""
    if path.is_dir():
        files = _images_in(path)
        if not files:
            raise InputError(f"{path}: no images in the folder (png, jpg, webp, bmp, tif)")
        read = lambda i: _read_rgb8(files[i])  # noqa: E731
        count = len(files)
    else:
        info, count = _video_frame_count(path)
        read = lambda i: _video_frame(path, info, i)  # noqa: E731
    last = None
    for tries in slots(count, wanted):
        for index in tries:
            rgb = read(index)
            if is_black(rgb) or is_held(rgb, last):
                continue
            last = rgb
            yield Frame(rgb, str(path), index)
            break


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb, "RGB").save(path, format="PNG")


def _staging(output: Path, overwrite: bool) -> Path:
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; give another -o, or --overwrite to replace it")
    tmp = output.with_name(f".{output.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "hr").mkdir(parents=True)
    return tmp


def _finish(tmp: Path, output: Path, manifest: dict[str, Any]) -> Path:
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return output


def prepare_dataset(
    sources: Sequence[Path], output: Path, *, frames: int = 200, overwrite: bool = False
) -> dict[str, Any]:
    """Sample ``frames`` frames from each source (videos or image folders) into ``output``
    (``hr/*.png`` and ``manifest.json``); returns the manifest. ``UsageError`` without
    sources, ``InputError`` for a source that gives no usable frame."""
    if not sources:
        raise UsageError("finetune prepare needs a source: videos or image folders")
    for src in sources:
        if not src.exists():
            raise InputError(f"{src}: no such file or folder")
    tmp = _staging(output, overwrite)
    items: list[dict[str, Any]] = []
    try:
        for n, src in enumerate(sources):
            got = 0
            for frame in sample_source(src, frames):
                name = f"hr/{n:03d}_{frame.index:07d}.png"
                _write_png(tmp / name, frame.rgb)
                items.append({"hr": name, "source": str(src), "frame": frame.index})
                got += 1
            if not got:
                raise InputError(
                    f"{src}: every sampled frame was black or held; nothing to train on"
                )
        manifest = {"version": 1, "kind": "hr", "scale": None, "items": items}
        _finish(tmp, output, manifest)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pair_reader(path: Path) -> tuple[int, Any, list[str]]:
    """(frame count, read(i) -> rgb, names) of a folder of images or a video."""
    if path.is_dir():
        files = _images_in(path)
        return len(files), (lambda i: _read_rgb8(files[i])), [f.name for f in files]
    info, count = _video_frame_count(path)
    return count, (lambda i: _video_frame(path, info, i)), [f"frame {i}" for i in range(count)]


def _sizes(path: Path) -> list[tuple[int, int]]:
    """(width, height) of every frame: image headers, or the video's stream size."""
    from PIL import Image

    if path.is_dir():
        out = []
        for f in _images_in(path):
            with Image.open(f) as im:
                out.append(im.size)
        return out
    info, count = _video_frame_count(path)
    return [(info.video.width, info.video.height)] * count


def _check_pairs(lr: Path, hr: Path, names_lr: list[str], names_hr: list[str]) -> int:
    """The one whole scale of every pair; ``InputError`` naming the first pair that is not."""
    scale = 0
    for i, ((lw, lh), (hw, hh)) in enumerate(zip(_sizes(lr), _sizes(hr), strict=True)):
        s = hh // lh if lh else 0
        scale = scale or s
        if s < 1 or hh != s * lh or hw != s * lw or s != scale:
            raise InputError(
                f"pair {i} ({names_lr[i]}, {names_hr[i]}): HR {hw}x{hh} is not "
                f"{scale or 'a whole'}x LR {lw}x{lh}"
            )
    return scale


def prepare_pairs(
    lr: Path, hr: Path, output: Path, *, frames: int = 200, overwrite: bool = False
) -> dict[str, Any]:
    """A paired dataset from ``lr`` and ``hr`` (folders or videos whose frames correspond:
    the same count, each HR frame exactly ``scale`` times its LR frame, one whole scale for
    all). A mismatch is refused in one line naming the first bad pair."""
    for src in (lr, hr):
        if not src.exists():
            raise InputError(f"{src}: no such file or folder")
    n_lr, read_lr, names_lr = _pair_reader(lr)
    n_hr, read_hr, names_hr = _pair_reader(hr)
    if n_lr != n_hr:
        raise InputError(f"{lr} has {n_lr} frames but {hr} has {n_hr}; pairs must correspond")
    if n_lr == 0:
        raise InputError(f"{lr}: no frames to pair")
    scale = _check_pairs(lr, hr, names_lr, names_hr)
    tmp = _staging(output, overwrite)
    (tmp / "lr").mkdir()
    items: list[dict[str, Any]] = []
    last = None
    try:
        for tries in slots(n_lr, frames):
            for index in tries:
                a, b = read_lr(index), read_hr(index)
                if is_black(b) or is_held(b, last):
                    continue
                last = b
                stem = f"{index:07d}.png"
                _write_png(tmp / "lr" / stem, a)
                _write_png(tmp / "hr" / stem, b)
                items.append({"lr": f"lr/{stem}", "hr": f"hr/{stem}", "frame": index})
                break
        if not items:
            raise InputError(f"{hr}: every sampled frame was black or held; nothing to train on")
        manifest = {"version": 1, "kind": "paired", "scale": scale, "items": items}
        _finish(tmp, output, manifest)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a prepared dataset; ``InputError`` naming what is wrong."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise InputError(f"{folder}: no such dataset folder (make one with vidsr finetune prepare)")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{folder} has no {MANIFEST}: it is not a dataset (make one with vidsr finetune prepare)"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    if not manifest.get("items"):
        raise InputError(f"{folder}: the dataset is empty")
    return manifest


def manifest_digest(folder: Path) -> str:
    """sha256 of the manifest: part of a training run's fingerprint."""
    return hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()


def load_rgb(folder: Path, name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of a dataset PNG."""
    from PIL import Image

    with Image.open(folder / name) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def pad_to(hr: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """``hr`` padded by reflection to at least ``size`` a side (and whether it was)."""
    h, w = hr.shape[:2]
    if h >= size and w >= size:
        return hr, False
    ph, pw = max(0, size - h), max(0, size - w)
    return np.pad(hr, ((0, ph), (0, pw), (0, 0)), mode="reflect"), True


def random_crop(
    hr: np.ndarray, lr: np.ndarray | None, gt_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """An aligned random crop (``gt_size`` of HR, ``gt_size / scale`` of LR) and a random
    horizontal flip, as Real-ESRGAN's datasets do (``use_hflip``; no rotation). HR smaller
    than the crop is padded by reflection first (Real-ESRGAN pads small images too)."""
    if lr is None:
        hr, _ = pad_to(hr, gt_size)
    h, w = hr.shape[:2]
    if lr is not None:
        ls = gt_size // scale
        lh, lw = lr.shape[:2]
        if lh < ls or lw < ls:
            raise InputError(f"an LR frame of {lw}x{lh} is smaller than the crop ({ls}x{ls})")
        top, left = int(rng.integers(0, lh - ls + 1)), int(rng.integers(0, lw - ls + 1))
        lr = lr[top : top + ls, left : left + ls]
        hr = hr[top * scale : top * scale + gt_size, left * scale : left * scale + gt_size]
    else:
        top, left = int(rng.integers(0, h - gt_size + 1)), int(rng.integers(0, w - gt_size + 1))
        hr = hr[top : top + gt_size, left : left + gt_size]
    if rng.random() < 0.5:
        hr = hr[:, ::-1]
        lr = lr[:, ::-1] if lr is not None else None
    return np.ascontiguousarray(hr), None if lr is None else np.ascontiguousarray(lr)


def prepare(sources: Sequence[Path], settings: Any) -> dict[str, Any]:
    """``vidsr finetune prepare``: the paired form with ``--lr``/``--hr``, else frames from
    ``sources``."""
    out = Path(settings.output)
    if settings.lr is not None or settings.hr is not None:
        if sources or settings.lr is None or settings.hr is None:
            raise UsageError("the paired form takes --lr A and --hr B, and no other sources")
        return prepare_pairs(settings.lr, settings.hr, out, frames=settings.frames,
                             overwrite=settings.overwrite)  # fmt: skip
    return prepare_dataset(list(sources), out, frames=settings.frames, overwrite=settings.overwrite)
