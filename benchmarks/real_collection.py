"""Figures for the real-collection cases: frames in/out, worst time error, display aspect
in/out, streams kept.

Builds each file the way tests/test_real_collection.py does (tests/real_media.py: packed
B-frame Xvid AVI, DVD VOB/MPG, a container-only aspect, duplicate timestamps, mov_text, a
timecode MOV, VP9 webm, VP9 with alpha, damaged FFV1, RMVB, OGM), upscales it with
``vidsr upscale --device cpu`` and prints one row per case. "ffmpeg frames" counts what the
ffmpeg binary itself decodes; the time error compares the output's frame times with the
source's as vidsr reads them ("worst ms") and with ffmpeg's own (``-copyts``; "vs ff ms",
first frames aligned); where ffmpeg's first time differs from vidsr's (AVI: ffmpeg times a
packed-B-frame stream from its decoder delay) the difference is shown apart ("ff start ms").

    .venv/bin/python benchmarks/real_collection.py            # every case
    .venv/bin/python benchmarks/real_collection.py xvid dup   # some
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import real_media as R  # noqa: E402

from vidsr.media.ffmpeg import ffmpeg_exe  # noqa: E402
from vidsr.media.probe import VideoInfo, probe  # noqa: E402


def ffmpeg_times(path: Path) -> list[Fraction]:
    """The main video's frame times as ffmpeg derives them (framecrc, passthrough)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-copyts",
         "-map", "0:V:0", "-fps_mode", "passthrough", "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    tb = Fraction(1)
    out: list[Fraction] = []
    for line in proc.stdout.splitlines():
        if line.startswith("#tb 0:"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            out.append(int(line.split(",")[2]) * tb)
    return out


def vidsr_times(path: Path) -> list[Fraction]:
    v = probe(path).video
    return [v.frame_time(k) for k in range(v.frame_count)]


def streams(path: Path) -> str:
    short = {"attachment": "t"}
    kept = [
        f"{short.get(s.type, s.type[0])}:{s.codec or 'file'}" for s in probe(path).copied_streams
    ]
    return " ".join(kept) or "-"


Case = tuple[str, Callable[[Path], Path], str, tuple[str, ...]]


def cases() -> list[Case]:
    ass = ROOT / "samples" / "clip.mkv"
    return [
        ("xvid", lambda d: R.xvid_avi(d / "ep01.avi"), ".mkv", ("--codec", "ffv1")),
        ("vob", lambda d: R.dvd(d / "VTS_01_1.VOB"), ".mkv", ("--codec", "ffv1")),
        ("mpg", lambda d: R.dvd(d / "title.mpg", muxer="vob"), ".mp4", ("--codec", "libx264")),
        ("aspect", lambda d: R.container_aspect_mkv(d / "mk.mkv"), ".mkv", ("--codec", "ffv1")),
        ("aspect-mp4", lambda d: R.container_aspect_mkv(d / "mk.mkv"), ".mp4", ()),
        ("dup", lambda d: R.duplicate_times_mkv(d / "dup.mkv")[0], ".mkv", ("--codec", "ffv1")),
        ("movtext", lambda d: R.mov_text_mp4(d / "it.mp4"), ".mkv", ("--codec", "ffv1")),
        ("ass-mp4", lambda d: ass, ".mp4", ("--drop-unsupported",)),
        ("tmcd", lambda d: R.timecode_mov(d / "cam.mov"), ".mov", ()),
        ("webm", lambda d: R.vp9_opus_webm(d / "c.webm"), ".webm", ("--codec", "libvpx-vp9")),
        ("alpha", lambda d: R.vp9_alpha_webm(d / "a.webm"), ".mkv", ("--codec", "ffv1")),
        ("damaged", lambda d: R.damaged_ffv1(d / "d.mkv"), ".mkv", ("--ignore-errors",)),
        ("rmvb", lambda d: R.rmvb(d / "ep.rmvb"), ".mkv", ("--codec", "ffv1")),
        ("ogm", lambda d: R.ogm(d / "ep.ogm"), ".mkv", ("--codec", "ffv1")),
    ]


def picture(v: VideoInfo) -> str:
    """Storage size, sample aspect and display aspect: ``64x48 4/3 16/9``."""
    return f"{v.width}x{v.height} {v.sample_aspect_ratio} {v.display_aspect}"


def ms(t: Fraction) -> str:
    return f"{float(t) * 1000:.3f}"


def run(name: str, make: Callable[[Path], Path], suffix: str, args: tuple[str, ...], d: Path):
    src = make(d)
    dst = d / f"{name}.out{suffix}"
    proc = subprocess.run(
        [sys.executable, "-m", "vidsr", "upscale", str(src), "-o", str(dst), "--device", "cpu",
         *args],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        return [name, "exit", str(proc.returncode), proc.stderr.strip()[:60]]
    s, o = probe(src), probe(dst)
    ff_in, ff_out = ffmpeg_times(src), ffmpeg_times(dst)
    src_t, out_t = vidsr_times(src), vidsr_times(dst)
    worst = max((abs(a - b) for a, b in zip(out_t, src_t, strict=True)), default=Fraction(0))
    shift = ff_in[0] - src_t[0] if ff_in and src_t else Fraction(0)
    vs_ffmpeg = max(
        (abs((a - out_t[0]) - (b - ff_in[0])) for a, b in zip(out_t, ff_in, strict=True)),
        default=Fraction(0),
    )
    return [
        name,
        f"{len(ff_in)}/{s.video.frame_count}",
        f"{len(ff_out)}/{o.video.frame_count}",
        ms(worst),
        ms(vs_ffmpeg),
        ms(shift),
        picture(s.video),
        picture(o.video),
        streams(src),
        streams(dst),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="case names (default: all)")
    wanted = parser.parse_args().only
    header = ["case", "in ff/vidsr", "out ff/vidsr", "worst ms", "vs ff ms", "ff start ms",
              "in WxH SAR DAR", "out WxH SAR DAR", "streams in", "streams out"]  # fmt: skip
    rows = [header]
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, suffix, args in cases():
            if wanted and name not in wanted:
                continue
            d = Path(tmp) / name
            d.mkdir()
            rows.append(run(name, make, suffix, args, d))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(len(header))]
    for r in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip())


if __name__ == "__main__":
    main()
