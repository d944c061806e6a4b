"""`vidsr upscale` on images and `vidsr models`, through the real command line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import OFFICIAL_ANIMEVIDEOV3, psnr
from helpers import run_cli as run
from PIL import Image


def drawing(path: Path, size: tuple[int, int] = (40, 28), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(1)
    w, h = size
    arr = np.zeros((h, w, 4), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    arr[h // 4 : h // 2, w // 4 : w // 2, :3] = (200, 30, 30)
    arr[..., 2] = rng.integers(0, 40, (h, w))
    arr[..., 3] = 255
    arr[:, : w // 2, 3] = 0  # left half transparent
    im = Image.fromarray(arr, "RGBA")
    im.convert(mode).save(path) if mode != "RGBA" else im.save(path)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not OFFICIAL_ANIMEVIDEOV3.exists(), reason="official weights absent")
def test_official_file_and_offline_default_agree(tmp_path: Path, capsys) -> None:
    src = drawing(tmp_path / "frame.png")
    before = sha(src)
    official, default = tmp_path / "official.png", tmp_path / "default.png"
    common = ["--device", "cpu", "--precision", "fp32", "--tile", "0"]
    code, _, err = run(
        capsys,
        "upscale",
        str(src),
        "-o",
        str(official),
        "--model",
        str(OFFICIAL_ANIMEVIDEOV3),
        *common,
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "upscale", str(src), "-o", str(default), "--model", "realesr-animevideov3", *common
    )
    assert code == 0, err
    a = np.asarray(Image.open(official).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(default).convert("RGB"), dtype=np.float64)
    assert a.shape == b.shape == (112, 160, 3)
    assert psnr(a, b, peak=255) > 50  # ncnn weights are fp16 copies of the official ones
    assert sha(src) == before
    assert not list(tmp_path.glob(".*part*"))  # no temporary files left behind


def test_alpha_and_greyscale_are_kept(tmp_path: Path, capsys) -> None:
    rgba = drawing(tmp_path / "rgba.png", mode="RGBA")
    grey = drawing(tmp_path / "grey.png", mode="L")
    for src in (rgba, grey):
        code, _, err = run(capsys, "upscale", str(src), "--device", "cpu", "--scale", "2")
        assert code == 0, err
    out_rgba = Image.open(tmp_path / "rgba.realesr-animevideov3.x2.png")
    assert out_rgba.mode == "RGBA" and out_rgba.size == (80, 56)
    alpha = np.asarray(out_rgba)[..., 3]
    assert alpha[:, :30].max() <= 10 and alpha[:, 50:].min() >= 245
    out_grey = Image.open(tmp_path / "grey.realesr-animevideov3.x2.png")
    assert out_grey.mode == "L" and out_grey.size == (80, 56)


def test_webp_and_jpg(tmp_path: Path, capsys) -> None:
    src = drawing(tmp_path / "a.webp", mode="RGB")
    code, _, err = run(
        capsys, "upscale", str(src), "-o", str(tmp_path / "b.jpg"), "--device", "cpu"
    )
    assert code == 0, err
    assert Image.open(tmp_path / "b.jpg").size == (160, 112)
    rgba = drawing(tmp_path / "c.png", mode="RGBA")
    code, _, err = run(
        capsys, "upscale", str(rgba), "-o", str(tmp_path / "c.jpg"), "--device", "cpu"
    )
    assert code == 2 and "alpha" in err
    assert not (tmp_path / "c.jpg").exists()


def test_folder_goes_on_past_a_bad_image(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    drawing(src / "one.png")
    drawing(src / "two.jpg", mode="RGB")
    (src / "bad.png").write_bytes(b"not an image at all")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    code, _, err = run(capsys, "upscale", str(src), "-o", str(out), "--device", "cpu")
    assert code == 3
    assert "bad.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.jpg"]
    assert Image.open(out / "one.png").size == (160, 112)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["upscale", "{tmp}/missing.png"], 3, "no such file"),
        (["upscale", "{tmp}/garbage.png"], 3, "not an image"),
        (["upscale", "{tmp}/good.png", "--model", "realesr-animevidev3"], 4, "did you mean"),
        (["upscale", "{tmp}/good.png", "-o", "{tmp}/garbage.png/out.png"], 5, "does not exist"),
        (["upscale", "{tmp}/good.png", "-o", "{tmp}/exists.png"], 5, "--overwrite"),
        (["upscale", "{tmp}/good.png", "-o", "{tmp}/good.png", "--overwrite"], 2, "is the input"),
        (["upscale", "{tmp}/good.png", "--device", "cpu", "--precision", "fp16"], 6, "fp16"),
        (["upscale", "{tmp}/good.png", "--device", "cuda:3"], 6, "CUDA"),
        (["upscale", "{tmp}/good.png", "--denoise-strength", "0.3"], 2, "denoise"),
        (["upscale", "{tmp}/good.png", "--model", "{tmp}/nope.pth"], 4, "nope.pth"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys, args: list[str], code: int, needle: str
) -> None:
    drawing(tmp_path / "good.png")
    (tmp_path / "garbage.png").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "exists.png").write_bytes(b"keep me")
    before = {p.name: sha(p) for p in tmp_path.iterdir()}
    got, _out, err = run(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert got == code, err
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {p.name: sha(p) for p in tmp_path.iterdir() if p.name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_models_list(capsys) -> None:
    code, out, _ = run(capsys, "models", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    registry = {
        "realesr-animevideov3",
        "realesr-general-x4v3",
        "realesr-general-wdn-x4v3",
        "RealESRGAN_x4plus",
        "RealESRNet_x4plus",
        "RealESRGAN_x4plus_anime_6B",
        "RealESRGAN_x2plus",
    }
    assert registry <= set(rows)
    offline = {n for n in registry if rows[n]["offline"]}
    assert offline == {"realesr-animevideov3", "RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B"}
    assert rows["RealESRGAN_x2plus"]["scale"] == 2
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "RealESRGAN_x4plus_anime_6B" in out and "4,467,779" in out


def test_model_not_offline_names_url_and_import(tmp_path: Path, capsys) -> None:
    drawing(tmp_path / "good.png")
    code, _, err = run(
        capsys,
        "upscale",
        str(tmp_path / "good.png"),
        "--model",
        "RealESRGAN_x2plus",
        "--device",
        "cpu",
    )
    assert code == 4
    assert "RealESRGAN_x2plus.pth" in err and "vidsr models import" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("vidsr")
    proc = subprocess.run(
        [str(exe), "upscale", str(tmp_path / "missing.png")], capture_output=True, text=True
    )
    assert proc.returncode == 3
    assert (
        proc.stderr.strip() == f"vidsr: error: {tmp_path / 'missing.png'}: no such file or folder"
    )
