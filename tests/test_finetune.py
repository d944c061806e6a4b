"""``vidsr finetune``: prepare, train (killed and resumed), export, then upscale with the result.

The source is made the way real anime files are: flat colours and outlines, a moving part held
for two and three frames, a fade to black, encoded with libx264 into Matroska (PyAV's own
muxer). Training runs on the CPU at tiny sizes (ground-truth crops of 96 pixels for synthetic
pairs, so the 21-tap kernels still fit after a 0.15 downscale); the VGG19 weights are not
here (their URL points at a closed port), so the runs that do not test the perceptual loss
leave it out with ``--perceptual-weight 0``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import json_events, run_cli
from PIL import Image
from safetensors.torch import load_file

W, H = 192, 128


def anime_frames(n: int = 36, seed: int = 0) -> list[np.ndarray]:
    """Flat background, an outlined disc moving on twos and threes, a fade to black."""
    rng = np.random.default_rng(seed)
    bg = np.array([rng.integers(60, 200) for _ in range(3)], dtype=np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    frames, pos = [], 0
    for i in range(n):
        if i % 5 in (0, 2):  # drawn on twos and threes: the part moves on some frames only
            pos += 9
        f = np.empty((H, W, 3), np.uint8)
        f[:] = bg
        f[: H // 3] = (bg * 0.6).astype(np.uint8)  # a sky band
        d = np.hypot(xx - (20 + pos % (W - 40)), yy - H // 2)
        f[d < 22] = (230, 90, 40)
        f[(d >= 22) & (d < 25)] = (20, 20, 20)  # the outline
        if i >= n - 4:
            f = (f * (0.25 * (n - 1 - i))).astype(np.uint8)  # the fade to black
        frames.append(f)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 24) -> Path:
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "18", "bf": "2", "g": "12"}
        s.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = int(i * 1000 / rate)
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("ft") / "episode.mkv", anime_frames())


@pytest.fixture(scope="module")
def dataset(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "ds"
    code, _, err = run_cli(None, "finetune", "prepare", clip, "-o", out, "--frames", "10")
    assert code == 0, err
    return out


def train(capsys, ds: Path, run: Path, *extra: str) -> list[dict]:
    args = ["finetune", "train", ds, "-o", run, "--batch-size", "2", "--gt-size", "96",
            "--perceptual-weight", "0", "--val-count", "1", "--json", *extra]  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return json_events(out)


# --- prepare ----------------------------------------------------------------------------------


def test_prepare_samples_frames_skipping_held_and_black(clip: Path, dataset: Path) -> None:
    from vidsr.media.decode import FrameDecoder

    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["kind"] == "hr" and manifest["scale"] is None
    items = manifest["items"]
    assert 6 <= len(items) <= 10
    indices = [it["frame"] for it in items]
    assert indices == sorted(indices) and max(indices) < 36 - 2  # the black tail is skipped
    assert min(indices) == 0 and max(indices) >= 25  # spread over the whole source
    with FrameDecoder(clip) as frames:
        decoded = {f.index: f.rgb for f in frames}
    kept = [decoded[i].astype(np.int16) for i in indices]
    for a, b in itertools.pairwise(kept):  # no two kept frames are the same drawing
        assert np.abs(a - b).mean() >= 2.0
    for it in items:  # stored as the decoder gives them (its own colour matrix and range)
        png = np.asarray(Image.open(dataset / it["hr"]).convert("RGB"))
        assert np.array_equal(png, decoded[it["frame"]])
    assert not any(p.name.endswith(".partial") for p in dataset.parent.iterdir())


def test_paired_prepare_checks_every_pair(tmp_path: Path, capsys) -> None:
    lr, hr = tmp_path / "lr", tmp_path / "hr"
    lr.mkdir(), hr.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        big = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(big).save(hr / f"{i}.png")
        Image.fromarray(big[::2, ::2]).save(lr / f"{i}.png")
    out = tmp_path / "pairs"
    code, stdout, err = run_cli(
        capsys, "finetune", "prepare", "--lr", lr, "--hr", hr, "-o", out, "--json"
    )
    assert code == 0, err
    assert json_events(stdout)[-1] | {"dataset": None} == {
        "event": "prepared", "dataset": None, "frames": 3, "kind": "paired", "scale": 2,
    }  # fmt: skip
    Image.fromarray(rng.integers(0, 256, (60, 96, 3), dtype=np.uint8)).save(hr / "1.png")
    code, _, err = run_cli(
        capsys, "finetune", "prepare", "--lr", lr, "--hr", hr, "-o", tmp_path / "b"
    )
    assert code != 0 and err.strip().count("\n") == 0
    assert "pair 1 (1.png, 1.png): HR 96x60 is not 2x LR 48x32" in err
    assert not (tmp_path / "b").exists()
    (hr / "2.png").unlink()
    code, _, err = run_cli(
        capsys, "finetune", "prepare", "--lr", lr, "--hr", hr, "-o", tmp_path / "c"
    )
    assert code != 0 and "has 3 frames but" in err and "has 2" in err


def test_empty_folder_and_missing_source_are_one_line(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "finetune", "prepare", empty, "-o", tmp_path / "d")
    assert code != 0 and err.strip().count("\n") == 0 and "no images in the folder" in err
    code, _, err = run_cli(capsys, "finetune", "train", empty, "-o", tmp_path / "r")
    assert code != 0 and "is not a dataset (make one with vidsr finetune prepare)" in err


# --- train ------------------------------------------------------------------------------------


def test_the_loss_falls_on_a_tiny_overfit(tmp_path: Path, capsys) -> None:
    """A paired set of one picture, L1 only: the loss at the end is well below the start."""
    lr, hr = tmp_path / "lr", tmp_path / "hr"
    lr.mkdir(), hr.mkdir()
    big = anime_frames(3)[1][:64, :64]
    small = np.asarray(Image.fromarray(big).resize((16, 16), Image.Resampling.BICUBIC))
    for i in range(2):
        Image.fromarray(big).save(hr / f"{i}.png")
        Image.fromarray(small).save(lr / f"{i}.png")
    ds = tmp_path / "ds"
    assert run_cli(capsys, "finetune", "prepare", "--lr", lr, "--hr", hr, "-o", ds)[0] == 0
    events = train(
        capsys, ds, tmp_path / "run", "--iters", "40", "--gt-size", "32", "--gan-weight", "0",
        "--learning-rate", "1e-3", "--val-count", "0", "--save-every", "40",
    )  # fmt: skip
    pix = [e["l_pix"] for e in events if e["event"] == "iter"]
    assert len(pix) == 40
    assert np.mean(pix[-5:]) < 0.6 * np.mean(pix[:5])


def _weights(run: Path) -> dict:
    folder = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {n: load_file(str(folder / f"{n}.safetensors")) for n in ("net_g", "net_g_ema", "net_d")}


def _losses(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "losses.jsonl").read_text().splitlines()]


def _same(a: dict, b: dict) -> bool:
    return all(
        set(a[n]) == set(b[n]) and all(bool((a[n][k] == b[n][k]).all()) for k in a[n]) for n in a
    )


def test_seeded_runs_are_deterministic_and_resume_exactly(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    """Synthetic pairs, GAN on: two runs of 6 iterations agree bit for bit, and a run
    stopped at 3 and continued to 6 by the same command (with --iters raised) too."""
    opts = ("--save-every", "3", "--val-every", "3", "--seed", "7")
    whole = tmp_path / "whole"
    train(capsys, dataset, whole, "--iters", "6", *opts)
    again = tmp_path / "again"
    train(capsys, dataset, again, "--iters", "6", *opts)
    assert _losses(whole) == _losses(again) and _same(_weights(whole), _weights(again))
    part = tmp_path / "part"
    train(capsys, dataset, part, "--iters", "3", *opts)
    events = train(capsys, dataset, part, "--iters", "6", *opts)
    assert events[0]["event"] == "resumed" and events[0]["iter"] == 3
    assert events[1]["event"] == "started" and events[1]["discriminator"] == "fresh"
    assert _losses(part) == _losses(whole)
    assert _same(_weights(part), _weights(whole))
    losses = _losses(whole)
    assert [r["iter"] for r in losses] == list(range(1, 7))
    assert {"l_pix", "l_gan", "l_d_real", "l_d_fake"} <= set(losses[0])
    assert (whole / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val = [json.loads(ln) for ln in (whole / "val" / "psnr.jsonl").read_text().splitlines()]
    assert [v["iter"] for v in val] == [0, 3, 6]
    assert val[0]["psnr_base"] == val[0]["psnr_ema"]  # nothing trained yet
    with Image.open(val[-1]["grid"]) as grid:  # LR | base | current | HR
        assert grid.width == 4 * grid.height or grid.width >= 4 * 96
    # another recipe in the same folder is refused, naming what differs
    code, _, err = run_cli(
        capsys, "finetune", "train", dataset, "-o", part, "--batch-size", "2", "--gt-size",
        "96", "--perceptual-weight", "0", "--val-count", "1", "--iters", "9", "--seed", "8",
    )  # fmt: skip
    assert code != 0 and "another recipe (seed differ)" in err


def test_kill_9_at_any_moment_then_the_same_command_continues(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    opts = ["--iters", "6", "--save-every", "2", "--val-every", "6", "--seed", "3"]
    whole = tmp_path / "whole"
    train(capsys, dataset, whole, *opts)
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "vidsr", "finetune", "train", str(dataset), "-o", str(killed),
            "--batch-size", "2", "--gt-size", "96", "--perceptual-weight", "0",
            "--val-count", "1", "--json", *opts]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (killed / "checkpoints" / "latest").exists():  # past the first checkpoint
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # and then anywhere: mid-iteration, mid-write
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    events = train(capsys, dataset, killed, *opts)
    assert events[0]["event"] == "resumed" and events[0]["iter"] >= 2
    assert events[-1]["event"] == "done" and events[-1]["iter"] == 6
    assert _losses(killed) == _losses(whole)
    assert _same(_weights(killed), _weights(whole))


def test_models_without_the_recipe_are_refused(tmp_path: Path, dataset: Path, capsys) -> None:
    from vidsr.models.arch import SRVGGNetCompact

    onnx = tmp_path / "m.onnx"
    import torch

    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=4, num_conv=1, upscale=2).eval()
    torch.onnx.export(net, torch.rand(1, 3, 16, 16), str(onnx), dynamo=False)
    code, _, err = run_cli(capsys, "finetune", "train", dataset, "-o", tmp_path / "r", "-m", onnx)
    assert code != 0 and err.strip().count("\n") == 0
    assert "finetune trains Real-ESRGAN's architectures" in err and "ONNX" in err


def test_perceptual_loss_offline_says_what_to_import(dataset: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(
        capsys, "finetune", "train", dataset, "-o", tmp_path / "r", "--iters", "1",
        "--gt-size", "96", "--batch-size", "1",
    )  # fmt: skip
    assert code != 0 and err.strip().count("\n") == 0
    assert "vidsr models import vgg19-dcbb9e9d.pth" in err and "--perceptual-weight 0" in err


# --- export -----------------------------------------------------------------------------------


def test_export_then_upscale_with_the_result(
    dataset: Path, tmp_path: Path, private_home: Path, capsys
) -> None:
    run = tmp_path / "run"
    train(capsys, dataset, run, "--iters", "2", "--save-every", "1", "--gan-weight", "0")
    code, out, err = run_cli(capsys, "finetune", "export", run, "--name", "my-show", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["arch"], result["scale"], result["iteration"]) == ("SRVGGNetCompact", 4, 2)
    ema = load_file(str(run / "checkpoints" / "iter_0000002" / "net_g_ema.safetensors"))
    shared = load_file(result["file"])
    assert set(shared) == set(ema) and all(bool((shared[k] == ema[k]).all()) for k in ema)
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    assert "my-show" in {r["name"] for r in json.loads(out)}
    sample = Path(__file__).resolve().parents[1] / "samples" / "clip.mkv"
    res = tmp_path / "up.mkv"
    code, _, err = run_cli(capsys, "upscale", sample, "-m", "my-show", "-o", res)
    assert code == 0, err
    with av.open(str(res)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (640, 360)
    code, _, err = run_cli(capsys, "finetune", "export", run, "--name", "x", "--iter", "5")
    assert code != 0 and "no checkpoint at iteration 5 (it has 1, 2)" in err
    code, _, err = run_cli(capsys, "finetune", "export", run, "--name", "realesr-animevideov3")
    assert code != 0 and "built-in model's name" in err


def test_vgg19_imported_by_models_import_drives_the_perceptual_loss(
    dataset: Path, tmp_path: Path, private_home: Path, capsys
) -> None:
    """VGG19 downloaded elsewhere (here: random weights of its real shapes) goes in with
    ``vidsr models import``; then the perceptual loss runs offline."""
    import torch

    from vidsr.training.losses import vgg19_feature_shapes

    torch.manual_seed(0)
    sd = {k: torch.randn(s) * 0.01 for k, s in vgg19_feature_shapes().items()}
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(sd, path)
    code, out, err = run_cli(capsys, "models", "import", path)
    assert code == 0, err
    assert "as vgg19-features" in out
    events = train(
        capsys, dataset, tmp_path / "run", "--iters", "1", "--perceptual-weight", "1",
        "--gan-weight", "0", "--batch-size", "1", "--val-count", "0",
    )  # fmt: skip
    it = next(e for e in events if e["event"] == "iter")
    assert it["l_percep"] > 0 and "l_gan" not in it


def test_sigterm_saves_where_the_run_is(dataset: Path, tmp_path: Path, capsys) -> None:
    """SIGTERM mid-run: the loop stops between iterations and saves there (nothing done is
    lost), says so in one line, and the same command continues from it."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "vidsr", "finetune", "train", str(dataset), "-o", str(run),
            "--batch-size", "1", "--gt-size", "96", "--perceptual-weight", "0", "--gan-weight",
            "0", "--val-count", "0", "--iters", "500", "--save-every", "1000", "--json"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the first iteration is done
        if '"event": "iter"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err
    assert "saved; the same command continues" in err
    stopped = int(err.split("stopped at iteration ")[1].split(",")[0])
    assert (run / "checkpoints" / "latest").read_text().strip() == f"iter_{stopped:07d}"
    events = train(
        capsys, dataset, run, "--batch-size", "1", "--gan-weight", "0", "--val-count", "0",
        "--iters", str(stopped + 1), "--save-every", "1000",
    )  # fmt: skip
    assert events[0] == {**events[0], "event": "resumed", "iter": stopped}
    assert [r["iter"] for r in _losses(run)] == list(range(1, stopped + 2))


def test_the_video_degradation_trains(dataset: Path, tmp_path: Path, capsys) -> None:
    """vidsr's own preset (H.264 round trips of the low-res samples) runs in training."""
    events = train(
        capsys, dataset, tmp_path / "run", "--iters", "2", "--degradation", "video",
        "--gan-weight", "0", "--val-count", "0", "--save-every", "2",
    )  # fmt: skip
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["fingerprint"]["degradation"] == "video"
    assert [e["iter"] for e in events if e["event"] == "iter"] == [1, 2]


def test_anime_6b_trains_with_a_fresh_discriminator_offline(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    """RRDBNet too; its released discriminator cannot be had offline here, so training
    starts a new one and says where the official one is."""
    events = train(
        capsys, dataset, tmp_path / "run", "-m", "RealESRGAN_x4plus_anime_6B", "--iters", "1",
        "--batch-size", "1", "--save-every", "1",
    )  # fmt: skip
    started = next(e for e in events if e["event"] == "started")
    assert started["discriminator"].startswith("fresh: the official discriminator for")
    assert "RealESRGAN_x4plus_anime_6B_netD.pth" in started["discriminator"]
    it = next(e for e in events if e["event"] == "iter")
    assert {"l_pix", "l_gan", "l_d_real", "l_d_fake"} <= set(it)


def test_the_precision_rule_on_cuda_and_the_cpu() -> None:
    """The CUDA choices, tested here without a GPU (none is lent to these tests): bf16
    autocast where the GPU has it, else fp16 with a gradient scaler; fp32 means no autocast;
    the CPU trains fp32 only."""
    import torch

    from vidsr.errors import UsageError
    from vidsr.training.train import autocast_dtype, needs_scaler, train_precision

    assert train_precision("auto", cuda=True, bf16=True) == "bf16"
    assert train_precision("auto", cuda=True, bf16=False) == "fp16"
    assert train_precision("fp32", cuda=True, bf16=True) == "fp32"
    assert train_precision("auto", cuda=False, bf16=False) == "fp32"
    with pytest.raises(UsageError, match="trains in fp32 on the CPU"):
        train_precision("bf16", cuda=False, bf16=True)
    with pytest.raises(UsageError, match="no bfloat16 arithmetic"):
        train_precision("bf16", cuda=True, bf16=False)
    assert autocast_dtype("bf16", "cuda") == torch.bfloat16
    assert autocast_dtype("fp16", "cuda") == torch.float16
    assert autocast_dtype("fp32", "cuda") is None and autocast_dtype("fp32", "cpu") is None
    assert needs_scaler("fp16") and not needs_scaler("bf16") and not needs_scaler("fp32")


def test_keep_checkpoints_prunes_the_oldest(dataset: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    opts = ("--save-every", "1", "--gan-weight", "0", "--val-count", "0", "--batch-size", "1",
            "--keep-checkpoints", "2")  # fmt: skip
    train(capsys, dataset, run, "--iters", "4", *opts)
    kept = sorted(p.name for p in (run / "checkpoints").glob("iter_*"))
    assert kept == ["iter_0000003", "iter_0000004"]
    events = train(capsys, dataset, run, "--iters", "5", *opts)  # and it continues from them
    assert events[0]["event"] == "resumed" and events[0]["iter"] == 4
    assert sorted(p.name for p in (run / "checkpoints").glob("iter_*")) == [
        "iter_0000004", "iter_0000005",
    ]  # fmt: skip
