"""Cost of chunking and speed-up of two CPU workers.

Generates one clip (ffmpeg testsrc2 + a sine tone) and times `vidsr upscale` on it as one
stream (a single chunk), in chunks, and in chunks on two CPU worker processes. Each
configuration runs --repeat times; the median wall time is reported.

    .venv/bin/python benchmarks/chunk_speedup.py --size 128x72 --seconds 10 --chunk-seconds 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidsr.media.ffmpeg import ffmpeg_exe


def make_clip(path: Path, size: str, seconds: float, fps: int = 24) -> None:
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(path)],
        check=True,
    )  # fmt: skip


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="128x72")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--chunk-seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ns = ap.parse_args()
    vidsr = str(Path(sys.executable).with_name("vidsr"))
    configs = {
        "one stream (1 chunk)": ["--chunk-seconds", "100000"],
        f"chunks of {ns.chunk_seconds:g} s, 1 worker": ["--chunk-seconds", str(ns.chunk_seconds)],
        f"chunks of {ns.chunk_seconds:g} s, 2 CPU workers": [
            "--chunk-seconds", str(ns.chunk_seconds), "--devices", "cpu,cpu"],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mkv"
        make_clip(clip, ns.size, ns.seconds)
        base = None
        for label, extra in configs.items():
            times = [
                timed([vidsr, "upscale", str(clip), "-o", str(Path(tmp) / "o.mkv"),
                       "--overwrite", "--device", "cpu", *extra])
                for _ in range(ns.repeat)
            ]  # fmt: skip
            median = statistics.median(times)
            base = base or median
            print(
                f"{label:32s} median {median:6.1f} s  ({base / median:4.2f}x one stream)  "
                f"runs: {', '.join(f'{t:.1f}' for t in times)}"
            )


if __name__ == "__main__":
    main()
