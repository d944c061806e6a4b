"""An independent reference: run an ncnn ``.param``/``.bin`` graph with torch ops (fp32, CPU).

Written from the ncnn file format and layer definitions alone (it shares nothing with
``vidsr.models.ncnn``), so a match between vidsr's networks and this interpreter on the
graphs Real-ESRGAN exported itself shows vidsr computes what Real-ESRGAN computes.

Only what the Real-ESRGAN x4 graphs use is supported; anything else is an error:
Input, Split, Concat (channel axis), Convolution (+ fused leaky ReLU), PReLU, Eltwise,
BinaryOp add, Interp nearest, PixelShuffle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MAGIC = 7767517
TAG_FP16 = 0x01306B47  # ModelBin "auto" blob: the tag 0x01306B47 means fp16 data follows
TAG_FP32 = 0  # ... and 0 means raw fp32


def parse_value(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_params(tokens: list[str]) -> dict[int, object]:
    """``k=v`` pairs; a key ``-233xx`` is the array for id ``xx``: ``n,v1,...,vn``."""
    params: dict[int, object] = {}
    for token in tokens:
        key_text, value = token.split("=", 1)
        key = int(key_text)
        if key <= -23300:
            count, *items = value.split(",")
            assert int(count) == len(items), token
            params[-key - 23300] = [parse_value(v) for v in items]
        else:
            params[key] = parse_value(value)
    return params


class WeightReader:
    """Reads a ``.bin`` front to back, as ncnn's ModelBinFromDataReader does."""

    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        self.pos = 0

    def _take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "read past the end of the .bin"
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def raw_fp32(self, count: int) -> torch.Tensor:  # ModelBin::load(w, type=1)
        return torch.from_numpy(np.frombuffer(self._take(4 * count), "<f4").copy())

    def tagged(self, count: int) -> torch.Tensor:  # ModelBin::load(w, type=0)
        tag = int.from_bytes(self._take(4), "little")
        if tag == TAG_FP32:
            return self.raw_fp32(count)
        assert tag == TAG_FP16, f"unsupported weight storage tag {tag:#010x}"
        chunk = self._take((2 * count + 3) // 4 * 4)[: 2 * count]  # padded to 4 bytes
        return torch.from_numpy(np.frombuffer(chunk, "<f2").astype(np.float32))


def _pixel_shuffle(x: torch.Tensor, r: int, mode: int) -> torch.Tensor:
    """ncnn PixelShuffle: out[p, i*r+sh, j*r+sw] = in[q, i, j] with q = p*r*r + sh*r + sw
    (mode 0, like torch's pixel_shuffle / ONNX DepthToSpace CRD) or q = (sh*r + sw)*outc + p
    (mode 1, DepthToSpace DCR)."""
    n, c, h, w = x.shape
    outc = c // (r * r)
    if mode == 0:
        x = x.reshape(n, outc, r, r, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        x = x.reshape(n, r, r, outc, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, outc, h * r, w * r)


def run_ncnn(param_path: Path, bin_path: Path, image: torch.Tensor) -> torch.Tensor:
    """Execute the graph on ``image`` (1, C, H, W) and return the blob named ``output``
    (or the last layer's first output)."""
    lines = param_path.read_text().split("\n")
    assert int(lines[0]) == MAGIC, f"{param_path}: not an ncnn param file"
    layer_count, _blob_count = map(int, lines[1].split())
    weights = WeightReader(bin_path)
    blobs: dict[str, torch.Tensor] = {}
    last = ""
    for line in lines[2 : 2 + layer_count]:
        kind, _name, n_in, n_out, *rest = line.split()
        bottoms, tops = rest[: int(n_in)], rest[int(n_in) : int(n_in) + int(n_out)]
        p = parse_params(rest[int(n_in) + int(n_out) :])
        xs = [blobs.pop(b) for b in bottoms]  # every blob is consumed exactly once
        if kind == "Input":
            ys = [image.to(torch.float32)]
        elif kind == "Split":
            ys = [xs[0]] * len(tops)
        elif kind == "Concat":
            assert p.get(0, 0) == 0, "Concat on an axis other than channels"
            ys = [torch.cat(xs, dim=1)]
        elif kind == "Convolution":
            out_ch, k = int(p[0]), int(p[1])
            assert p.get(11, k) == k and p.get(2, 1) == p.get(3, 1) == 1, "conv geometry"
            assert set(p) <= {0, 1, 4, 5, 6, 9, 10, 11}, f"conv params {sorted(p)}"
            in_ch = int(p[6]) // (out_ch * k * k)
            weight = weights.tagged(int(p[6])).reshape(out_ch, in_ch, k, k)
            bias = weights.raw_fp32(out_ch) if p.get(5, 0) else None
            y = F.conv2d(xs[0], weight, bias, padding=int(p.get(4, 0)))
            act = p.get(9, 0)
            if act == 2:
                y = F.leaky_relu(y, float(p[10][0]))
            else:
                assert act == 0, f"activation type {act}"
            ys = [y]
        elif kind == "PReLU":
            slopes = weights.raw_fp32(int(p[0]))
            ys = [torch.where(xs[0] >= 0, xs[0], xs[0] * slopes.view(1, -1, 1, 1))]
        elif kind == "Eltwise":
            assert p.get(0) == 1, "Eltwise op other than sum"
            coeffs = p.get(1) or [1.0] * len(xs)
            ys = [sum(float(c) * x for c, x in zip(coeffs, xs, strict=True))]
        elif kind == "BinaryOp":
            assert p.get(0, 0) == 0 and not p.get(1, 0), "BinaryOp other than add of two blobs"
            ys = [xs[0] + xs[1]]
        elif kind == "Interp":
            assert p.get(0) == 1, "Interp other than nearest"
            x, sh, sw = xs[0], float(p[1]), float(p[2])
            h, w = x.shape[2:]
            # ncnn: out[y] = in[min(int(y * (1 / scale)), h - 1)], output size int(h * scale)
            rows = [min(int(y * (1.0 / sh)), h - 1) for y in range(int(h * sh))]
            cols = [min(int(i * (1.0 / sw)), w - 1) for i in range(int(w * sw))]
            ys = [x[:, :, rows][:, :, :, cols]]
        elif kind == "PixelShuffle":
            ys = [_pixel_shuffle(xs[0], int(p[0]), int(p.get(1, 0)))]
        else:
            raise NotImplementedError(f"ncnn layer type {kind}")
        blobs.update(zip(tops, ys, strict=True))
        last = tops[0]
    assert weights.pos == len(weights.data), (
        f"{bin_path}: {len(weights.data) - weights.pos} bytes left unread"
    )
    return blobs.get("output", blobs.get(last))
