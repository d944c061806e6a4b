"""The OpenVINO runtime: the same pixels as torch fp32 (within 1e-4 on the [0, 1] scale) for
every registered model's architecture, whole frames, batches and tiles; a real run with
``--runtime openvino``; ``auto``'s rule; the refusals. Real OpenVINO (installed by
``make setup``), random weights of each registered model's exact shape (the official weights
are not all here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import json_events, run_cli, run_video, upscale_settings

pytest.importorskip("openvino")

from vidsr.models.arch.rrdbnet import RRDBNet
from vidsr.models.arch.srvgg import SRVGGNetCompact
from vidsr.models.loader import LoadedNetwork
from vidsr.models.registry import MODELS
from vidsr.pipeline.infer import Upscaler
from vidsr.pipeline.openvino import OpenVINOModule
from vidsr.run.resolve import resolve_runtime

ARCHS = {"SRVGGNetCompact": SRVGGNetCompact, "RRDBNet": RRDBNet}


def random_network(name: str, seed: int = 0) -> LoadedNetwork:
    """Registered model ``name``'s architecture with random weights (scaled down so that the
    output stays inside [0, 1] for most pixels, as trained weights keep it)."""
    record = MODELS[name]
    torch.manual_seed(seed)
    module = ARCHS[record.arch](**record.kwargs).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.5)
    multiple = 4 if record.arch == "RRDBNet" and record.scale == 1 else 1
    if record.arch == "RRDBNet" and record.scale == 2:
        multiple = 2
    return LoadedNetwork(
        module=module, name=name, arch=record.arch, kwargs=dict(record.kwargs),
        scale=record.scale, size_multiple=multiple, params=0,
    )  # fmt: skip


def pair(net: LoadedNetwork, **kw: object) -> tuple[Upscaler, Upscaler]:
    """(torch, OpenVINO) upscalers of ``net``."""
    torch_up = Upscaler(net, device=torch.device("cpu"), dtype=torch.float32, **kw)
    ov_up = Upscaler(net, device=torch.device("cpu"), dtype=torch.float32, **kw)
    ov_up.module = OpenVINOModule(net.module)
    ov_up.runtime, ov_up.runtime_precision = "openvino", "fp32"
    return torch_up, ov_up


# The 23-block RRDBNets take ~13 s each to convert here: slow; the 6-block one stands for them.
EVERY_MODEL = [
    pytest.param(n, marks=pytest.mark.slow)
    if MODELS[n].arch == "RRDBNet" and MODELS[n].kwargs["num_block"] > 6
    else n
    for n in sorted(MODELS)
]


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_openvino_matches_torch_for_every_model(name: str) -> None:
    net = random_network(name)
    torch_up, ov_up = pair(net)
    x = torch.rand(2, 3, 18, 22)  # a batch; sizes that are no multiple of anything
    a, b = torch_up(x), ov_up(x)
    assert a.shape == b.shape == (2, 3, 18 * net.scale, 22 * net.scale)
    assert float((a - b).abs().max()) <= 1e-4


def test_openvino_matches_torch_in_tiles_and_batches() -> None:
    net = random_network("realesr-animevideov3")
    torch_up, ov_up = pair(net, tile=16, tile_pad=4)
    x = torch.rand(3, 3, 40, 52)
    a, b = torch_up(x), ov_up(x)
    assert float((a - b).abs().max()) <= 1e-4
    # the compiled models are kept per input shape: the tiles' few shapes, not one per call
    shapes = set(ov_up.module._compiled)
    assert 1 < len(shapes) <= 9
    ov_up(x)
    assert set(ov_up.module._compiled) == shapes


def test_a_run_with_openvino_gives_torch_s_frames(media_clips: dict[str, Path], tmp_path) -> None:
    from vidsr.media.decode import FrameDecoder

    src = media_clips["cfr"]
    runs = {}
    for runtime in ("torch", "openvino"):
        events: list = []
        res = run_video(
            src, tmp_path / f"{runtime}.mkv", runtime=runtime, codec="ffv1", pix_fmt="yuv444p",
            on_event=events.append,
        )  # fmt: skip
        assert res.runtime == runtime
        runs[runtime] = [f.rgb.astype(np.int16) for f in FrameDecoder(res.output)]
    a, b = runs["torch"], runs["openvino"]
    assert len(a) == len(b) == probe_frames(src)
    worst = max(int(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
    assert worst <= 1  # the same pixels but for float rounding of a level at most


def probe_frames(path: Path) -> int:
    from vidsr.media.probe import probe

    return probe(path).video.frame_count


def test_runtime_is_fingerprinted(media_clips: dict[str, Path], tmp_path, capsys) -> None:
    src = media_clips["cfr"]
    out = tmp_path / "o.mkv"
    args = ["upscale", src, "-o", out, "--device", "cpu", "--chunk-frames", "10", "--json"]
    code, stdout, _ = run_cli(capsys, *args, "--runtime", "openvino", "--keep-work")
    assert code == 0
    done = next(e for e in json_events(stdout) if e["event"] == "done")
    assert done["runtime"] == "openvino"
    out.unlink()  # the work folder stays: the same job again with the other runtime
    code, _, err = run_cli(capsys, *args, "--runtime", "torch")
    assert code != 0 and "settings differ" in err


def test_auto_takes_openvino_for_large_cpu_frames_only() -> None:
    s = upscale_settings()
    assert s.runtime == "auto"
    assert resolve_runtime(s, (64, 36), "cpu") == "torch"
    assert resolve_runtime(s, (640, 480), "cpu") == "openvino"
    assert resolve_runtime(s, (640, 480), "cuda") == "torch"
    assert resolve_runtime(upscale_settings(runtime="torch"), (640, 480), "cpu") == "torch"
    with pytest.raises(Exception, match="runs on CPUs and Intel GPUs"):
        resolve_runtime(upscale_settings(runtime="openvino"), (64, 36), "cuda")


def test_an_absent_intel_gpu_is_refused_in_one_line(
    media_clips: dict[str, Path], tmp_path, capsys
) -> None:
    from vidsr.pipeline.openvino import devices

    if any(d.startswith("GPU") for d in devices()):
        pytest.skip("this machine has an Intel GPU")
    out = tmp_path / "o.mkv"
    code, _, err = run_cli(capsys, "upscale", media_clips["cfr"], "-o", out, "--device",
                           "intel:gpu")  # fmt: skip
    assert code != 0 and not out.exists()
    assert err.strip().count("\n") == 0 and "OpenVINO finds no GPU" in err
    assert "--device cpu" in err


def test_openvino_bf16_hint_and_fp32_fallback() -> None:
    net = random_network("realesr-animevideov3")
    up = Upscaler(net, device=torch.device("cpu"), dtype=torch.float32)
    up.module = OpenVINOModule(net.module, precision="bf16")
    up.runtime, up.runtime_precision = "openvino", "bf16"
    x = torch.rand(1, 3, 16, 16)
    up(x)
    assert up.precision_name == "bf16"
    up.use_fp32()  # after a NaN: OpenVINO again, at f32
    assert up.precision_name == "fp32" and up.runtime == "openvino"
    ref = Upscaler(net, device=torch.device("cpu"), dtype=torch.float32)
    assert float((up(x) - ref(x)).abs().max()) <= 1e-4


def test_bench_on_an_absent_intel_gpu_is_refused_in_one_line(capsys) -> None:
    from vidsr.pipeline.openvino import devices

    if any(d.startswith("GPU") for d in devices()):
        pytest.skip("this machine has an Intel GPU")
    code, _, err = run_cli(capsys, "bench", "--device", "intel:gpu", "--size", "64x36",
                           "--frames", "2")  # fmt: skip
    assert code != 0 and err.strip().count("\n") == 0 and "OpenVINO finds no GPU" in err
