"""Community models: any architecture spandrel knows, and ONNX files.

Small random-weight models of spandrel's SPAN, RealPLKSR, old-format ESRGAN and OmniSR (and a
Compact of another depth, which is vidsr's own SRVGGNetCompact) are saved the way they are
shared (.pth, .safetensors) and run through the real pipeline on a generated H.264 clip into
lossless FFV1 RGB; ONNX exports of a small model run through OpenVINO and ONNX Runtime.

The torchvision stand-in: spandrel 0.4.2 imports torchvision at package import (its LaMa and
RestoreFormer architectures use it), and torchvision cannot be installed here next to the
local CPU torch build (PyPI's torchvision wheels need their matching CUDA torch). So this
module puts ``tests/stubs`` on the path (and on PYTHONPATH, for worker processes): a minimal
stand-in exposing only the names spandrel imports, none of which the architectures tested
here call. Users get the real torchvision from ``pip install 'vidsr[models]'``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import json_events, run_cli
from safetensors.torch import save_file

from vidsr.errors import ModelError, UnsafeModelFileError, UsageError

STUBS = Path(__file__).parent / "stubs"


@pytest.fixture(scope="module", autouse=True)
def torchvision_stand_in() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(STUBS))
        mp.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(STUBS), os.environ.get("PYTHONPATH")]))
        )
        yield


def community_model(arch: str, scale: int, *, channels: int = 3, seed: int = 0) -> torch.nn.Module:
    """A small random-weight model of spandrel's ``arch`` at ``scale``."""
    torch.manual_seed(seed)
    if arch == "SPAN":
        from spandrel.architectures.SPAN import SPAN

        model = SPAN(num_in_ch=channels, num_out_ch=channels, feature_channels=8, upscale=scale)
    elif arch == "PLKSR":
        from spandrel.architectures.PLKSR import RealPLKSR

        model = RealPLKSR(dim=16, n_blocks=2, upscaling_factor=scale, kernel_size=7)
    elif arch == "ESRGAN":  # the old ESRGAN format: model.N keys
        from spandrel.architectures.ESRGAN import ESRGAN

        model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    elif arch == "OmniSR":
        from spandrel.architectures.OmniSR import OmniSR

        model = OmniSR(num_feat=16, window_size=8, res_num=1, up_scale=scale, block_num=1)
    else:
        from spandrel.architectures.Compact import Compact

        model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=scale)
    return model.eval()


def save(model: torch.nn.Module, path: Path) -> Path:
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"params_ema": sd}, path)  # as traiNNer / BasicSR release them
    return path


def reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What spandrel's own descriptor gives for ``x`` (padding included)."""
    import spandrel

    descriptor = spandrel.MAIN_REGISTRY.load(dict(model.state_dict()))
    return descriptor(x)


CASES = [(a, s) for a in ("SPAN", "PLKSR", "ESRGAN") for s in (1, 2, 4)]


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize(("arch", "scale"), CASES, ids=[f"{a}x{s}" for a, s in CASES])
def test_spandrel_architectures_are_detected_and_run(
    tmp_path: Path, arch: str, scale: int, fmt: str
) -> None:
    from vidsr.models.loader import describe_model, load_network
    from vidsr.pipeline.infer import build_upscaler

    model = community_model(arch, scale)
    path = save(model, tmp_path / f"{arch.lower()}.{fmt}")
    net = load_network(path)
    assert (net.loader, net.arch, net.scale) == ("spandrel", arch, scale)
    assert net.params == sum(p.numel() for p in model.parameters())
    assert describe_model(path).scale == scale
    up = build_upscaler(str(path), device="cpu", precision="auto")
    x = torch.rand(2, 3, 13, 18)
    out = up(x)
    assert out.shape == (2, 3, 13 * scale, 18 * scale)
    assert torch.allclose(out[:1], reference(model, x[:1]).float(), atol=1e-5)
    assert torch.allclose(out[1:], reference(model, x[1:]).float(), atol=1e-5)


def test_minimum_size_is_padded_and_cropped(tmp_path: Path) -> None:
    """OmniSR needs 16 pixels a side: a 9x12 frame and 6-pixel tiles are padded, then cut."""
    from vidsr.pipeline.infer import build_upscaler

    model = community_model("OmniSR", 2)
    path = save(model, tmp_path / "omni.safetensors")
    up = build_upscaler(str(path), device="cpu", precision="fp32")
    assert up.net.minimum == 16
    x = torch.rand(1, 3, 9, 12)
    assert torch.allclose(up(x), reference(model, x).float(), atol=1e-5)
    tiled = build_upscaler(str(path), device="cpu", precision="fp32", tile=6, tile_pad=2)
    assert tiled(torch.rand(1, 3, 20, 20)).shape == (1, 3, 40, 40)


def test_a_compact_of_another_depth_is_vidsrs_own_without_spandrel(tmp_path: Path) -> None:
    """Real-ESRGAN's architectures never need spandrel: a Compact of depth 3 loads as
    SRVGGNetCompact in a process where spandrel cannot import."""
    path = save(community_model("Compact", 2), tmp_path / "compact3.pth")
    code = (
        "import sys; sys.modules['spandrel'] = None\n"  # importing it would fail
        "from vidsr.models.loader import load_network\n"
        f"net = load_network({str(path)!r})\n"
        "print(net.loader, net.arch, net.kwargs['num_conv'], net.scale)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["vidsr", "SRVGGNetCompact", "3", "2"]


def _decoded_rgb(path: Path) -> list[np.ndarray]:
    from vidsr.media.decode import FrameDecoder

    with FrameDecoder(path) as frames:
        return [f.rgb for f in frames]


def _frames(path: Path) -> tuple[list[np.ndarray], list[int]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [f.to_ndarray(format="rgb24") for f in frames], [f.pts for f in frames]


#: Every architecture at every scale, each scale in both file formats.
CLIP_CASES = [(a, s, ("pth", "safetensors")[i % 2]) for i, (a, s) in enumerate(CASES)]


@pytest.mark.parametrize(
    ("arch", "scale", "fmt"), CLIP_CASES, ids=[f"{a}x{s}-{f}" for a, s, f in CLIP_CASES]
)
def test_community_model_upscales_a_clip_frame_exact(
    media_clips: dict[str, Path], tmp_path: Path, capsys, arch: str, scale: int, fmt: str
) -> None:
    from vidsr.pipeline.infer import build_upscaler

    src = media_clips["cfr"]
    path = save(community_model(arch, scale, seed=3), tmp_path / f"m.{fmt}")
    out = tmp_path / "out.mkv"
    code, stdout, err = run_cli(
        capsys, "upscale", src, "-m", path, "-o", out, "--codec", "ffv1", "--pix-fmt", "bgr0",
        "--batch-size", "2", "--chunk-frames", "12", "--json",
    )  # fmt: skip
    assert code == 0, err
    done = json_events(stdout)[-1]
    assert done["event"] == "done" and done["runtime"] == "torch"
    got, pts = _frames(out)
    want_pts = _frames(src)[1]
    assert pts == want_pts  # every frame, at its own time
    up = build_upscaler(str(path), device="cpu", precision="fp32")
    for rgb, frame in zip(_decoded_rgb(src), got, strict=True):
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        want = (up(x)[0].permute(1, 2, 0).numpy() * 255).round()
        assert frame.shape == want.shape
        assert np.abs(frame.astype(np.int16) - want).max() <= 1


def test_community_model_upscales_an_image(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from vidsr.pipeline.infer import build_upscaler

    path = save(community_model("SPAN", 2, seed=8), tmp_path / "span.safetensors")
    src = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "upscale", src, "-m", path, "-o", out)
    assert code == 0, err
    got = np.asarray(Image.open(out).convert("RGB")).astype(np.int16)
    x = torch.from_numpy(np.asarray(Image.open(src))).permute(2, 0, 1)[None].float() / 255
    up = build_upscaler(str(path), device="cpu", precision="fp32")
    want = (up(x)[0].permute(1, 2, 0).numpy() * 255).round()
    assert got.shape == (40, 60, 3) and np.abs(got - want).max() <= 1


def test_imported_community_model_is_listed_and_runs_offline(
    media_clips: dict[str, Path], tmp_path: Path, private_home: Path, capsys
) -> None:
    from vidsr.models.loader import load_network, weights_digest

    path = save(community_model("SPAN", 2), tmp_path / "4x-whatever.safetensors")
    code, out, err = run_cli(capsys, "models", "import", path, "--name", "span-x2")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    row = rows["span-x2"]
    assert (row["arch"], row["scale"], row["loader"], row["imported"]) == (
        "SPAN",
        2,
        "spandrel",
        True,
    )
    assert row["params"] == load_network(path).params
    code, out, _ = run_cli(capsys, "models", "list")
    assert any(line.split()[:3] == ["span-x2", "SPAN", "x2"] for line in out.splitlines())
    # the cache holds the same weights: the same hash, so a job resumes across the two
    assert weights_digest("span-x2") == weights_digest(path)
    path.unlink()  # offline and without the file: the cache alone
    res = tmp_path / "o.mkv"
    code, out, err = run_cli(capsys, "upscale", media_clips["cfr"], "-m", "span-x2", "-o", res)
    assert code == 0, err
    assert _frames(res)[0][0].shape[:2] == (2 * 36, 2 * 64)


def test_weights_hash_tells_two_community_files_apart(tmp_path: Path) -> None:
    from vidsr.models.loader import weights_digest

    a = save(community_model("SPAN", 2, seed=1), tmp_path / "a.pth")
    b = save(community_model("SPAN", 2, seed=2), tmp_path / "b.pth")
    c = save(community_model("SPAN", 2, seed=1), tmp_path / "c.safetensors")
    assert weights_digest(a) != weights_digest(b)
    assert weights_digest(a) == weights_digest(c)


# --- refusals ---------------------------------------------------------------------------------


def test_one_channel_models_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    span = save(community_model("SPAN", 2, channels=1), tmp_path / "grey-span.pth")
    code, _, err = run_cli(capsys, "models", "import", span)
    assert code != 0
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "is a SPAN model for 1-channel (grey) images" in line
    assert "3-channel RGB models only" in line
    from vidsr.models.arch import SRVGGNetCompact

    own = SRVGGNetCompact(num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1, upscale=2)
    grey = save(own, tmp_path / "grey-compact.pth")
    from vidsr.models.loader import load_network

    with pytest.raises(ModelError, match="SRVGGNetCompact model for 1-channel"):
        load_network(grey)


def test_unknown_state_dict_is_refused_naming_the_closest(tmp_path: Path, capsys) -> None:
    unknown = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3), "head.bias": torch.zeros(4)}, unknown)
    code, _, err = run_cli(capsys, "models", "import", unknown)
    assert code != 0
    assert err.strip().count("\n") == 0
    assert f"cannot recognise the architecture of {unknown}" in err
    assert "neither vidsr nor spandrel knows it" in err and "closest" not in err
    # a SPAN file that lost some tensors: spandrel's SPAN is named as the closest
    sd = community_model("SPAN", 2).state_dict()
    broken = {k: v for k, v in sd.items() if not k.startswith("block_1.")}
    torch.save(broken, tmp_path / "broken.pth")
    from vidsr.models.loader import load_network

    with pytest.raises(ModelError, match="the closest known architecture is SPAN"):
        load_network(tmp_path / "broken.pth")


def test_pickled_code_is_refused_before_spandrel_sees_it(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    sd = dict(community_model("SPAN", 2).state_dict())
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": sd, "extra": Payload()}, path)
    from vidsr.models.loader import load_network

    with pytest.raises(UnsafeModelFileError, match="contains pickled code"):
        load_network(path)
    assert not (tmp_path / "ran").exists()


def test_without_spandrel_a_community_file_says_how_to_install(tmp_path: Path) -> None:
    path = save(community_model("SPAN", 2), tmp_path / "span.pth")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no stand-in: no torchvision
    out = subprocess.run(
        [sys.executable, "-m", "vidsr", "models", "import", str(path)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "other architectures load through spandrel" in out.stderr
    assert "torchvision is missing" in out.stderr and "pip install 'vidsr[models]'" in out.stderr


def test_precisions_follow_the_descriptor(tmp_path: Path) -> None:
    """RealPLKSR does not run in fp16 (spandrel says so): auto on a GPU takes bf16, an
    explicit fp16 is refused naming what it runs; SPAN takes fp16."""
    from vidsr.pipeline.infer import resolve_precision

    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, ("bf16",)) == torch.bfloat16
    assert resolve_precision("auto", cuda, ()) == torch.float32
    assert resolve_precision("auto", cuda, ("fp16", "bf16")) == torch.float16
    with pytest.raises(UsageError, match=r"model plksr does not run at fp16; use .*fp32.*bf16"):
        resolve_precision("fp16", cuda, ("bf16",), "plksr")
    from vidsr.models.loader import describe_model

    plksr = save(community_model("PLKSR", 2), tmp_path / "plksr.pth")
    span = save(community_model("SPAN", 2), tmp_path / "span.pth")
    assert describe_model(plksr).precisions == ("bf16",)
    assert describe_model(span).precisions == ("fp16", "bf16")
    # and on the CPU bf16 runs where the model has it
    from vidsr.pipeline.infer import build_upscaler

    up = build_upscaler(str(plksr), device="cpu", precision="bf16")
    assert up.precision_name == "bf16" and up(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_doctor_reports_spandrel_and_torchvision(capsys) -> None:
    code, out, _ = run_cli(capsys, "doctor", "--json")
    report = json.loads(out)["community"]
    assert report["spandrel"] and report["spandrel"].startswith("0.4")
    assert report["torchvision"]  # the stand-in, in these tests
    assert code == 0
    _code, out, _ = run_cli(capsys, "doctor")
    assert "spandrel: 0.4" in out


# --- ONNX -------------------------------------------------------------------------------------


def _onnx(
    tmp_path: Path, name: str, *, fixed: tuple[int, int] | None = None, scale: int = 2
) -> tuple[Path, torch.nn.Module]:
    from vidsr.models.arch import SRVGGNetCompact

    torch.manual_seed(5)
    model = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale).eval()
    path = tmp_path / name
    x = torch.rand(1, 3, *(fixed or (32, 32)))
    dynamic = (
        None if fixed else {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h2", 3: "w2"}}
    )
    torch.onnx.export(
        model, x, str(path), input_names=["input"], output_names=["output"],
        dynamic_axes=dynamic, dynamo=False, opset_version=17,
    )  # fmt: skip
    return path, model


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_onnx_export_matches_torch_in_tiles_and_batches(tmp_path: Path, runtime: str) -> None:
    from vidsr.pipeline.infer import build_upscaler

    path, model = _onnx(tmp_path, "m.onnx")
    x = torch.rand(3, 3, 37, 50)
    with torch.inference_mode():
        want = model(x).clamp(0, 1)
    up = build_upscaler(str(path), device="cpu", precision="auto", runtime=runtime)
    assert up.runtime == runtime and up.net.scale == 2 and up.net.onnx.size is None
    assert (up(x) - want).abs().max() <= 1e-4
    tiled = build_upscaler(str(path), device="cpu", precision="auto", runtime=runtime, tile=16)
    assert (tiled(x) - want).abs().max() <= 1e-4


def test_a_fixed_shape_onnx_graph_runs_in_windows(tmp_path: Path) -> None:
    from vidsr.models.onnx import inspect_onnx
    from vidsr.pipeline.infer import build_upscaler

    path, model = _onnx(tmp_path, "fixed.onnx", fixed=(24, 24), scale=4)
    graph = inspect_onnx(path)
    assert (graph.size, graph.batch, graph.scale) == ((24, 24), 1, 4)
    for shape in [(2, 3, 61, 45), (1, 3, 10, 13)]:  # larger than a window, and smaller
        x = torch.rand(*shape)
        with torch.inference_mode():
            want = model(x).clamp(0, 1)
        for runtime in ("openvino", "onnxruntime"):
            up = build_upscaler(str(path), device="cpu", precision="auto", runtime=runtime)
            got = up(x)
            assert got.shape == want.shape
            if shape[2] >= 24:  # small frames are padded: only the size is comparable
                assert (got - want).abs().max() <= 1e-4


def test_onnx_file_imports_lists_and_upscales(
    media_clips: dict[str, Path], tmp_path: Path, private_home: Path, capsys
) -> None:
    path, _model = _onnx(tmp_path, "tiny-x2.onnx")
    code, _, err = run_cli(capsys, "models", "import", path, "--name", "tiny-onnx")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "models", "list", "--json")
    row = {r["name"]: r for r in json.loads(out)}["tiny-onnx"]
    assert (row["arch"], row["scale"], row["loader"]) == ("ONNX", 2, "onnx")
    torch_params = sum(p.numel() for p in _model.parameters())
    assert abs(row["params"] - torch_params) <= 0.02 * torch_params  # the graph's folded weights
    out_file = tmp_path / "o.mkv"
    code, out, err = run_cli(
        capsys, "upscale", media_clips["cfr"], "-m", "tiny-onnx", "-o", out_file, "--json"
    )
    assert code == 0, err
    assert json_events(out)[-1]["runtime"] in ("openvino", "onnxruntime")
    frames, _ = _frames(out_file)
    assert len(frames) == len(_frames(media_clips["cfr"])[0]) and frames[0].shape[:2] == (72, 128)
    code, _, err = run_cli(
        capsys, "upscale", media_clips["cfr"], "-m", path, "-o", tmp_path / "t.mkv",
        "--runtime", "torch",
    )  # fmt: skip
    assert (
        code != 0
        and "is an ONNX model: it runs with --runtime openvino or --runtime onnxruntime" in err
    )
    code, _, err = run_cli(
        capsys, "upscale", media_clips["cfr"], "-o", tmp_path / "t.mkv", "--runtime", "onnxruntime"
    )
    assert code != 0 and "--runtime onnxruntime runs .onnx model files" in err


def test_onnx_weights_hash_is_the_files(tmp_path: Path) -> None:
    import hashlib

    from vidsr.models.loader import weights_digest

    path, _ = _onnx(tmp_path, "m.onnx")
    assert weights_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_grey_onnx_graph_is_refused(tmp_path: Path) -> None:
    from vidsr.models.arch import SRVGGNetCompact
    from vidsr.models.onnx import inspect_onnx

    model = SRVGGNetCompact(num_in_ch=1, num_out_ch=1, num_feat=4, num_conv=1, upscale=2).eval()
    path = tmp_path / "grey.onnx"
    torch.onnx.export(model, torch.rand(1, 1, 16, 16), str(path), dynamo=False)
    with pytest.raises(
        ModelError, match="takes 1-channel images; vidsr runs 3-channel RGB models only"
    ):
        inspect_onnx(path)


# --- everything else works with them ----------------------------------------------------------


def test_spandrel_model_on_openvino_matches_torch(tmp_path: Path) -> None:
    """OpenVINO converts a community module per input shape (its forward reads the size in
    Python): every shape, tiles included, within 1e-4 of torch."""
    from vidsr.pipeline.infer import build_upscaler

    path = save(community_model("SPAN", 2, seed=4), tmp_path / "span.safetensors")
    torch_up = build_upscaler(str(path), device="cpu", precision="fp32")
    ov_up = build_upscaler(str(path), device="cpu", precision="fp32", runtime="openvino")
    assert ov_up.runtime == "openvino"
    for shape in [(1, 3, 20, 28), (2, 3, 33, 17)]:
        x = torch.rand(*shape)
        assert (ov_up(x) - torch_up(x)).abs().max() <= 1e-4
    tiled = build_upscaler(
        str(path), device="cpu", precision="fp32", runtime="openvino", tile=16, tile_pad=4
    )
    x = torch.rand(1, 3, 40, 40)
    tiled_torch = build_upscaler(str(path), device="cpu", precision="fp32", tile=16, tile_pad=4)
    assert (tiled(x) - tiled_torch(x)).abs().max() <= 1e-4


def test_chunked_run_with_reuse_equals_one_pass(
    media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """Chunks (two worker processes) and --reuse exact (whole frames for SPAN) give the
    frames of one plain pass."""
    path = save(community_model("SPAN", 2, seed=6), tmp_path / "span.pth")
    src = media_clips["cfr"]
    common = ["-m", path, "--codec", "ffv1", "--pix-fmt", "bgr0"]
    one = tmp_path / "one.mkv"
    assert run_cli(capsys, "upscale", src, "-o", one, *common)[0] == 0
    chunked = tmp_path / "chunked.mkv"
    code, out, err = run_cli(
        capsys, "upscale", src, "-o", chunked, *common, "--chunk-frames", "8",
        "--reuse", "exact", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json_events(out)[-1]["reused_tiles"] is not None
    a, b = _frames(one)[0], _frames(chunked)[0]
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_preview_compares_a_community_model_with_animevideov3(
    media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from PIL import Image

    from vidsr.ops import make_preview
    from vidsr.settings import make_settings

    path = save(community_model("PLKSR", 2, seed=7), tmp_path / "plksr-x2.safetensors")
    png = tmp_path / "side.png"
    code, _, err = run_cli(
        capsys, "preview", media_clips["cfr"], "--models", f"{path},realesr-animevideov3",
        "--at", "0.5", "-o", png,
    )  # fmt: skip
    assert code == 0, err
    with Image.open(png) as im:
        assert im.width >= 3 * 256
    settings = make_settings(
        "preview",
        {"at": "0.5", "models": [str(path), "realesr-animevideov3"], "output": tmp_path / "b.png",
         "device": "cpu"},
    )  # fmt: skip
    r = make_preview(media_clips["cfr"], settings)
    assert r["scale"] == 4 and len(r["panels"]) == 3  # the x2 model resized to the common x4
    assert r["panels"][1]["label"].startswith(f"{path}, x4")


@pytest.mark.parametrize("kind", ["spandrel", "onnx"])
def test_bench_runs_community_and_onnx_models(tmp_path: Path, capsys, kind: str) -> None:
    if kind == "onnx":
        path, _ = _onnx(tmp_path, "b.onnx")
    else:
        path = save(community_model("SPAN", 2), tmp_path / "span.pth")
    code, out, err = run_cli(
        capsys, "bench", "-m", path, "--device", "cpu", "--size", "64x36", "--frames", "4", "--json"
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["pipeline_frames"] == 4 and r["model_fps"] > 0
    assert r["settings"]["output_size"] == "128x72"
    if kind == "onnx":
        assert r["settings"]["runtime"] in ("openvino", "onnxruntime")
        assert r["serial_fps"] is None and r["model_nchw_fps"] is None
    else:
        assert r["model_openvino_fps"] > 0  # the runtimes compared


def test_an_fp16_onnx_graph_runs_at_its_own_precision(tmp_path: Path) -> None:
    """ONNX Runtime feeds an fp16 graph fp16 and says so; the run's resolved settings (the
    resume fingerprint) carry that precision, not the CPU's fp32 default."""
    from helpers import upscale_settings

    from vidsr.models.arch import SRVGGNetCompact
    from vidsr.models.onnx import inspect_onnx
    from vidsr.pipeline.infer import build_upscaler
    from vidsr.run.resolve import resolve

    torch.manual_seed(9)
    model = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2).eval()
    path = tmp_path / "half.onnx"
    torch.onnx.export(
        model.half(), torch.rand(1, 3, 16, 16).half(), str(path), input_names=["input"],
        dynamic_axes={"input": {2: "h", 3: "w"}}, dynamo=False,
    )  # fmt: skip
    assert inspect_onnx(path).dtype == "fp16"
    up = build_upscaler(str(path), device="cpu", precision="auto", runtime="onnxruntime")
    assert up.precision_name == "fp16"
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        want = model.float()(x).clamp(0, 1)
    assert (up(x) - want).abs().max() < 1e-2  # fp16 arithmetic
    settings = resolve(upscale_settings(model=str(path), runtime="onnxruntime"), "cpu")
    assert settings.precision == "fp16"
    with pytest.raises(UsageError, match=r"in its own precision .fp16."):
        build_upscaler(str(path), device="cpu", precision="fp32", runtime="onnxruntime")


def test_a_torchvision_that_does_not_match_torch_is_one_line(tmp_path: Path) -> None:
    """A torchvision built for another torch fails at import with a RuntimeError (measured
    here with PyPI's 0.28.0: "operator torchvision::nms does not exist"): one line that says
    what to fix, not a traceback."""
    broken = tmp_path / "broken" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    path = save(community_model("SPAN", 2), tmp_path / "span.pth")
    env = {**os.environ, "PYTHONPATH": str(broken.parent)}
    out = subprocess.run(
        [sys.executable, "-m", "vidsr", "models", "import", str(path)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert "spandrel, which fails to import (operator torchvision::nms" in out.stderr
    assert "torchvision must be the build that matches torch" in out.stderr


@pytest.mark.parametrize(
    "wrapper", ["net", "model_state_dict", "params-ema", "netG-prefix", "one-key"]
)
def test_other_trainers_checkpoint_wrappers_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    """Community checkpoints come wrapped the ways their trainers save them."""
    from vidsr.models.loader import load_network

    sd = dict(community_model("SPAN", 2).state_dict())
    if wrapper == "netG-prefix":
        obj: dict = {f"netG.{k}": v for k, v in sd.items()}
    elif wrapper == "one-key":
        obj = {"generator": sd}
    else:
        obj = {wrapper: sd, "iteration": 5000}
    path = tmp_path / "wrapped.pth"
    torch.save(obj, path)
    assert load_network(path).arch == "SPAN"


def test_onnx_runtime_providers_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which ONNX Runtime providers a CUDA device gets (the list a CUDA build reports is
    stood in for: no GPU build here): TensorRT with its engine cache, then CUDA, on the
    device asked; a build without them is refused in one line."""
    import onnxruntime as ort

    from vidsr.errors import DeviceError
    from vidsr.pipeline.onnx_run import ort_providers

    monkeypatch.setattr(
        ort, "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )  # fmt: skip
    got = ort_providers("cuda:1")
    assert [p[0] if isinstance(p, tuple) else p for p in got] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider",
    ]  # fmt: skip
    assert got[0][1]["device_id"] == 1 and got[0][1]["trt_engine_cache_enable"] is True
    assert got[1][1] == {"device_id": 1}
    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match=r"no CUDA provider .* pip install onnxruntime-gpu"):
        ort_providers("cuda")
