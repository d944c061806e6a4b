"""Check a GPU in minutes: numerics, speed, memory, colour, NVDEC, NVENC, a short bench.

One command from a checkout with a CUDA torch (under 8 minutes planned on one H100/H200;
each step has a time budget and the whole run a deadline, after which the steps left are
skipped with a line). It writes one JSON file and prints a short table:

- ``numerics``: realesr-animevideov3 and RealESRGAN_x4plus at fp32, fp16 and bf16 on the GPU
  against a CPU fp32 reference (PSNR, worst difference in 8-bit levels, NaN/Inf);
- ``model``: model-only fps and achieved TFLOP/s (animevideov3 at 1920x1080 input, x4plus at
  640x360; channels_last, ``cudnn.benchmark``, fp16) over a batch sweep, against the FLOPs
  counted from the convolutions;
- ``memory``: the batch size :mod:`vidsr.pipeline.memory` chooses against the memory a
  batch really takes per frame, then a batch made too large on purpose: a real out-of-memory
  error, retried smaller (:class:`~vidsr.pipeline.step.ResilientStep`), every frame once and
  equal to the frames run one by one;
- ``colour``: a lossless (FFV1) run with device colour on against off: same frames and times,
  pixels within the chroma filters' rounding;
- ``nvdec``: an H.264 clip decoded by NVDEC against software: whether NVDEC really decoded
  (not PyAV's silent fallback), frames equal, speed of each;
- ``nvenc``: which NVENC encoders open at 1080p, 4K 10-bit and 8K, and what
  ``--codec auto`` picks for each;
- ``bench``: ``vidsr bench`` at 854x480.

Without CUDA every GPU step is skipped with one line (CI runs it so: it cannot rot), and
``--smoke`` runs every step at tiny sizes on whatever device there is (a test does, on the
CPU), so each step's code is exercised here too.

    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --smoke --device cpu --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANIME = "realesr-animevideov3"
X4PLUS = "RealESRGAN_x4plus"
DEADLINE_S = 7 * 60  # the whole run: steps that would start later are skipped


@dataclass
class Check:
    """What every step reads: the device, the sizes (``smoke``: tiny), a scratch folder."""

    device: torch.device
    smoke: bool
    tmp: Path
    started: float

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def size(self, full: tuple[int, int], tiny: tuple[int, int] = (64, 36)) -> tuple[int, int]:
        return tiny if self.smoke else full

    def precisions(self) -> list[str]:
        return ["fp32", "fp16", "bf16"] if self.cuda else ["fp32", "bf16"]

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


# --- helpers -----------------------------------------------------------------------------


def conv_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds x2 of every convolution ``module`` runs on ``x`` (forward hooks)."""
    total = 0

    def hook(m: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += 2 * out.numel() * (m.in_channels // m.groups) * k

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def upscaler(model: str, device: torch.device, precision: str, **kw: Any) -> Any:
    from vidsr.models.loader import load_network
    from vidsr.pipeline.infer import Upscaler, resolve_precision

    dtype = resolve_precision(precision, device)
    return Upscaler(load_network(model), device=device, dtype=dtype, **kw)


def timed(run: Callable[[], Any], check: Check, budget: float) -> tuple[int, float]:
    """(calls, seconds) of ``run()`` repeated for about ``budget`` seconds after 2 warm-ups."""
    for _ in range(2):
        run()
    check.sync()
    n, t0 = 0, time.perf_counter()
    while True:
        run()
        n += 1
        if n >= 3 and time.perf_counter() - t0 >= budget:
            break
    check.sync()
    return n, time.perf_counter() - t0


def make_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """An H.264 clip (ffmpeg testsrc2 + a tone), as ``vidsr bench`` makes it."""
    from vidsr.bench import make_clip as bench_clip

    return bench_clip(path, width, height, frames)


def frames_of(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --- steps -------------------------------------------------------------------------------


def numerics(check: Check) -> dict[str, Any]:
    """Each precision on the device against CPU fp32."""
    out: dict[str, Any] = {}
    w, h = check.size((256, 256), (32, 32))
    x = torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(0))
    for model in (ANIME, X4PLUS):
        ref = upscaler(model, torch.device("cpu"), "fp32")(x).numpy()
        for precision in check.precisions():
            y = upscaler(model, check.device, precision)(x, check_finite=False).cpu().numpy()
            out[f"{model} {precision}"] = {
                "psnr_db": round(psnr(y, ref), 2),
                "max_diff_levels": round(float(np.abs(y - ref).max()) * 255, 3),
                "finite": bool(np.isfinite(y).all()),
            }
    return out


def model_speed(check: Check) -> dict[str, Any]:
    """Model-only fps and achieved TFLOP/s over a batch sweep (channels_last, cudnn.benchmark)."""
    if check.cuda:
        torch.backends.cudnn.benchmark = True
    precision = "fp16" if check.cuda else "fp32"
    cases = [
        (ANIME, check.size((1920, 1080)), [1, 2, 4, 8] if not check.smoke else [1, 2]),
        (X4PLUS, check.size((640, 360)), [1, 2, 4] if not check.smoke else [1]),
    ]
    budget = 0.2 if check.smoke else 3.0
    out: dict[str, Any] = {}
    for model, (w, h), batches in cases:
        from vidsr.models.loader import load_network

        flop = conv_flops(load_network(model).module, torch.zeros((1, 3, h, w)))  # on the CPU
        up = upscaler(model, check.device, precision)
        rows = []
        for b in batches:
            x = torch.rand((b, 3, h, w), device=check.device)
            n, secs = timed(lambda x=x, up=up: up(x), check, budget)
            fps = n * b / secs
            rows.append({"batch": b, "fps": round(fps, 2), "tflops": round(fps * flop / 1e12, 2)})
        out[f"{model} {w}x{h} {precision}"] = {
            "gflop_per_frame": round(flop / 1e9, 1),
            "sweep": rows,
        }
    return out


def memory(check: Check) -> dict[str, Any]:
    """The chosen batch against the measured memory per frame; a real out-of-memory retry."""
    from vidsr.pipeline.memory import CudaMemory, batch_size
    from vidsr.pipeline.step import ResilientStep

    precision = "fp16" if check.cuda else "fp32"
    w, h = check.size((1920, 1080), (48, 32))
    up = upscaler(ANIME, check.device, precision)
    out: dict[str, Any] = {}
    if not check.cuda:  # smoke on the CPU: the sizer's arithmetic with the CPU as "device"
        return {"batch_size": batch_size(up, h, w), "note": "no CUDA: batch 1, no OOM test"}
    mem = CudaMemory(check.device)
    chosen = batch_size(up, h, w)
    per_frame_est = up.memory.frame_bytes[(h, w)]
    x = torch.rand((chosen, 3, h, w), device=check.device)
    measured = mem.measure(lambda: up(x)) / chosen
    out.update(
        batch_size=chosen,
        estimated_mb_per_frame=round(per_frame_est / 2**20, 1),
        measured_mb_per_frame=round(measured / 2**20, 1),
        free_mb=round(mem.free() / 2**20),
    )
    # Too large on purpose: more frames than the free memory holds at the measured cost.
    big = upscaler(X4PLUS, check.device, precision)
    bw, bh = (640, 360)
    batch_size(big, bh, bw)  # measures x4plus's cost
    cost = big.memory.frame_bytes[(bh, bw)]
    n = int(mem.free() // cost) * 2 + 2
    frames = torch.rand((n, 3, bh, bw), generator=torch.Generator().manual_seed(1))
    step = ResilientStep(big, lambda b, net: net(b.to(check.device)).cpu(), (bh, bw))
    t0 = time.perf_counter()
    parts = step(frames)
    got = torch.cat(parts)
    again = torch.cat([big(frames[i : i + 1].to(check.device)).cpu() for i in (0, n - 1)])
    out["oom_retry"] = {
        "frames": n,
        "parts": len(parts),
        "learned_max_batch": big.memory.max_batch.get((bh, bw)),
        "every_frame_once": got.shape[0] == n,
        "same_as_one_by_one": bool(torch.allclose(got[[0, n - 1]], again, atol=1 / 255)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return out


def colour(check: Check) -> dict[str, Any]:
    """Device colour on against off, through FFV1 (lossless)."""
    from vidsr.jobs.local import InProcessExecutor
    from vidsr.media.probe import probe
    from vidsr.run.job import prepare, run_job
    from vidsr.settings import make_settings

    w, h = check.size((640, 360))
    src = make_clip(check.tmp / "colour.mkv", w, h, 8 if check.smoke else 30)
    runs = {}
    for mode in ("off", "on"):
        out = check.tmp / f"colour-{mode}.mkv"
        s = make_settings(
            "upscale",
            {"device": str(check.device), "codec": "ffv1", "device_colour": mode,
             "output": out, "hw_decode": "off"},
        )  # fmt: skip
        ex = InProcessExecutor(str(check.device))
        t0 = time.perf_counter()
        res = run_job(prepare(s, src, ex), ex)
        runs[mode] = (out, time.perf_counter() - t0, res.frames)
    a, b = frames_of(runs["off"][0]), frames_of(runs["on"][0])
    pa, pb = probe(runs["off"][0]).video, probe(runs["on"][0]).video
    return {
        "frames": [runs["off"][2], runs["on"][2]],
        "same_times": pa.frame_pts == pb.frame_pts,
        "psnr_db": round(min(psnr(x, y, 255) for x, y in zip(a, b, strict=True)), 2),
        "seconds_off_on": [round(runs["off"][1], 1), round(runs["on"][1], 1)],
    }


def nvdec(check: Check) -> dict[str, Any]:
    """NVDEC against software on an H.264 clip."""
    from vidsr.media.decode import decode_frames

    w, h = check.size((1920, 1080))
    src = make_clip(check.tmp / "nvdec.mkv", w, h, 8 if check.smoke else 120)
    got = {}
    for hw in (True, False):
        t0 = time.perf_counter()
        with decode_frames(src, hwaccel=hw) as frames:
            rgbs = [f.rgb for f in frames]
            used = frames.hw_used
        got[hw] = (rgbs, time.perf_counter() - t0, used)
    hw_frames, sw_frames = got[True][0], got[False][0]
    return {
        "nvdec_used": got[True][2],
        "frames": [len(hw_frames), len(sw_frames)],
        "equal": all(np.array_equal(a, b) for a, b in zip(hw_frames, sw_frames, strict=True)),
        "fps_nvdec_software": [round(len(hw_frames) / got[True][1], 1),
                               round(len(sw_frames) / got[False][1], 1)],
    }  # fmt: skip


def nvenc(check: Check) -> dict[str, Any]:
    """Which NVENC encoders open at each output size and format; what --codec auto picks."""
    from vidsr.media.encode import auto_codec, encoder_problem

    cases = [(1920, 1080, "yuv420p", 8), (3840, 2160, "p010le", 10), (7680, 4320, "yuv420p", 8)]
    out: dict[str, Any] = {}
    for w, h, fmt, bits in cases:
        row = {
            codec: encoder_problem(codec, w, h, fmt) or "opens"
            for codec in ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
        }
        src_fmt = "yuv420p10le" if bits > 8 else "yuv420p"
        row["auto"] = auto_codec(
            check.device.type, width=w, height=h, source_pix_fmt=src_fmt, bit_depth=bits
        )
        out[f"{w}x{h} {fmt}"] = row
    return out


def bench(check: Check) -> dict[str, Any]:
    """``vidsr bench`` at 854x480 (tiny with --smoke)."""
    from vidsr.bench import run_bench
    from vidsr.settings import make_settings

    w, h = check.size((854, 480))
    s = make_settings(
        "bench", {"device": str(check.device), "size": (w, h), "frames": 8 if check.smoke else 120}
    )
    r = run_bench(s, work_dir=check.tmp / "bench")
    keys = ("decode_fps", "model_fps", "encode_fps", "segment_fps", "pipeline_fps", "serial_fps",
            "peak_gpu_mb", "peak_rss_mb")  # fmt: skip
    return {k: r.get(k) for k in keys}


#: (name, function, needs CUDA outside --smoke)
STEPS: list[tuple[str, Callable[[Check], dict[str, Any]], bool]] = [
    ("numerics", numerics, True),
    ("model", model_speed, True),
    ("memory", memory, True),
    ("colour", colour, True),
    ("nvdec", nvdec, True),
    ("nvenc", nvenc, False),
    ("bench", bench, True),
]


def run_checks(device: str, *, smoke: bool, only: list[str] | None = None) -> dict[str, Any]:
    """Every step (or ``only`` those), each result or its skip/failure reason, as one dict."""
    from vidsr.bench import machine_info

    dev = torch.device(device)
    report: dict[str, Any] = {
        "device": str(dev),
        "smoke": smoke,
        "machine": machine_info(dev),
        "python": platform.python_version(),
        "steps": {},
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vidsr-gpu-check-") as tmp:
        check = Check(dev, smoke, Path(tmp), t_start)
        for name, step, needs_cuda in STEPS:
            if only and name not in only:
                continue
            if needs_cuda and not check.cuda and not smoke:
                report["steps"][name] = {"skipped": "no CUDA device"}
                print(f"skip {name}: no CUDA device", flush=True)
                continue
            if time.perf_counter() - t_start > DEADLINE_S:
                report["steps"][name] = {"skipped": f"past the {DEADLINE_S} s deadline"}
                print(f"skip {name}: past the deadline", flush=True)
                continue
            t0 = time.perf_counter()
            try:
                result = step(check)
            except Exception as exc:  # one step's failure is a finding, not the end
                result = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                print(f"FAILED {name}: {result['failed']}", flush=True)
            result["seconds"] = round(time.perf_counter() - t0, 1)
            report["steps"][name] = result
            print(f"done {name} ({result['seconds']} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report


def table(report: dict[str, Any]) -> str:
    lines = [f"gpu_check on {report['machine'].get('device_name')} ({report['seconds']} s)"]
    for name, r in report["steps"].items():
        if "skipped" in r or "failed" in r:
            lines.append(f"  {name:9} {r.get('skipped') or 'FAILED: ' + r['failed']}")
            continue
        body = {k: v for k, v in r.items() if k != "seconds"}
        text = json.dumps(body, default=str)
        lines.append(f"  {name:9} {text[:300]}{'...' if len(text) > 300 else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON report")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="every step, tiny sizes")
    parser.add_argument("--only", nargs="*", help="these steps only")
    args = parser.parse_args(argv)
    report = run_checks(args.device, smoke=args.smoke, only=args.only)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(table(report))
    failed = [n for n, r in report["steps"].items() if "failed" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
