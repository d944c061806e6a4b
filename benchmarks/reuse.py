"""Held-frame reuse (``--reuse``): model-stage throughput and PSNR against the full run, for
``off``, ``exact`` and ``auto`` over a sweep of thresholds, on two generated clips:

- ``anime``: what anime is made of - flat colours and outlines, a shot whose ball moves on
  twos, a shot held still, a shot whose two shapes move on threes (scene cuts between them),
  a little grain in every frame, x264 at crf 26 (``--crf``);
- ``noise``: every pixel different in every frame (nothing repeats: the cost of looking).

Each run is ``vidsr upscale`` in this process (realesr-animevideov3, CPU); "model fps" is the
infer stage's own figure (frames / its busy seconds), "run fps" the whole run's. PSNR compares
each output frame with the ``off`` run's, over 8-bit RGB; the figure is the worst frame's.

    .venv/bin/python benchmarks/reuse.py                         # 320x240, 72 frames
    .venv/bin/python benchmarks/reuse.py --size 640x480 --thresholds 0,6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from real_media import ffmpeg  # noqa: E402

from vidsr.jobs.local import InProcessExecutor  # noqa: E402
from vidsr.media.decode import FrameDecoder  # noqa: E402
from vidsr.pipeline import reuse  # noqa: E402
from vidsr.run.job import prepare, run_job  # noqa: E402
from vidsr.settings import make_settings  # noqa: E402


def anime_clip(path: Path, w: int, h: int, frames: int, crf: int) -> Path:
    """Three shots of ``frames // 3`` frames (see the module docstring). Moving parts are
    overlaid (evaluated per frame; drawbox places its box once)."""
    n = frames // 3
    s = w / 320  # shapes scale with the frame

    def px(v: float) -> int:
        return round(v * s)

    def box(x: float, y: float, bw: float, bh: float, colour: str, edge: int = 3) -> str:
        return (
            f"drawbox=x={px(x)}:y={px(y)}:w={px(bw)}:h={px(bh)}:color={colour}:t=fill,"
            f"drawbox=x={px(x)}:y={px(y)}:w={px(bw)}:h={px(bh)}:color=black:t={edge}"
        )

    def sprite(bw: float, bh: float, colour: str) -> str:
        return (
            f"color=c=black:size={px(bw)}x{px(bh)}:rate=24,"
            f"drawbox=x=2:y=2:w={px(bw) - 4}:h={px(bh) - 4}:color={colour}:t=fill"
        )

    bg = f"color=c={{}}:size={w}x{h}:rate=24,format=yuv420p"
    shots = [
        # a ball moving on twos over a held background
        f"{bg.format('0x4a7fbf')},{box(30, 20, 120, 90, '0xf0d090')}[b];"
        f"{sprite(24, 24, '0xe04040')}[s];[b][s]overlay=x='{px(40)}+{px(6)}*floor(t*12+0.01)':"
        f"y={px(150)}:eval=frame:shortest=1",
        # a shot held still
        f"{bg.format('0x9bc47a')},{box(100, 60, 140, 120, '0x603020', 4)}",
        # two shapes moving on threes
        f"{bg.format('0xd8d0c0')},{box(60, 170, 200, 40, '0x808080')}[b];"
        f"{sprite(40, 60, '0x3050a0')}[s1];{sprite(50, 30, '0x202020')}[s2];"
        f"[b][s1]overlay=x='{px(20)}+{px(10)}*floor(t*8+0.01)':y={px(40)}:eval=frame:"
        f"shortest=1[m];[m][s2]overlay=x={px(200)}:y='{px(160)}-{px(5)}*floor(t*8+0.01)':"
        "eval=frame:shortest=1",
    ]
    inputs: list[object] = []
    for shot in shots:
        inputs += ["-f", "lavfi", "-t", f"{n / 24:.4f}", "-i", shot]
    graph = "".join(f"[{i}:v]" for i in range(3)) + "concat=n=3:v=1,noise=alls=5:allf=t"
    ffmpeg(*inputs, "-filter_complex", graph, "-frames:v", 3 * n, "-c:v", "libx264",
           "-crf", crf, "-preset", "veryfast", "-x264-params", "log-level=error", path)  # fmt: skip
    return path


def noise_clip(path: Path, w: int, h: int, frames: int) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:size={w}x{h}:rate=24,noise=alls=80:allf=t",
           "-frames:v", frames, "-c:v", "libx264", "-crf", 18, "-preset", "veryfast",
           "-x264-params", "log-level=error", path)  # fmt: skip
    return path


def run(clip: Path, out: Path, mode: str, executor: InProcessExecutor, runtime: str) -> tuple:
    values = {"output": out, "overwrite": True, "device": "cpu", "reuse": mode}
    settings = make_settings("upscale", {**values, "runtime": runtime, "codec": "ffv1"})
    plan = prepare(settings, clip, executor)
    result = run_job(plan, executor)
    infer = result.stages["infer"]
    return result, infer.frames / infer.busy_seconds, result.fps


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--frames", type=int, default=72)
    parser.add_argument("--crf", type=int, default=26)
    parser.add_argument("--thresholds", default="0,2,4,6,8,12")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--clips", default="anime,noise")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    print(f"{'clip':>6} {'mode':>10} {'reused':>7} {'model fps':>10} {'x off':>6} {'run fps':>8} "
          f"{'min PSNR dB':>12}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.clips.split(","):
            clip = folder / f"{name}.mkv"
            if name == "anime":
                anime_clip(clip, w, h, args.frames, args.crf)
            else:
                noise_clip(clip, w, h, args.frames)
            executor = InProcessExecutor("cpu")
            run(clip, folder / "warm.mkv", "off", executor, args.runtime)  # load the model
            ref, ref_model, ref_run = run(clip, folder / "off.mkv", "off", executor, args.runtime)
            frames = [f.rgb for f in FrameDecoder(ref.output)]
            print(f"{name:>6} {'off':>10} {'-':>7} {ref_model:10.3f} {1:6.2f} {ref_run:8.3f} "
                  f"{'-':>12}", flush=True)  # fmt: skip
            for th in (int(t) for t in args.thresholds.split(",")):
                reuse.AUTO_THRESHOLD = th
                mode = "exact" if th == 0 else "auto"
                res, model_fps, run_fps = run(clip, folder / "r.mkv", mode, executor, args.runtime)
                worst = min(
                    psnr(a, f.rgb) for a, f in zip(frames, FrameDecoder(res.output), strict=True)
                )
                label = "exact" if th == 0 else f"auto {th}"
                print(f"{name:>6} {label:>10} {res.reused:7.1%} {model_fps:10.3f} "
                      f"{model_fps / ref_model:6.2f} {run_fps:8.3f} {worst:12.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
