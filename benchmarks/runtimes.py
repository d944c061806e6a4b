"""End-to-end speed of each runtime (``--runtime torch`` and ``--runtime openvino``) on the
CPU: ``vidsr upscale`` of a generated clip (``vidsr bench``'s testsrc2, libx264) at each size,
in this process, frames a second of the whole run (model load excluded: the first run of each
runtime at each size is a warm-up).

    .venv/bin/python benchmarks/runtimes.py                       # 640x480 and 128x72
    .venv/bin/python benchmarks/runtimes.py --sizes 320x240 --frames 12
    .venv/bin/python benchmarks/runtimes.py --sizes 640x480 --encoder-preset ultrafast
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from vidsr.bench import make_clip  # noqa: E402
from vidsr.jobs.local import InProcessExecutor  # noqa: E402
from vidsr.run.job import prepare, run_job  # noqa: E402
from vidsr.settings import make_settings  # noqa: E402


def run(
    clip: Path, out: Path, runtime: str, model: str, executor: InProcessExecutor, **extra: str
) -> float:
    settings = make_settings(
        "upscale",
        {"output": out, "overwrite": True, "device": "cpu", "runtime": runtime, "model": model,
         **extra},
    )  # fmt: skip
    t0 = time.perf_counter()
    plan = prepare(settings, clip, executor)
    result = run_job(plan, executor)
    return result.frames / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="640x480,128x72")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--codec", default=None, help="e.g. ffv1 (default: vidsr's, libx264)")
    parser.add_argument("--encoder-preset", default=None, help="e.g. ultrafast")
    args = parser.parse_args()
    extra = {k: v for k, v in (("codec", args.codec), ("encoder_preset", args.encoder_preset)) if v}
    print(f"{'size':>9} {'runtime':>9} {'fps':>8} {'vs torch':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            clip = make_clip(Path(tmp) / f"clip{w}.mkv", w, h, args.frames)
            warm = make_clip(Path(tmp) / f"warm{w}.mkv", w, h, 2)
            fps = {}
            for runtime in ("torch", "openvino"):
                executor = InProcessExecutor("cpu")
                run(warm, Path(tmp) / "warm.mkv", runtime, args.model, executor, **extra)
                fps[runtime] = run(
                    clip, Path(tmp) / "o.mkv", runtime, args.model, executor, **extra
                )
                ratio = fps[runtime] / fps["torch"]
                print(f"{size:>9} {runtime:>9} {fps[runtime]:8.3f} {ratio:9.2f}", flush=True)


if __name__ == "__main__":
    main()
