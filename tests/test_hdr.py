"""HDR10 static metadata (mastering display, content light level) survives an upscale."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import run_cli

from vidsr.media.ffmpeg import ffmpeg_exe
from vidsr.media.hdr import HdrMetadata, encoder_options
from vidsr.media.probe import probe

MASTER = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"


@pytest.fixture
def hdr_clip(tmp_path: Path) -> Path:
    out = tmp_path / "hdr.mkv"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=64x36:rate=24:duration=0.25",
         "-vf", "format=yuv420p10le,setparams=color_primaries=bt2020:color_trc=smpte2084:"
         "colorspace=bt2020nc:range=tv",
         "-c:v", "libx265",
         "-x265-params", f"log-level=error:hdr10=1:master-display={MASTER}:max-cll=1000,400",
         str(out)],
        check=True,
    )  # fmt: skip
    return out


def test_hdr10_metadata_passes_through_x265(hdr_clip: Path, tmp_path: Path, private_home) -> None:
    src = probe(hdr_clip).video
    assert src.hdr is not None and src.hdr.max_cll == 1000 and src.hdr.max_fall == 400
    assert src.hdr.primaries[1] == (Fraction(13250, 50000), Fraction(34500, 50000))  # green
    out = tmp_path / "out.mkv"
    code, _, err = run_cli(None, "upscale", hdr_clip, "-o", out, "--device", "cpu",
                           "--codec", "libx265", "--json")  # fmt: skip
    assert code == 0, err
    got = probe(out).video
    assert got.hdr == src.hdr
    assert got.colour == src.colour and got.bit_depth == 10


def test_encoder_parameters() -> None:
    hdr = HdrMetadata(
        primaries=((Fraction(17, 25), Fraction(8, 25)), (Fraction(53, 200), Fraction(69, 100)),
                   (Fraction(3, 20), Fraction(3, 50))),
        white=(Fraction(3127, 10000), Fraction(329, 1000)),
        min_luminance=Fraction(1, 10000), max_luminance=Fraction(1000), max_cll=1000, max_fall=400,
    )  # fmt: skip
    x265 = encoder_options("libx265", hdr, {"x265-params": "log-level=error"})["x265-params"]
    assert x265.startswith("log-level=error:hdr10=1")
    assert f"master-display={MASTER}" in x265 and "max-cll=1000,400" in x265
    svt = encoder_options("libsvtav1", hdr, {})["svtav1-params"]
    assert "content-light=1000,400" in svt and "G(0.26500,0.69000)" in svt
    assert encoder_options("libx264", hdr, {"crf": "18"}) == {"crf": "18"}
    assert encoder_options("libx265", None, {"crf": "18"}) == {"crf": "18"}
