"""The option table: one declaration of each option, from which the CLI, the Python API,
presets and the resume fingerprint are built; the same checks and one-line errors whoever
gives a value; and the bugs the copies had (a model path's default output name, an API
batch size the CLI would refuse, fingerprints that differed by caller)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli, upscale_settings

import vidsr
from vidsr import options
from vidsr.errors import OutputError, UnknownOptionError, UsageError
from vidsr.media.probe import probe
from vidsr.run import presets
from vidsr.run.resolve import resolve
from vidsr.settings import fingerprint, make_settings

# --- one table, every front-end -------------------------------------------------------------


@pytest.mark.parametrize("command", options.COMMANDS)
def test_every_option_is_in_the_cli_help(command: str, capsys) -> None:
    code, out, _ = run_cli(capsys, *command.split("_"), "--help")  # finetune_train: two words
    assert code == 0
    for o in options.options_for(command):
        assert o.flag in out, o.name
        if o.short:
            assert f"{o.short}, {o.flag}" in out


def test_the_api_takes_every_upscale_option_by_the_same_name_and_default() -> None:
    params = inspect.signature(vidsr.upscale).parameters
    for o in options.options_for("upscale"):
        if not o.api or o.name == "output":
            continue
        assert params[o.name].default == o.default, o.name
        assert params[o.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert f"``{o.name}``" in (vidsr.upscale.__doc__ or "")
    assert "json" not in params and "dry_run" not in params  # terminal-only options
    with pytest.raises(UnknownOptionError, match=r"tiel= \(did you mean tile\?\)") as info:
        vidsr.upscale("whatever.mkv", tiel=16)
    assert isinstance(info.value, TypeError)  # as Python's own unexpected keyword


def test_presets_take_the_presettable_options_by_their_flag_names(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    for o in options.options_for("upscale"):
        f.write_text(f"{o.key} = 1\n")
        try:
            presets.preset_values(presets.find_preset(str(f)))
        except UsageError as exc:
            known = "unknown key" not in str(exc)
            assert known == o.preset, (o.name, str(exc))  # refused by value, or by key
        else:
            assert o.preset


def bad_preset(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("cli", "api", "toml", "message"),
    [
        (["--tile", "5"], {"tile": 5}, "tile = 5", "{} must be 0 (whole frames) or at least 8"),
        (["--tile", "1.5"], {"tile": 1.5}, "tile = 1.5", "{} must be a whole number, not 1.5"),
        (["--scale", "20"], {"scale": 20}, "scale = 20", "{} must be in (0, 16], not 20"),
        (
            ["--precision", "fp17"],
            {"precision": "fp17"},
            'precision = "fp17"',
            "{} must be one of auto, fp32, fp16, bf16",
        ),
        (
            ["--batch-size", "-1"],
            {"batch_size": -1},
            "batch-size = -1",
            "{} must be 0 (auto) or positive, not -1",
        ),
        (
            ["--devices", "gpu0"],
            {"devices": "gpu0"},
            'devices = "gpu0"',
            "{} takes devices like cuda:0,cuda:1",
        ),
    ],
    ids=["tile", "tile-float", "scale", "precision", "batch-size", "devices"],
)
def test_a_bad_value_gets_the_same_error_from_cli_api_and_preset(
    media_clips: dict[str, Path],
    tmp_path: Path,
    capsys,
    cli: list[str],
    api: dict,
    toml: str,
    message: str,
) -> None:
    clip = media_clips["single"]
    name = next(iter(api))
    flag, key = "--" + name.replace("_", "-"), name.replace("_", "-")
    code, out, err = run_cli(capsys, "upscale", clip, *cli)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message.format(flag) in err
    with pytest.raises(UsageError) as info:
        vidsr.upscale(clip, tmp_path / "o.mkv", **api)
    assert message.format(f"{name}=") in str(info.value)
    preset = bad_preset(tmp_path, toml + "\n")
    code, _, err = run_cli(capsys, "upscale", clip, "--preset", preset)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"preset bad: {message.format(key)}" in err
    # the same sentence after the option's name, whoever wrote it
    tails = {
        str(info.value).split(f"{name}= ", 1)[1].split(", not")[0],
        err.split(f"preset bad: {key} ", 1)[1].split(", not")[0],
    }
    assert len(tails) == 1


def test_library_errors_are_spelled_for_their_reader(
    media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "o.mkv"
    out.write_bytes(b"x")
    with pytest.raises(OutputError, match=r"pass overwrite=True to replace it"):
        vidsr.upscale(media_clips["single"], out, device="cpu")
    code, _, err = run_cli(capsys, "upscale", media_clips["single"], "-o", out, "--device", "cpu")
    assert code == 5 and "pass --overwrite to replace it" in err
    code, _, err = run_cli(capsys, "upscale", media_clips["single"], "--precision", "fp16")
    assert code == 6 and "use --precision fp32 or --precision bf16 on the CPU" in err
    with pytest.raises(UsageError, match=r"give chunk_frames= or chunk_seconds=, not both"):
        upscale_settings(chunk_frames=10, chunk_seconds=2.0)


def test_a_new_option_in_the_table_reaches_every_front_end(tmp_path: Path) -> None:
    """Declare one more option (in a fresh interpreter, before vidsr builds its CLI and API)
    and find it, with no other edit, in the CLI help and its checks, the API's signature,
    presets and the resume fingerprint."""
    preset = tmp_path / "p.toml"
    preset.write_text("sharpen = 0.25\n")
    script = textwrap.dedent(
        f"""
        from vidsr import options as o
        o.OPTIONS = (*o.OPTIONS, o.Option(
            "sharpen", o.FLOAT, 0.0, "Sharpen the result (0 = not at all).",
            frozenset({{"upscale", "batch"}}),
            check=lambda v: None if 0 <= v <= 1 else "must be between 0 and 1",
            fingerprint=True,
        ))
        import inspect
        from click.testing import CliRunner
        import vidsr
        from vidsr.cli import cli
        from vidsr.run import presets
        from vidsr.settings import fingerprint, make_settings

        for command in ("upscale", "batch"):
            help_text = CliRunner().invoke(cli, [command, "--help"]).output
            assert "--sharpen" in help_text and "Sharpen the result" in help_text, command
        from vidsr.errors import spelling

        with spelling("cli"):  # as vidsr.cli.main renders its errors
            bad = CliRunner().invoke(cli, ["upscale", "x.mkv", "--sharpen", "2"])
            assert "--sharpen must be between 0 and 1, not 2" in str(bad.exception), bad.output
        param = inspect.signature(vidsr.upscale).parameters["sharpen"]
        assert param.default == 0.0
        values = presets.preset_values(presets.find_preset({str(preset)!r}))
        assert values == {{"sharpen": 0.25}}, values
        s = make_settings("upscale", {{"sharpen": 0.5}})
        assert s.sharpen == 0.5 and fingerprint(s)["sharpen"] == 0.5
        assert fingerprint(s) != fingerprint(make_settings("upscale", {{}}))
        print("reached every front-end")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "reached every front-end" in proc.stdout


# --- the fingerprint --------------------------------------------------------------------------


def test_the_fingerprint_holds_what_changes_the_bytes_and_nothing_else() -> None:
    base = resolve(upscale_settings(), "cpu")
    same = {
        "batch_size": 3,
        "lanes": 2,
        "devices": "cpu,cpu",
        "workers_per_device": 2,
        "encode_workers": 2,
        "ignore_errors": True,
        "json": True,
        "hw_decode": "on",
        "keep_work": True,
    }
    for name, value in same.items():
        assert fingerprint(base.replace(**{name: value})) == fingerprint(base), name
    other = {
        "tile": 64,
        "tile_pad": 4,
        "scale": 2.0,
        "denoise_strength": 0.3,
        "device_colour": "on",
        "codec": "libx265",
        "crf": 12.0,
        "encoder_preset": "slow",
        "pix_fmt": "yuv444p",
        "encoder_opt": {"tune": "animation"},
        "compile": True,
    }
    for name, value in other.items():
        assert fingerprint(base.replace(**{name: value})) != fingerprint(base), name
    # The model is its weights' hash (the same weights by name or by file are the same job);
    # a resumed job keeps the chunks it was planned with, so their length is not in it.
    assert fingerprint(base, weights="a") != fingerprint(base, weights="b")
    for name, value in {"model": "models/mine.pth", "chunk_frames": 10}.items():
        assert fingerprint(base.replace(**{name: value})) == fingerprint(base), name
    # "auto" and what it resolves to are the same job, as are a default left out and spelled
    # out: the CLI's defaults and an API call naming the resolved values fingerprint alike.
    explicit = resolve(
        upscale_settings(precision="fp32", device_colour="off", crf=18, encoder_preset="medium"),
        "cpu",
    )
    assert fingerprint(explicit) == fingerprint(base)
    general = resolve(upscale_settings(model="realesr-general-x4v3"), "cpu")
    assert general.denoise_strength == 0.5  # the blend's default, made explicit
    assert base.precision == "fp32" and base.device_colour == "off" and base.scale == 4.0


def test_cli_and_api_settings_are_one_object(media_clips: dict[str, Path]) -> None:
    from vidsr.options import read_values

    text = {"scale": "2", "encoder_opt": ("tune=animation",), "crf": "18", "tile": "64"}
    cli = make_settings("upscale", read_values("upscale", text, "cli"))
    api = make_settings(
        "upscale", {"scale": 2, "encoder_opt": {"tune": "animation"}, "crf": 18, "tile": 64}
    )
    assert cli == api and fingerprint(cli) == fingerprint(api)


# --- the bugs the copies had ------------------------------------------------------------------


def test_a_model_file_of_any_weight_suffix_names_the_default_output(
    media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    import torch

    from vidsr.models.loader import load_network

    (tmp_path / "models").mkdir()
    weights = tmp_path / "models" / "mine.ckpt"  # Real-ESRGAN's layout, another suffix
    torch.save({"params": load_network("realesr-animevideov3").module.state_dict()}, weights)
    src = tmp_path / "clip.mkv"
    src.write_bytes(media_clips["single"].read_bytes())
    code, _, err = run_cli(capsys, "upscale", src, "-m", weights, "--device", "cpu")
    assert code == 0, err
    made = tmp_path / "clip.mine.x4.mkv"
    assert probe(made).video.frame_count == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mine.x4.mkv", "clip.mkv", "models"]


def test_the_api_refuses_what_the_cli_refuses(media_clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"batch_size= must be 0 \(auto\) or positive, not -1"):
        vidsr.upscale(media_clips["single"], tmp_path / "o.mkv", batch_size=-1)
    with pytest.raises(UsageError, match=r"workers_per_device= must be at least 1"):
        vidsr.upscale(media_clips["single"], tmp_path / "o.mkv", workers_per_device=0)
    assert not (tmp_path / "o.mkv").exists()
