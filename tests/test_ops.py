"""`vidsr probe`, `vidsr preview` and `vidsr doctor` on real files, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run
from PIL import Image

from vidsr.ops import doctor_report, format_doctor, make_preview, parse_time

MODELS = ["realesr-animevideov3", "RealESRGAN_x4plus_anime_6B"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- probe ----------------------------------------------------------------------------------


def test_probe_json_rich_file_in_mkv_and_mp4(media_clips: dict[str, Path], capsys) -> None:
    code, out, err = run(capsys, "probe", str(media_clips["rich"]), "--json")
    assert code == 0, err
    r = json.loads(out)
    v = r["video"]
    assert (v["frames"], v["width"], v["height"], v["vfr"], v["fps"]) == (48, 64, 36, False, 24)
    assert v["pix_fmt"] == "yuv420p" and v["bit_depth"] == 8 and v["rotation"] == 0
    assert r["title"] == "Factory clip" and len(r["chapters"]) == 2
    assert r["chapters"][0]["title"] == "Opening"
    kinds = [(s["type"], s["codec"]) for s in r["streams"]]
    assert kinds == [
        ("audio", "aac"),
        ("audio", "flac"),
        ("subtitle", "ass"),
        ("subtitle", "subrip"),
        ("attachment", None),
        ("video", "png"),
    ]
    assert r["streams"][1]["language"] == "jpn" and r["streams"][1]["title"] == "Commentary"
    assert r["streams"][3]["forced"] and r["streams"][5]["cover_art"]
    assert r["output"]["container"] == ".mkv" and r["output"]["ok"]
    assert all(s["kept"] for s in r["streams"])

    code, out, _ = run(capsys, "probe", str(media_clips["rich"]), "--json", "--container", "mp4")
    assert code == 0
    r = json.loads(out)
    kept = {s["index"]: s["kept"] for s in r["streams"]}
    assert kept == {1: True, 2: True, 3: True, 4: True, 5: False, 6: True}
    assert [s["action"] for s in r["streams"]][2:5] == ["convert", "convert", "refuse"]
    assert not r["output"]["ok"] and len(r["output"]["cannot_keep"]) == 1
    assert r["streams"][4]["problem"] == ".mp4 cannot carry attachments (fonts)"
    assert "--drop-unsupported" in r["output"]["refusal"] and "write .mkv" in r["output"]["refusal"]
    assert any("styling" in w for w in r["warnings"])  # ASS becomes mov_text

    code, out, _ = run(capsys, "probe", str(media_clips["rich"]), "--container", ".mp4")
    assert code == 0
    assert "48 frames (exact)" in out and "NOT KEPT" in out and "cannot keep: #5 attachment" in out


def test_probe_vfr_rotation_colour_and_codec(media_clips: dict[str, Path], capsys) -> None:
    def report(name: str, *args: str) -> dict:
        code, out, err = run(capsys, "probe", str(media_clips[name]), "--json", *args)
        assert code == 0, err
        return json.loads(out)

    vfr = report("vfr")["video"]
    assert vfr["vfr"] and vfr["frames"] == 40
    iv = vfr["frame_interval_ms"]  # 20 ms and 100 ms gaps (mkv rounds times to 1 ms)
    assert iv["min"] == pytest.approx(20, abs=1) and iv["max"] == pytest.approx(100, abs=1)
    assert report("rotated")["video"]["rotation"] == 90
    late = report("late_video")["video"]
    assert late["start_offset"] == pytest.approx(0.5, abs=0.01)

    hevc = report("hevc10", "--codec", "libx265")
    c = hevc["video"]["colour"]
    assert hevc["video"]["bit_depth"] == 10 and c["tagged"]
    assert (c["primaries"], c["transfer"], c["matrix"], c["range"]) == (
        "bt2020",
        "arib-std-b67",
        "bt2020nc",
        "tv",
    )
    assert hevc["output"]["pix_fmt"] == "yuv420p10le" and hevc["output"]["bit_depth_kept"]
    ffv1_in_mp4 = report("no_audio", "--container", ".mp4", "--codec", "ffv1")["output"]
    assert not ffv1_in_mp4["ok"] and "ffv1" in ffv1_in_mp4["video_problems"][0]

    code, _, err = run(capsys, "probe", str(media_clips["garbage"]))
    assert code == 3 and len(err.strip().splitlines()) == 1 and "not a media file" in err


# --- preview --------------------------------------------------------------------------------


def test_preview_side_by_side(media_clips: dict[str, Path], tmp_path: Path) -> None:
    from vidsr.media.decode import decode_frames
    from vidsr.pipeline.infer import build_upscaler
    from vidsr.settings import make_settings

    out = tmp_path / "pick.png"
    settings = make_settings(
        "preview", {"at": "0:01.02", "models": MODELS, "output": out, "device": "cpu"}
    )
    r = make_preview(media_clips["cfr"], settings)
    assert (r["frame"], r["time"], r["scale"]) == (24, 1.0, 4.0)  # the frame shown at 1.02 s
    img = np.asarray(Image.open(out).convert("RGB"))
    assert list(img.shape[1::-1]) == r["size"]
    assert r["panel_size"] == [256, 144]
    panels = r["panels"]
    assert len(panels) == 3
    assert img.shape[0] == r["label_height"] + 144
    assert img.shape[1] >= 3 * 256 + 2 * 4
    labels = [p["label"] for p in panels]
    assert labels[0].startswith("source (nearest), x4")
    for label, model in zip(labels[1:], MODELS, strict=True):
        assert label.startswith(f"{model}, x4")
    assert all("00:00:01.000 (frame 24)" in label for label in labels)

    frame = next(iter(decode_frames(media_clips["cfr"], 24, 25))).rgb
    crop = lambda p: img[p["y"] : p["y"] + 144, p["x"] : p["x"] + 256]  # noqa: E731
    # the source panel is the frame enlarged nearest-neighbour, exactly
    assert np.array_equal(crop(panels[0]), frame.repeat(4, axis=0).repeat(4, axis=1))
    # the model panel is that model's result
    up = build_upscaler(MODELS[0], device="cpu", precision="auto")
    import torch

    x = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None]
    want = up(x)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    assert np.abs(crop(panels[1]).astype(int) - want.astype(int)).max() <= 1
    assert not np.array_equal(crop(panels[1]), crop(panels[2]))  # two different models
    # each label strip is black with white text drawn on it
    for p in panels:
        strip = img[p["label_y"] : p["label_y"] + r["label_height"], p["x"] : p["x"] + 256]
        white = (strip.min(axis=2) > 200).sum()
        assert 20 < white < strip.shape[0] * strip.shape[1] // 2


def test_preview_cli_crop_and_refusals(media_clips: dict[str, Path], tmp_path: Path, capsys):
    out = tmp_path / "crop.png"
    clip = str(media_clips["cfr"])
    code, _, err = run(
        capsys,
        "preview",
        clip,
        "--at",
        "0.5",
        "-o",
        str(out),
        "--device",
        "cpu",
        "--crop",
        "16x8+10+4",
        "--scale",
        "2",
    )
    assert code == 0, err
    assert "frame 12" in err
    w, h = Image.open(out).size
    assert h > 16 and w >= 2 * 32 + 4  # two panels of 32x16 (plus labels)

    code, _, err = run(capsys, "preview", clip, "--at", "9", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "past the end" in err
    code, _, err = run(capsys, "preview", clip, "--at", "1", "-o", str(tmp_path / "x.jpg"))
    assert code == 2 and "PNG" in err
    code, _, err = run(capsys, "preview", clip, "--at", "1", "-o", str(out))
    assert code == 5 and "--overwrite" in err
    code, _, err = run(
        capsys, "preview", clip, "--at", "1", "-o", str(tmp_path / "y.png"), "--models", "nope"
    )
    assert code == 4
    assert parse_time("1:02:03.5") == 3723.5 and parse_time(".25") == 0.25


# --- doctor ---------------------------------------------------------------------------------


def test_doctor(capsys, shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av
    import torch

    code, out, err = run(capsys, "doctor", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["usable"] and r["problems"] == []
    assert r["torch"]["version"] == torch.__version__
    assert r["torch"]["devices"][0]["device"] == "cpu"
    assert len(r["torch"]["devices"]) == 1 + torch.cuda.device_count()
    assert "libx264" in r["ffmpeg"]["encoders"] and "ffv1" in r["ffmpeg"]["encoders"]
    assert r["ffmpeg"]["version"].startswith("ffmpeg version")
    assert r["pyav"]["version"] == av.__version__ and r["pyav"]["encoders"]["libx264"]
    assert r["cache"]["home"] == str(shared_home) and r["cache"]["writable"]
    models = {m["name"]: m for m in r["models"]}
    assert models["realesr-animevideov3"]["offline"]
    assert not models["RealESRGAN_x2plus"]["offline"]
    assert any("RealESRGAN_x2plus" in a for a in r["advice"])
    text = format_doctor(r)
    assert "usable: yes" in text and "realesr-animevideov3" in text

    monkeypatch.setenv("VIDSR_FFMPEG", str(shared_home / "no-such-ffmpeg"))
    bad = doctor_report()
    assert not bad["usable"] and "VIDSR_FFMPEG" in bad["problems"][0]
    assert "usable: NO" in format_doctor(bad)
