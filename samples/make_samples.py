"""Draws the bundled sample image (samples/frame.png): a small anime-style scene with flat
colours, dark line art, a gradient sky and an alpha-free RGB canvas.

    python samples/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def draw_frame(width: int = 160, height: int = 90, t: float = 0.0) -> Image.Image:
    """One frame of the scene; ``t`` in [0, 1) moves the cloud and the character."""
    im = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(im)
    for y in range(height):  # sky gradient
        k = y / height
        d.line([(0, y), (width, y)], fill=(int(90 + 100 * k), int(150 + 70 * k), 235))
    cx = int(-30 + (width + 60) * t)
    d.ellipse([cx, 10, cx + 40, 26], fill=(250, 250, 250), outline=(60, 60, 80))
    d.ellipse([cx + 15, 4, cx + 45, 22], fill=(250, 250, 250), outline=(60, 60, 80))
    d.polygon([(0, height), (0, 60), (50, 48), (100, 62), (160, 50), (width, height)],
              fill=(96, 180, 90), outline=(30, 60, 30))
    x = int(40 + 60 * t)
    d.ellipse([x, 30, x + 34, 64], fill=(255, 224, 196), outline=(40, 20, 20), width=2)
    d.pieslice([x - 2, 26, x + 36, 54], 180, 360, fill=(70, 50, 120), outline=(30, 20, 50))
    for ex in (x + 9, x + 21):  # eyes
        d.ellipse([ex, 42, ex + 5, 50], fill=(40, 90, 200), outline=(20, 20, 40))
        d.point([(ex + 1, 43)], fill=(255, 255, 255))
    d.arc([x + 12, 50, x + 22, 58], 20, 160, fill=(150, 40, 40), width=1)
    return im


def main() -> None:
    draw_frame().save(HERE / "frame.png", optimize=True)


if __name__ == "__main__":
    main()
