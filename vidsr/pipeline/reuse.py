"""Held-frame reuse (``--reuse off|exact|auto``): anime holds drawings for two or three frames
and shots for seconds; the model need not compute again what it computed from the same input.

Each frame is cut into ``TILE`` x ``TILE`` tiles. A tile's output depends only on the input
within the network's receptive field around it (:func:`receptive_margin`: SRVGGNetCompact's
3x3 convolutions reach one pixel each; RRDBNet's reach is the whole frame, so there the whole
frame is one tile). The input that produced each tile's cached output - the tile plus that
margin - is kept; a new frame's tile is reused when its input equals that one (``exact``), or
differs by at most ``threshold`` levels anywhere in it (``auto``: compression noise on a held
drawing). Comparing with the input that made the cache, never with the previous frame, keeps
noise from adding up over a long hold.

Changed tiles, each with its margin, go through the model together (one batch per crop
shape); their centres are pasted over the cached output. A frame with at least ``FULL_SHARE``
of its tiles changed - a scene cut, a pan - runs whole, as without reuse, and replaces the
cache. The cache starts empty at every ``PERIOD``-th output frame (counted from the run's first
frame); chunks start at such frames, so a chunked run gives the output of one pass.

Exactness: a reused tile is the very output computed before from the same input (``exact``);
computing changed tiles apart from the rest gives the same values up to float rounding (the
network sees the same pixels within its reach), measured in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: Tile edge, in input pixels.
TILE = 64
#: Share of changed tiles from which a frame runs whole.
FULL_SHARE = 0.5
#: The cache starts empty every PERIOD output frames (chunks start at multiples of it).
PERIOD = 48
#: ``--reuse auto``'s threshold, in 8-bit levels (docs/BENCHMARKS.md: the speed/PSNR curve).
AUTO_THRESHOLD = 6


def receptive_margin(module: torch.nn.Module, arch: str) -> int | None:
    """How far (input pixels) the network's output depends on its input around a pixel:
    SRVGGNetCompact's convolutions (the sum of their half kernels, times dilation), None for
    architectures whose reach is the whole frame (RRDBNet, spandrel's other architectures,
    ONNX graphs: reuse of whole frames only). spandrel's Compact is the same network."""
    if arch not in ("SRVGGNetCompact", "Compact"):
        return None
    reach = 0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            k = max(layer.kernel_size)
            reach += (k // 2) * max(layer.dilation)
    return reach


def threshold_for(mode: str) -> int | None:
    """The largest difference (8-bit levels) a reused tile may have; None: reuse is off."""
    return {"exact": 0, "auto": AUTO_THRESHOLD}.get(mode)


@dataclass
class ReuseStats:
    """Tiles looked at and tiles reused, over a segment."""

    tiles: int = 0
    reused: int = 0


@dataclass
class HeldFrames:
    """One segment's cache (frames come in order). ``threshold``: levels (0: exact);
    ``margin``: the receptive field (None: whole frames)."""

    threshold: int
    margin: int | None
    scale: int
    stats: ReuseStats = field(default_factory=ReuseStats)
    _refs: dict[tuple[int, int], list[np.ndarray]] = field(default_factory=dict)
    _canvas: torch.Tensor | None = None

    def tiles(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """(y0, y1, x0, x1) of every tile of an h x w frame."""
        if self.margin is None:
            return [(0, h, 0, w)]
        return [
            (y, min(y + TILE, h), x, min(x + TILE, w))
            for y in range(0, h, TILE)
            for x in range(0, w, TILE)
        ]

    def _region(self, t: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
        m = self.margin or 0
        y0, y1, x0, x1 = t
        return max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)

    def _crops(self, frame: Any, region: tuple[int, int, int, int]) -> list[np.ndarray]:
        """Views of the frame's samples that the model's input in ``region`` comes from:
        RGB there, or each YUV plane at its own size - chroma one sample wider on each side
        where subsampled (upsampling it to RGB reads the next chroma sample)."""
        y0, y1, x0, x1 = region
        planes = getattr(frame, "planes", None)
        if planes is None:
            return [frame.rgb[y0:y1, x0:x1]]
        full_h, full_w = planes.y.shape[:2]
        out = []
        for p in (planes.y, planes.u, planes.v):
            sy, sx = (2 if p.shape[0] < full_h else 1), (2 if p.shape[1] < full_w else 1)
            ey, ex = sy - 1, sx - 1  # the upsampler's reach, in chroma samples
            rows = slice(max(0, y0 // sy - ey), -(-y1 // sy) + ey)
            cols = slice(max(0, x0 // sx - ex), -(-x1 // sx) + ex)
            out.append(p[rows, cols])
        return out

    def _limit(self, frame: Any) -> int:
        """The threshold (8-bit levels) in the frame's own sample values: RGB16 spans 65535,
        YUV planes their bit depth (a p010 sample sits ``shift`` bits up)."""
        planes = getattr(frame, "planes", None)
        if planes is not None:
            layout = planes.layout
            return round(self.threshold * ((1 << layout.bits) - 1) / 255) << layout.shift
        return self.threshold * (257 if frame.rgb.dtype == np.uint16 else 1)

    def _same(self, now: list[np.ndarray], ref: list[np.ndarray], limit: int) -> bool:
        if limit == 0:
            return all(np.array_equal(a, b) for a, b in zip(now, ref, strict=True))
        return all(
            int(np.abs(a.astype(np.int32) - b).max()) <= limit
            for a, b in zip(now, ref, strict=True)
        )

    def _plan(
        self, frame: Any, index: int, h: int, w: int
    ) -> tuple[list[tuple[int, int, int, int]] | None, int]:
        """The tiles of ``frame`` (output frame ``index``) to compute (None: the whole frame)
        and how many are reused; the inputs behind the cache (``_refs``: copies, so that no
        frame is kept alive) updated for the tiles computed."""
        tiles = self.tiles(h, w)
        now = {t[:3:2]: self._crops(frame, self._region(t, h, w)) for t in tiles}
        if not self._refs or index % PERIOD == 0:  # nothing cached yet, or a period starts
            changed = tiles
        else:
            limit = self._limit(frame)
            changed = [t for t in tiles if not self._same(now[t[:3:2]], self._refs[t[:3:2]], limit)]
        whole = changed is tiles or len(changed) >= FULL_SHARE * len(tiles)
        for t in tiles if whole else changed:
            self._refs[t[:3:2]] = [c.copy() for c in now[t[:3:2]]]
        return (None, 0) if whole else (changed, len(tiles) - len(changed))

    def planned(self, frames: Iterator[Any], offset: int = 0) -> Iterator[Planned]:
        """``frames`` (in order) each with its plan: the tiles to compute, or None for the
        whole frame. Plans depend on the inputs only, so they are made here, in order, and the
        frames can then run in any lane; ``offset``: a frame's ``index`` less its output
        index."""
        for f in frames:
            h, w = _size(f)
            tiles, reused = self._plan(f, f.index - offset, h, w)
            self.stats.tiles += len(self.tiles(h, w))
            self.stats.reused += reused
            yield Planned(f, tiles)

    def compute(self, x: torch.Tensor, frames: Sequence[Planned], net: Any) -> HeldParts:
        """What the model must compute for a batch (``x``: its model input): the whole frames
        in one call, each other frame's changed tiles with their margins (one call per crop
        shape). Nothing here depends on other batches: lanes may run batches at once."""
        whole = [i for i, f in enumerate(frames) if f.tiles is None]
        full = net(x[whole]) if whole else None
        items: list[tuple[str, Any]] = []
        for i, f in enumerate(frames):
            if f.tiles is None:
                items.append(("whole", full[whole.index(i)]))  # type: ignore[index]
            elif f.tiles:
                items.append(("tiles", self._tiles_out(x[i], f.tiles, net)))
            else:
                items.append(("held", None))
        return HeldParts(items)

    def compose(self, item: tuple[str, Any]) -> torch.Tensor:
        """The frame's whole output (3, H*s, W*s) from its computed part and the cache, which
        it updates: called for every frame in order."""
        kind, data = item
        if kind == "whole":
            self._canvas = data
        elif kind == "tiles":
            s = self.scale
            for t, out in data:  # in place: the previous frame's output was copied out
                self._canvas[:, t[0] * s : t[1] * s, t[2] * s : t[3] * s] = out  # type: ignore[index]
        assert self._canvas is not None, "a held frame before any computed one"
        return self._canvas  # read-only for the caller: the next frames build on it

    def _tiles_out(
        self, x: torch.Tensor, tiles: list[tuple[int, int, int, int]], net: Any
    ) -> list[tuple[tuple[int, int, int, int], torch.Tensor]]:
        """Each of ``tiles`` of one frame computed with its margin (one batch per crop
        shape): (tile, its output)."""
        _, h, w = x.shape
        s = self.scale
        by_shape: dict[tuple[int, int], list[Any]] = {}
        for t in tiles:
            r = self._region(t, h, w)
            by_shape.setdefault((r[1] - r[0], r[3] - r[2]), []).append((t, r))
        out: list[tuple[tuple[int, int, int, int], torch.Tensor]] = []
        for shape, group in by_shape.items():
            # no call larger than the whole frame (what the step's memory was sized for)
            per = max(1, (h * w) // (shape[0] * shape[1]))
            for i in range(0, len(group), per):
                part = group[i : i + per]
                y = net(torch.stack([x[:, r[0] : r[1], r[2] : r[3]] for _, r in part]))
                for k, (t, r) in enumerate(part):
                    oy, ox = (t[0] - r[0]) * s, (t[2] - r[2]) * s
                    th, tw = (t[1] - t[0]) * s, (t[3] - t[2]) * s
                    out.append((t, y[k, :, oy : oy + th, ox : ox + tw]))
        return out


@dataclass
class HeldParts:
    """A batch's computed parts, one per frame: ``("whole", output)``, ``("tiles", [(tile,
    output)])`` or ``("held", None)``; :meth:`HeldFrames.compose` makes the frames.
    ``finished``: the whole frames' positions and their output, finished in the lane that
    computed them (the step's own result: an array or a pending download)."""

    items: list[tuple[str, Any]]
    finished: tuple[list[int], Any] | None = None


class Planned:
    """A decoded frame and its reuse plan (``tiles``: None for the whole frame); reads as
    the frame otherwise."""

    def __init__(self, frame: Any, tiles: list[tuple[int, int, int, int]] | None) -> None:
        self.frame, self.tiles = frame, tiles

    def __getattr__(self, name: str) -> Any:
        return getattr(self.frame, name)


def _size(frame: Any) -> tuple[int, int]:
    planes = getattr(frame, "planes", None)
    arr = planes.y if planes is not None else frame.rgb
    return int(arr.shape[0]), int(arr.shape[1])
