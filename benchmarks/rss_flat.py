"""Peak memory of `vidsr upscale` against clip length: is it flat?

Generates two clips of the same picture size (N and 10*N frames, ffmpeg testsrc2), upscales
each with the CLI in a subprocess, samples the RSS of the whole process tree (CLI + encoder
process) every 20 ms with psutil, and prints the peaks.

    .venv/bin/python benchmarks/rss_flat.py --size 128x72 --frames 48
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from vidsr.media.ffmpeg import ffmpeg_exe


def make_clip(path: Path, size: str, frames: int, fps: int = 24) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size={size}:rate={fps}:duration={frames / fps}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / fps}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(path)],
        check=True,
    )  # fmt: skip


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def peak_rss(args: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    proc = psutil.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc))
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(proc.stderr.read().decode())
    return peak, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="128x72")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--model", default="realesr-animevideov3")
    ns = ap.parse_args()
    vidsr = str(Path(sys.executable).with_name("vidsr"))
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in (ns.frames, 10 * ns.frames):
            clip = Path(tmp) / f"clip{n}.mkv"
            make_clip(clip, ns.size, n)
            peak, secs = peak_rss(
                [
                    vidsr,
                    "upscale",
                    str(clip),
                    "-o",
                    str(Path(tmp) / f"o{n}.mkv"),
                    "--device",
                    "cpu",
                    "--model",
                    ns.model,
                ]
            )
            results.append((n, peak, secs))
            print(
                f"{n:6d} frames {ns.size}: peak RSS (tree) {peak / 2**20:8.1f} MiB, {secs:6.1f} s"
            )
        growth = results[1][1] / results[0][1] - 1
        print(f"10x frames -> peak RSS {growth:+.1%}")


if __name__ == "__main__":
    main()
