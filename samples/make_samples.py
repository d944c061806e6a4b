"""Makes the bundled samples with the project's own drawing code:

- ``frame.png``: one 160x90 anime-style frame (flat colours, dark line art, gradient sky);
- ``clip.mkv``: two seconds of that scene in motion (24 fps H.264), a stereo Opus melody,
  styled ASS subtitles that use an attached font, and two chapters.

    python samples/make_samples.py     # needs av, pillow, numpy, imageio-ffmpeg
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
FPS = 24
SECONDS = 2
SIZE = (160, 90)


def draw_frame(width: int = SIZE[0], height: int = SIZE[1], t: float = 0.0) -> Image.Image:
    """One frame of the scene; ``t`` in [0, 1) moves the cloud and the character."""
    im = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(im)
    for y in range(height):  # sky gradient
        k = y / height
        d.line([(0, y), (width, y)], fill=(int(90 + 100 * k), int(150 + 70 * k), 235))
    cx = int(-30 + (width + 60) * t)
    d.ellipse([cx, 10, cx + 40, 26], fill=(250, 250, 250), outline=(60, 60, 80))
    d.ellipse([cx + 15, 4, cx + 45, 22], fill=(250, 250, 250), outline=(60, 60, 80))
    d.polygon(
        [(0, height), (0, 60), (50, 48), (100, 62), (160, 50), (width, height)],
        fill=(96, 180, 90),
        outline=(30, 60, 30),
    )
    x = int(40 + 60 * t)
    d.ellipse([x, 30, x + 34, 64], fill=(255, 224, 196), outline=(40, 20, 20), width=2)
    d.pieslice([x - 2, 26, x + 36, 54], 180, 360, fill=(70, 50, 120), outline=(30, 20, 50))
    for ex in (x + 9, x + 21):  # eyes
        d.ellipse([ex, 42, ex + 5, 50], fill=(40, 90, 200), outline=(20, 20, 40))
        d.point([(ex + 1, 43)], fill=(255, 255, 255))
    d.arc([x + 12, 50, x + 22, 58], 20, 160, fill=(150, 40, 40), width=1)
    return im


def font_bytes() -> bytes:
    """Aileron Regular (CC0), as embedded in Pillow's ImageFont.load_default."""
    import inspect

    src = inspect.getsource(ImageFont.load_default)
    blob = re.search(r'b64decode\(b"""(.*?)"""', src, re.S)
    if blob is None:
        raise RuntimeError("Pillow no longer embeds its default font")
    return base64.b64decode(blob.group(1))


ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 160
PlayResY: 90

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Aileron,10,&H00FFFFFF,&H000000FF,&H00402040,&H80000000,0,0,0,0,100,100,0,0,1,1,0,2,4,4,4,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.20,0:00:00.95,Default,,0,0,0,,Ohayou!
Dialogue: 0,0:00:01.05,0:00:01.90,Default,,0,0,0,,{\\i1}Let's go.{\\i0}
"""

CHAPTERS = """;FFMETADATA1
title=vidsr sample

[CHAPTER]
TIMEBASE=1/1000
START=0
END=1000
title=Morning

[CHAPTER]
TIMEBASE=1/1000
START=1000
END=2000
title=Walk
"""


def write_av(path: Path) -> None:
    """Video (H.264, BT.601 tagged) and a stereo Opus melody, every frame with its pts."""
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = *SIZE, "yuv420p"
        v.options = {"crf": "20", "preset": "slow"}
        v.codec_context.color_primaries = 6  # SMPTE 170M (BT.601 525)
        v.codec_context.color_trc = 6
        v.codec_context.colorspace = 6
        v.codec_context.color_range = 1  # limited
        a = out.add_stream("libopus", rate=48000)
        a.layout = "stereo"
        a.bit_rate = 48000
        n = FPS * SECONDS
        for i in range(n):
            frame = av.VideoFrame.from_image(draw_frame(t=i / n))
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            out.mux(v.encode(frame))
        out.mux(v.encode())
        notes = [523.25, 659.25, 783.99, 659.25]  # C5 E5 G5 E5
        sr, samples = 48000, 48000 * SECONDS
        t = np.arange(samples) / sr
        freq = np.array(notes)[(t * 2).astype(int) % len(notes)]
        tone = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        stereo = np.stack([tone, tone * 0.8])
        for start in range(0, samples, 960):
            chunk = np.ascontiguousarray(stereo[:, start : start + 960])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate, af.pts = sr, start
            out.mux(a.encode(af))
        out.mux(a.encode())


def make_clip(dest: Path) -> None:
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        write_av(tmpd / "av.mkv")
        (tmpd / "subs.ass").write_text(ASS, encoding="utf-8")
        (tmpd / "chapters.txt").write_text(CHAPTERS, encoding="utf-8")
        (tmpd / "Aileron-Regular.ttf").write_bytes(font_bytes())
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
            "-i", str(tmpd / "av.mkv"), "-i", str(tmpd / "subs.ass"),
            "-i", str(tmpd / "chapters.txt"),
            "-map", "0", "-map", "1", "-map_metadata", "2", "-map_chapters", "2", "-c", "copy",
            "-attach", str(tmpd / "Aileron-Regular.ttf"),
            "-metadata:s:t:0", "mimetype=font/ttf",
            "-metadata:s:a:0", "language=jpn", "-metadata:s:a:0", "title=Melody",
            "-metadata:s:s:0", "language=eng", "-metadata:s:s:0", "title=English (styled)",
            str(tmpd / "clip.mkv"),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        shutil.move(tmpd / "clip.mkv", dest)


def main() -> None:
    draw_frame().save(HERE / "frame.png", optimize=True)
    make_clip(HERE / "clip.mkv")


if __name__ == "__main__":
    main()
