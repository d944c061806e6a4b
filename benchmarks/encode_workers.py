"""Chunks encoded at once when the encoder bounds a run (``--encode-workers``).

Makes a clip (ffmpeg testsrc2, libx264), then times ``vidsr upscale`` with a slow encoder that
uses one core (libvpx-vp9, lossless, whose encoder runs single-threaded here) so the encoder,
not the model, bounds the run: once with one chunk encoded at a time (``--encode-workers 1``)
and once with the automatic choice (``0``: after the first chunk shows the encoder bounding
the run, as many chunks at once as the cores hold). Each configuration runs ``--repeat``
times, alternating; medians are printed.

    .venv/bin/python benchmarks/encode_workers.py --size 128x72 --frames 96 --chunk-frames 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidsr.media.ffmpeg import ffmpeg_exe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="128x72")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--chunk-frames", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--codec", default="libvpx-vp9")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidsr-encw-") as tmp:
        clip = Path(tmp) / "clip.mkv"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
             "-i", f"testsrc2=size={args.size}:rate=24", "-frames:v", str(args.frames),
             "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(clip)],
            check=True,
        )  # fmt: skip
        times: dict[str, list[float]] = {"1": [], "0": []}
        workers: dict[str, int] = {}
        for r in range(args.repeat):
            for w in ("1", "0"):
                out = Path(tmp) / f"out{w}.{r}.mkv"
                cmd = [sys.executable, "-c", "from vidsr.cli import main; main()", "upscale",
                       str(clip), "-o", str(out), "--device", "cpu", "--codec", args.codec,
                       "--encoder-opt", "lossless=1", "--chunk-frames", str(args.chunk_frames),
                       "--encode-workers", w, "--json"]  # fmt: skip
                t0 = time.perf_counter()
                run = subprocess.run(cmd, capture_output=True, text=True)
                times[w].append(time.perf_counter() - t0)
                if run.returncode:
                    raise SystemExit(run.stderr)
                done = json.loads(run.stdout.strip().splitlines()[-1])
                workers[w] = done["encode_workers"]
                print(f"  --encode-workers {w}: {times[w][-1]:.1f} s, "
                      f"{done['encode_workers']} at once, bound by {done['bound']}")  # fmt: skip
        one, auto = statistics.median(times["1"]), statistics.median(times["0"])
        print(f"{args.frames} frames {args.size}, chunks of {args.chunk_frames}, {args.codec}:")
        print(f"  one chunk at a time: {one:.1f} s; auto ({workers['0']} at once): {auto:.1f} s; "
              f"speed-up {one / auto:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
