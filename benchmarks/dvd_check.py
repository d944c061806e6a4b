"""End-to-end check of a DVD-style source: anamorphic 16:9 NTSC film, hard-telecined to 29.97
interlaced MPEG-2 with AC-3 in a VOB, upscaled with the real model as
``vidsr upscale --ivtc --height 1080 --square-pixels``, then checked with ffmpeg (the bundled
binary, not vidsr's own reader): the frame count ffmpeg decodes, the frame rate and the spacing
of its frame times, size, sample and display aspect, and the audio against the video (start and
length). Prints one line per fact and exits non-zero if one is wrong.

    .venv/bin/python benchmarks/dvd_check.py              # 24 film frames (about 2 min on 2 cores)
    .venv/bin/python benchmarks/dvd_check.py --frames 48
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import real_media as R  # noqa: E402

from vidsr.media.ffmpeg import ffmpeg_exe  # noqa: E402


def ffmpeg_frames(path: Path, stream: str) -> list[tuple[float, float]]:
    """(time, duration) of each decoded frame of ``stream`` (``0:v:0``, ``0:a:0``), as ffmpeg
    decodes them (its ``showinfo``/``ashowinfo`` filters: the frames' own times, unrounded;
    a frame's duration is the step to the next, the last one's its own)."""
    audio = stream.startswith("0:a")
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "info", "-copyts", "-i", str(path),
         "-map", stream, "-af" if audio else "-vf", "ashowinfo" if audio else "showinfo",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    times = [float(m) for m in re.findall(r"pts_time:\s*([-\d.]+)", proc.stderr)]
    durations = [float(m) for m in re.findall(r"duration(?:_time)?:\s*([\d.]+)", proc.stderr)]
    out = [(t, b - t) for t, b in itertools.pairwise(times)]
    last = durations[-1] if durations else (out[-1][1] if out else 0.0)
    return [*out, (times[-1], last)] if times else []


def stream_line(path: Path, kind: str) -> str:
    """ffmpeg's own description of the first ``kind`` (Video/Audio) stream."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True)  # fmt: skip
    return next(line.strip() for line in proc.stderr.splitlines() if f"{kind}:" in line)


def make_source(folder: Path, frames: int) -> Path:
    """Film at 720x480 (23.976 fps, every frame different), 2:3 pulldown to 29.97 interlaced
    MPEG-2 at display aspect 16:9 (SAR 32:27), AC-3 audio, in a DVD program stream."""
    film = R.film_reference(folder, frames=frames, size=(720, 480), name="film.mkv")
    out = folder / "VTS_01_1.VOB"
    R.ffmpeg("-i", film, *R._ac3(frames * 1001 / 24000), "-vf",
             "telecine=first_field=top:pattern=23", "-c:v", "mpeg2video", "-flags",
             "+ilme+ildct", "-field_order", "tt", "-aspect", "16:9", "-pix_fmt", "yuv420p",
             "-b:v", "6M", "-g", "15", "-bf", "2", "-c:a", "ac3", "-b:a", "192k",
             "-f", "dvd", out)  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="film frames (a multiple of 4)")
    parser.add_argument("--keep", type=Path, help="copy the source and the output to this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = make_source(folder, args.frames)
        out = folder / "episode.mkv"
        cmd = [sys.executable, "-m", "vidsr", "upscale", str(src), "-o", str(out), "--ivtc",
               "--height", "1080", "--square-pixels", "--device", "cpu"]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, args.keep / out.name)
            shutil.copy(src, args.keep / src.name)
        seconds = time.perf_counter() - t0
        src_v = ffmpeg_frames(src, "0:v:0")
        video = ffmpeg_frames(out, "0:v:0")
        audio = ffmpeg_frames(out, "0:a:0")
        src_a = ffmpeg_frames(src, "0:a:0")
        steps = sorted({round((b[0] - a[0]) * 1000, 1) for a, b in itertools.pairwise(video)})
        v_len = video[-1][0] + video[-1][1] - video[0][0]
        a_len = audio[-1][0] + audio[-1][1] - audio[0][0]
        src_offset = src_a[0][0] - src_v[0][0]
        out_offset = audio[0][0] - video[0][0]
        line = stream_line(out, "Video")
        checks = [
            ("source frames (ffmpeg)", len(src_v), args.frames * 5 // 4),
            ("output frames (ffmpeg)", len(video), args.frames),
            ("frame steps ms (41.7, in Matroska's milliseconds)", steps, [41.0, 42.0]),
            ("size", "1920x1080" in line, True),
            ("SAR 1:1 DAR 16:9", "SAR 1:1 DAR 16:9" in line, True),
            ("23.976 fps", "23.98 fps" in line, True),
            ("audio - video start vs the source's, within 1 ms (Matroska's rounding)",
             abs(out_offset - src_offset) <= 0.001, True),
            ("audio length - video length, ms (< one AC-3 frame, 32 ms)", abs(a_len - v_len) < 0.032,
             True),
        ]  # fmt: skip
        print(f"vidsr upscale --ivtc --height 1080 --square-pixels: {seconds:.1f} s")
        print(f"ffmpeg: {line}")
        print(
            f"audio - video start: source {src_offset * 1000:.3f} ms, output "
            f"{out_offset * 1000:.3f} ms"
        )
        bad = 0
        for name, got, want in checks:
            ok = got == want if not isinstance(want, list) else set(got) <= set(want)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name}: {got} (want {want})")
        print(f"video {v_len:.3f} s, audio {a_len:.3f} s")
        print(
            f"first video/audio: source {src_v[0][0]:.6f} / {src_a[0][0]:.6f}, output "
            f"{video[0][0]:.6f} / {audio[0][0]:.6f}"
        )
        return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
