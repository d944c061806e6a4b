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

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
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


@dataclass(frozen=True)
class _Source:
    """A video or an image folder, probed once: its frame count, each frame's name and
    size, and how to read frame ``i`` (8-bit RGB)."""

    path: Path
    count: int
    names: list[str]
    sizes: list[tuple[int, int]]
    info: Any = None
    files: tuple[Path, ...] = ()

    def read(self, index: int) -> np.ndarray:
        if self.info is None:
            return _read_rgb8(self.files[index])
        from vidsr.media.decode import FrameDecoder

        with FrameDecoder(self.path, index, index + 1, info=self.info) as frames:
            return _to8(next(iter(frames)).rgb)


def open_source(path: Path) -> _Source:
    """``path`` (a video or a folder of images) as a :class:`_Source`; ``InputError`` for a
    missing one or a folder without images."""
    from PIL import Image

    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _images_in(path)
        if not files:
            raise InputError(f"{path}: no images in the folder (png, jpg, webp, bmp, tif)")
        sizes = []
        for f in files:
            with Image.open(f) as im:  # the header only
                sizes.append(im.size)
        return _Source(path, len(files), [f.name for f in files], sizes, files=tuple(files))
    from vidsr.media.probe import probe

    info = probe(path)
    count = int(info.video.frame_count)
    size = (info.video.width, info.video.height)
    return _Source(path, count, [f"frame {i}" for i in range(count)], [size] * count, info)


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


def sampled(
    count: int, wanted: int, read: Callable[[int], Any], judged: Callable[[Any], np.ndarray]
) -> Iterator[tuple[int, Any]]:
    """``(index, read(index))`` of up to ``wanted`` frames spread over ``count`` (see
    :func:`slots`) whose picture (``judged(value)``) is neither near-black nor held."""
    last = None
    for tries in slots(count, wanted):
        for index in tries:
            value = read(index)
            rgb = judged(value)
            if is_black(rgb) or is_held(rgb, last):
                continue
            last = rgb
            yield index, value
            break


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb, "RGB").save(path, format="PNG")


@contextlib.contextmanager
def _staged(output: Path, overwrite: bool, folders: Sequence[str]) -> Iterator[Path]:
    """A temporary folder beside ``output`` with ``folders`` in it, removed if the body
    fails; the body ends by :func:`_finish` renaming it to ``output``."""
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; give another -o, or --overwrite to replace it")
    tmp = output.with_name(f".{output.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name in folders:
            (tmp / name).mkdir(parents=True)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish(tmp: Path, output: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return manifest


def prepare_dataset(
    sources: Sequence[Path], output: Path, *, frames: int = 200, overwrite: bool = False
) -> dict[str, Any]:
    """Sample ``frames`` frames from each source (videos or image folders) into ``output``
    (``hr/*.png`` and ``manifest.json``); returns the manifest. ``UsageError`` without
    sources, ``InputError`` for a source that gives no usable frame."""
    if not sources:
        raise UsageError("finetune prepare needs a source: videos or image folders")
    opened = [open_source(src) for src in sources]
    items: list[dict[str, Any]] = []
    with _staged(output, overwrite, ["hr"]) as tmp:
        for n, src in enumerate(opened):
            before = len(items)
            for index, rgb in sampled(src.count, frames, src.read, lambda v: v):
                name = f"hr/{n:03d}_{index:07d}.png"
                _write_png(tmp / name, rgb)
                items.append({"hr": name, "source": str(src.path), "frame": index})
            if len(items) == before:
                raise InputError(
                    f"{src.path}: every sampled frame was black or held; nothing to train on"
                )
        return _finish(tmp, output, {"version": 1, "kind": "hr", "scale": None, "items": items})


def _check_pairs(lr: _Source, hr: _Source) -> int:
    """The one whole scale of every pair; ``InputError`` naming the first pair that is not."""
    scale = 0
    for i, ((lw, lh), (hw, hh)) in enumerate(zip(lr.sizes, hr.sizes, strict=True)):
        s = hh // lh if lh else 0
        scale = scale or s
        if s < 1 or hh != s * lh or hw != s * lw or s != scale:
            raise InputError(
                f"pair {i} ({lr.names[i]}, {hr.names[i]}): HR {hw}x{hh} is not "
                f"{scale or 'a whole'}x LR {lw}x{lh}"
            )
    return scale


def prepare_pairs(
    lr: Path, hr: Path, output: Path, *, frames: int = 200, overwrite: bool = False
) -> dict[str, Any]:
    """A paired dataset from ``lr`` and ``hr`` (folders or videos whose frames correspond:
    the same count, each HR frame exactly ``scale`` times its LR frame, one whole scale for
    all). A mismatch is refused in one line naming the first bad pair."""
    a, b = open_source(lr), open_source(hr)
    if a.count != b.count:
        raise InputError(f"{lr} has {a.count} frames but {hr} has {b.count}; pairs must correspond")
    scale = _check_pairs(a, b)
    items: list[dict[str, Any]] = []
    with _staged(output, overwrite, ["hr", "lr"]) as tmp:
        pairs = sampled(a.count, frames, lambda i: (a.read(i), b.read(i)), lambda v: v[1])
        for index, (small, big) in pairs:
            stem = f"{index:07d}.png"
            _write_png(tmp / "lr" / stem, small)
            _write_png(tmp / "hr" / stem, big)
            items.append({"lr": f"lr/{stem}", "hr": f"hr/{stem}", "frame": index})
        if not items:
            raise InputError(f"{hr}: every sampled frame was black or held; nothing to train on")
        manifest = {"version": 1, "kind": "paired", "scale": scale, "items": items}
        return _finish(tmp, output, manifest)


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


def pad_to(hr: np.ndarray, size: int) -> np.ndarray:
    """``hr`` padded by reflection to at least ``size`` a side."""
    h, w = hr.shape[:2]
    if h >= size and w >= size:
        return hr
    ph, pw = max(0, size - h), max(0, size - w)
    return np.pad(hr, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def random_crop(
    hr: np.ndarray, lr: np.ndarray | None, gt_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """An aligned random crop (``gt_size`` of HR, ``gt_size / scale`` of LR) and a random
    horizontal flip, as Real-ESRGAN's datasets do (``use_hflip``; no rotation). HR smaller
    than the crop is padded by reflection first (Real-ESRGAN pads small images too)."""
    if lr is None:
        hr = pad_to(hr, gt_size)
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
