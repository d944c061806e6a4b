"""Model-stage speed of community models and ONNX files on the CPU, per runtime.

Builds models at the sizes they are shared at (random weights: speed does not depend on
them): spandrel's SPAN (48 channels, x2) and RealPLKSR (64 channels, 28 blocks, x2), and an
ONNX export of realesr-animevideov3 (the bundled weights, x4, dynamic shape). Each is run
through ``vidsr``'s upscaler on the same input frames under every runtime that applies -
``torch``, ``openvino`` (for spandrel models converted per input shape), ``onnxruntime`` (ONNX
only) - interleaved, after one warm-up call each, and compared with the first runtime's output.

    .venv/bin/python benchmarks/community.py                     # 320x240, 3 frames
    .venv/bin/python benchmarks/community.py --size 640x480 --frames 2

spandrel needs torchvision at import; where it is not installed (this machine) the test
stand-in in ``tests/stubs`` is put on the path, as the tests do.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(ROOT / "tests" / "stubs"))

from vidsr.pipeline.infer import build_upscaler  # noqa: E402


def build(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """{label: (model file, runtimes)}."""
    from safetensors.torch import save_file
    from spandrel.architectures.PLKSR import RealPLKSR
    from spandrel.architectures.SPAN import SPAN

    from vidsr.models.loader import load_network

    torch.manual_seed(0)
    out: dict[str, tuple[Path, tuple[str, ...]]] = {}
    for label, model in (
        ("SPAN 48ch x2", SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=2)),
        ("RealPLKSR 64ch 28b x2", RealPLKSR(dim=64, n_blocks=28, upscaling_factor=2)),
    ):
        path = tmp / f"{label.split()[0]}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        out[label] = (path, ("torch", "openvino"))
    net = load_network("realesr-animevideov3")
    onnx = tmp / "animevideov3.onnx"
    torch.onnx.export(
        net.module, torch.rand(1, 3, 64, 64), str(onnx), input_names=["input"],
        output_names=["output"], dynamo=False, opset_version=17,
        dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}},
    )  # fmt: skip
    out["realesr-animevideov3 (.pth, torch)"] = (Path("realesr-animevideov3"), ("torch",))
    out["realesr-animevideov3 (.onnx)"] = (onnx, ("openvino", "onnxruntime"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    torch.manual_seed(1)
    frames = [torch.rand(1, 3, h, w) for _ in range(args.frames)]
    print(f"{'model':<36} {'runtime':>11} {'ms/frame':>9} {'max abs vs first':>17}")
    with tempfile.TemporaryDirectory() as name:
        first_out: dict[str, torch.Tensor] = {}
        for label, (path, runtimes) in build(Path(name)).items():
            ups = {
                rt: build_upscaler(str(path), device="cpu", precision="fp32", runtime=rt)
                for rt in runtimes
            }
            for up in ups.values():
                up(frames[0])  # warm-up: conversion and compilation are not timed
            spent = dict.fromkeys(ups, 0.0)
            outs: dict[str, torch.Tensor] = {}
            for x in frames:  # interleaved: machine noise falls on every runtime alike
                for rt, up in ups.items():
                    t0 = time.perf_counter()
                    outs[rt] = up(x)
                    spent[rt] += time.perf_counter() - t0
            key = label.split(" (")[0]
            for rt in ups:
                ref = first_out.setdefault(key, outs[rt])
                diff = float((outs[rt] - ref).abs().max())
                ms = 1000 * spent[rt] / len(frames)
                print(f"{label:<36} {rt:>11} {ms:9.1f} {diff:17.2e}", flush=True)


if __name__ == "__main__":
    main()
