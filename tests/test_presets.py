"""Presets: the bundled ones are valid and installed, NAME and FILE lookup, the user folder
beats the bundled one, an explicit flag beats the preset which beats the default, bad
presets are one-line usage errors, and a preset really changes a run."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from helpers import run_cli as run

from vidsr.media.probe import probe
from vidsr.run import presets

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("anime", "anime-fast", "anime-hq", "live-action", "archive", "dvd")


@pytest.fixture
def home(private_home: Path) -> Path:
    """A fresh VIDSR_HOME (user presets go in it); dry runs need no weights."""
    return private_home


def plan_line(out: str, key: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{key}:"))


def dry_run(capsys, clip: Path, tmp_path: Path, *args: str) -> tuple[str, str]:
    """(output line, model line) of `vidsr upscale --dry-run`."""
    code, out, err = run(
        capsys, "upscale", str(clip), "-o", str(tmp_path / "o.mkv"), "--dry-run", *args
    )
    assert code == 0, err
    return plan_line(out, "output"), plan_line(out, "model")


def test_bundled_presets_are_valid_and_installed() -> None:
    from vidsr.media.encode import encoder_pix_fmts
    from vidsr.models.loader import check_model_spec

    names = {p.name: p for p in presets.available()}
    assert set(BUNDLED) <= set(names)
    for name in BUNDLED:
        p = names[name]
        assert p.source == "bundled" and p.path.parent == presets.bundled_dir()
        assert p.description
        values = presets.preset_values(p)  # every key known, every value well typed
        if "model" in values:
            check_model_spec(values["model"])
        supported = encoder_pix_fmts(values["codec"])
        if values.get("pix_fmt"):
            assert values["pix_fmt"] in supported
    assert presets.preset_values(names["anime"]) == {
        "model": "realesr-animevideov3",
        "codec": "libx265",
        "pix_fmt": "yuv420p10le",
        "crf": 20.0,
        "encoder_preset": "medium",
    }
    assert presets.preset_values(names["anime-hq"])["model"] == "RealESRGAN_x4plus_anime_6B"
    assert presets.preset_values(names["live-action"])["denoise_strength"] == 0.5
    assert presets.preset_values(names["archive"]) == {"codec": "ffv1"}
    # Shipped as package data, and the top-level presets/ folder points there.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "presets_data/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["vidsr"]
    assert presets.bundled_dir() == REPO / "vidsr" / "presets_data"
    assert "vidsr/presets_data" in (REPO / "presets" / "README.md").read_text()


def test_with_preset_precedence(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('codec = "libx265"\ncrf = 20\nscale = 2\n')
    given = {"preset": str(f), "codec": "libx264", "model": "m"}
    merged = presets.with_preset(given)
    assert merged == {"preset": str(f), "codec": "libx264", "crf": 20.0, "scale": 2.0, "model": "m"}
    assert "crf" not in given  # the input is not changed
    assert presets.with_preset({"codec": "ffv1"}) == {"codec": "ffv1"}  # no preset


def test_explicit_flag_beats_preset_beats_default(
    home: Path, media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    clip = media_clips["single"]  # 64x36
    out, model = dry_run(capsys, clip, tmp_path)
    assert "(libx264 256x144)" in out and "(x4)" in model  # defaults
    out, model = dry_run(capsys, clip, tmp_path, "--preset", "anime-fast")
    assert "(libx264 128x72)" in out and "(x2)" in model  # the preset's scale 2
    out, _ = dry_run(capsys, clip, tmp_path, "--preset", "anime-fast", "--scale", "4")
    assert "(libx264 256x144)" in out  # explicit beats the preset
    out, _ = dry_run(capsys, clip, tmp_path, "--preset", "anime")
    assert "(libx265 256x144)" in out
    # An explicit value equal to the default still beats the preset.
    out, _ = dry_run(capsys, clip, tmp_path, "--preset", "anime", "--codec", "libx264")
    assert "(libx264 256x144)" in out
    out, model = dry_run(capsys, clip, tmp_path, "--preset", "anime-hq", "-m", "RealESRGAN_x4plus")
    assert "(libx265 256x144)" in out and model.startswith("model:     RealESRGAN_x4plus ")


def test_user_folder_beats_bundled_and_files_work(
    home: Path, media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    user = home / "presets"
    user.mkdir(parents=True)
    (user / "anime.toml").write_text('description = "my anime"\ncodec = "ffv1"\n')
    (user / "mine.toml").write_text('scale = 2\ncodec = "libx265"\ncrf = 24\n')
    clip = media_clips["single"]
    out, _ = dry_run(capsys, clip, tmp_path, "--preset", "anime")
    assert "(ffv1 256x144)" in out
    out, _ = dry_run(capsys, clip, tmp_path, "--preset", "mine")
    assert "(libx265 128x72)" in out

    code, out, _ = run(capsys, "presets", "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert "user (overrides bundled)" in rows["anime"] and "my anime" in rows["anime"]
    assert "user" in rows["mine"] and "bundled" in rows["archive"]

    code, out, _ = run(capsys, "presets", "show", "anime")
    assert code == 0
    assert str(user / "anime.toml") in out and 'codec = "ffv1"' in out and "overrides" in out

    elsewhere = tmp_path / "night.toml"
    elsewhere.write_text('model = "realesr-animevideov3"\ncodec = "libsvtav1"\ncrf = 30\n')
    out, _ = dry_run(capsys, clip, tmp_path, "--preset", str(elsewhere))
    assert "(libsvtav1 256x144)" in out
    code, out, _ = run(capsys, "presets", "show", str(elsewhere), "--json")
    assert code == 0 and '"libsvtav1"' in out and '"source": "file"' in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('colour = "bt709"\n', "unknown key 'colour'"),
        ('pix_fmt = "yuv420p"\n', "unknown key 'pix_fmt' (did you mean pix-fmt?)"),
        ('output = "x.mkv"\n', "unknown key 'output'"),
        ('crf = "high"\n', "crf must be a number"),
        ("tile = 1.5\n", "tile must be a whole number"),
        ('precision = "fp17"\n', "precision"),
        ("encoder-opt = 5\n", "encoder-opt must be KEY=VALUE pairs"),
        ("codec = \n", "not valid TOML"),
    ],
)
def test_bad_presets_are_one_line_usage_errors(
    home: Path, media_clips: dict[str, Path], tmp_path: Path, capsys, text: str, expected: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    code, _, err = run(capsys, "upscale", str(media_clips["single"]), "--preset", str(bad))
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_preset_name_lists_the_known_ones(home: Path, capsys) -> None:
    code, _, err = run(capsys, "batch", "x.mkv", "-o", "out", "--preset", "anim")
    assert code == 2
    assert "unknown preset 'anim'" in err and "anime-fast" in err
    code, _, err = run(capsys, "presets", "show", "nope")
    assert code == 2 and "unknown preset 'nope'" in err


def test_encoder_opt_table_and_list(home: Path, tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('encoder-opt = { tune = "animation", x264-params = "aq-mode=3" }\n')
    values = presets.preset_values(presets.find_preset(str(f)))
    assert values == {"encoder_opt": (("tune", "animation"), ("x264-params", "aq-mode=3"))}
    f.write_text('encoder-opt = ["tune=animation"]\nignore-errors = true\n')
    values = presets.preset_values(presets.find_preset(str(f)))
    assert values == {"encoder_opt": (("tune", "animation"),), "ignore_errors": True}


def test_preset_changes_a_real_run(
    shared_home: Path, media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    clip = media_clips["single"]  # one frame: cheap
    out = tmp_path / "anime.mkv"
    code, _, err = run(
        capsys, "upscale", str(clip), "-o", str(out), "--device", "cpu", "--preset", "anime"
    )
    assert code == 0, err
    v = probe(out).video
    assert (v.codec, v.pix_fmt, v.width, v.height, v.frame_count) == (
        "hevc",
        "yuv420p10le",
        256,
        144,
        1,
    )
    # batch takes --preset too
    code, _, err = run(
        capsys,
        "batch",
        str(clip),
        "-o",
        str(tmp_path / "b"),
        "--device",
        "cpu",
        "--preset",
        "anime-fast",
    )
    assert code == 0, err
    made = tmp_path / "b" / "single.realesr-animevideov3.x2.mkv"
    v = probe(made).video
    assert (v.codec, v.width, v.height) == ("h264", 128, 72)
