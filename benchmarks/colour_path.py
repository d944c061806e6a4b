"""What moving YUV<->RGB onto the model's device takes off the CPU stages.

With ``--device-colour on`` (the default on CUDA) the decode thread only copies the YUV planes
out of each frame and the encoder process only wraps planes in a frame; the matrix, the
chroma resampling and the quantisation run in torch where the model runs. This times, per
frame and in one thread:

- decode side: numpy/swscale ``ToRGB`` (the CPU path) against ``ToPlanes`` (what remains on the
  CPU), and ``planes_to_rgb`` in torch on the CPU (what the GPU takes over);
- encode side: ``FromRGB`` (numpy matrix + swscale 4:2:0) against wrapping planes in a frame,
  and ``rgb_to_planes`` in torch on the CPU.

    .venv/bin/python benchmarks/colour_path.py --size 1920x1080 --repeat 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import torch

from vidsr.media import colour as C


def per_frame_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the frames")
    ap.add_argument("--pix-fmt", default="yuv420p")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: one core)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    layout = C.planar_layout(args.pix_fmt)
    assert layout is not None, f"{args.pix_fmt} is not planar YUV"
    rng = np.random.default_rng(0)
    # A smooth random picture (noise alone would be unlike video, but costs the same here).
    rgb = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
    rgb = np.ascontiguousarray(rgb.repeat(8, 0).repeat(8, 1)[:h, :w])
    matrix, rng_tag = C.MATRIX_BT709, C.RANGE_LIMITED
    to_yuv = C.FromRGB(pix_fmt=args.pix_fmt, matrix=matrix, colour_range=rng_tag)
    frame = to_yuv(rgb)  # a decoded-like frame in the planar format
    to_rgb = C.ToRGB(matrix=matrix, colour_range=rng_tag, high_bit_depth=layout.bits > 8)
    to_planes = C.ToPlanes(layout)
    planes = to_planes(frame)

    def tens(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a if a.dtype == np.uint8 else a.view(np.int16))[None]

    yt, ut, vt = tens(planes.y), tens(planes.u), tens(planes.v)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
    ch, cw = layout.chroma_size(h, w)

    def wrap() -> av.VideoFrame:
        f = av.VideoFrame(w, h, args.pix_fmt)
        for plane, part in zip(f.planes[:3], (planes.y, planes.u, planes.v), strict=True):
            C._plane(plane, layout.dtype)[...] = part
        return f

    rows = [
        ("decode: ToRGB (numpy + swscale), CPU path", lambda: to_rgb(frame)),
        ("decode: ToPlanes (copy planes), device path", lambda: to_planes(frame)),
        (
            "decode: planes_to_rgb in torch, on this CPU",
            lambda: C.planes_to_rgb(yt, ut, vt, layout, matrix=matrix, colour_range=rng_tag),
        ),
        ("encode: FromRGB (numpy + swscale), CPU path", lambda: to_yuv(rgb)),
        ("encode: wrap planes in a frame, device path", wrap),
        (
            "encode: rgb_to_planes in torch, on this CPU",
            lambda: C.rgb_to_planes(x, layout, matrix=matrix, colour_range=rng_tag),
        ),
    ]
    print(f"{w}x{h} {args.pix_fmt} ({ch}x{cw} chroma), torch threads {args.threads}, "
          f"median of {args.repeat}")  # fmt: skip
    for label, fn in rows:
        ms = per_frame_ms(fn, args.repeat)
        print(f"  {label:<48} {ms:8.2f} ms/frame  {1000 / ms:8.1f} fps")


if __name__ == "__main__":
    main()
