"""The inference core: official pixels, padding, tiling, final resize, device and precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import OFFICIAL_ANIMEVIDEOV3, psnr, test_image

from vidsr.errors import DeviceError, UsageError
from vidsr.models.arch import RRDBNet, SRVGGNetCompact
from vidsr.models.loader import LoadedNetwork
from vidsr.pipeline.infer import Upscaler, resolve_device, resolve_precision, scaled_size

CPU = torch.device("cpu")


def _net(module: torch.nn.Module, scale: int, multiple: int = 1) -> LoadedNetwork:
    module.eval().requires_grad_(False)
    return LoadedNetwork(
        module=module,
        name="test",
        arch=type(module).__name__,
        kwargs={},
        scale=scale,
        size_multiple=multiple,
        params=sum(p.numel() for p in module.parameters()),
    )


def _srvgg(num_conv: int = 4, seed: int = 0, upscale: int = 4) -> LoadedNetwork:
    torch.manual_seed(seed)
    return _net(SRVGGNetCompact(3, 3, 16, num_conv, upscale, "prelu"), upscale)


def _reference_srvgg(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Real-ESRGAN's SRVGGNetCompact forward written out with functional ops, independent of
    vidsr's module: conv/prelu pairs, pixel shuffle, plus the nearest-upsampled input."""
    convs = sorted({int(k.split(".")[1]) for k in params if k.endswith(".bias")})
    out = x
    for i in convs:
        out = F.conv2d(out, params[f"body.{i}.weight"], params[f"body.{i}.bias"], padding=1)
        if f"body.{i + 1}.weight" in params:
            out = F.prelu(out, params[f"body.{i + 1}.weight"])
    out = F.pixel_shuffle(out, 4)
    return out + F.interpolate(x, scale_factor=4, mode="nearest")


@pytest.mark.skipif(not OFFICIAL_ANIMEVIDEOV3.exists(), reason="official weights absent")
def test_official_animevideov3_gives_reference_pixels() -> None:
    from vidsr.models.loader import load_network

    params = torch.load(OFFICIAL_ANIMEVIDEOV3, map_location="cpu", weights_only=True)["params"]
    x = test_image(36, 52)
    ref = _reference_srvgg(params, x).clamp(0, 1)
    up = Upscaler(load_network(str(OFFICIAL_ANIMEVIDEOV3)), device=CPU, dtype=torch.float32)
    out = up(x)
    assert out.shape == (1, 3, 144, 208)
    # Quantised as images are written: every 8-bit value equal to the reference's.
    ref8, out8 = (ref * 255).round(), (out * 255).round()
    assert (ref8 - out8).abs().max().item() <= 1
    assert (ref8 != out8).float().mean().item() < 1e-3


def test_tiles_with_enough_context_equal_whole_frame() -> None:
    up_whole = Upscaler(_srvgg(num_conv=3), device=CPU, dtype=torch.float32)
    # 5 convs of 3x3: receptive radius 5 < tile_pad 6, so tiles see all they need.
    up_tiled = Upscaler(_srvgg(num_conv=3), device=CPU, dtype=torch.float32, tile=16, tile_pad=6)
    x = test_image(37, 45)
    whole, tiled = up_whole(x), up_tiled(x)
    assert tiled.shape == whole.shape == (1, 3, 148, 180)
    assert (tiled - whole).abs().max().item() < 1e-5


def test_tiles_without_context_differ_but_stay_close() -> None:
    up_whole = Upscaler(_srvgg(num_conv=6), device=CPU, dtype=torch.float32)
    up_tiled = Upscaler(_srvgg(num_conv=6), device=CPU, dtype=torch.float32, tile=12, tile_pad=0)
    x = test_image(30, 40)
    whole, tiled = up_whole(x), up_tiled(x)
    assert (tiled - whole).abs().max().item() > 1e-3  # seams exist without overlap
    assert psnr(tiled, whole) > 20


@pytest.mark.skipif(not OFFICIAL_ANIMEVIDEOV3.exists(), reason="official weights absent")
def test_official_model_tiled_close_to_whole() -> None:
    from vidsr.models.loader import load_network

    x = test_image(40, 56)
    whole = Upscaler(load_network(str(OFFICIAL_ANIMEVIDEOV3)), device=CPU, dtype=torch.float32)(x)
    tiled = Upscaler(
        load_network(str(OFFICIAL_ANIMEVIDEOV3)),
        device=CPU,
        dtype=torch.float32,
        tile=20,
        tile_pad=10,
    )(x)
    assert psnr(tiled, whole) > 45


@pytest.mark.parametrize(
    ("scale", "multiple", "size"), [(2, 2, (7, 9)), (1, 4, (5, 3)), (1, 4, (1, 2))]
)
def test_pixel_unshuffle_models_take_any_size(
    scale: int, multiple: int, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    net = _net(RRDBNet(3, 3, scale=scale, num_feat=8, num_block=1, num_grow_ch=4), scale, multiple)
    up = Upscaler(net, device=CPU, dtype=torch.float32)
    h, w = size
    out = up(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, h * scale, w * scale)
    assert out.min().item() >= 0 and out.max().item() <= 1


def test_batch_equals_frame_by_frame() -> None:
    up = Upscaler(_srvgg(), device=CPU, dtype=torch.float32)
    x = torch.cat([test_image(20, 24, seed=s) for s in range(3)])
    batch = up(x)
    single = torch.cat([up(x[i : i + 1]) for i in range(3)])
    assert (batch - single).abs().max().item() < 1e-5


def test_output_is_clipped() -> None:
    torch.manual_seed(3)
    module = SRVGGNetCompact(3, 3, 8, 1, 2, "relu")
    with torch.no_grad():
        module.body[-1].bias.fill_(5.0)  # push everything far above 1
    out = Upscaler(_net(module, 2), device=CPU, dtype=torch.float32)(test_image(8, 8))
    assert out.max().item() == 1.0 and out.min().item() >= 0.0


def test_final_scale_resizes() -> None:
    up = Upscaler(_srvgg(), device=CPU, dtype=torch.float32)
    x = test_image(21, 30)
    assert scaled_size(21, 30, 2.0, up.net_scale) == (42, 60)
    assert scaled_size(21, 30, 1.5, up.net_scale, even=True) == (30, 44)  # 4:2:0 video
    out = up(x, size=(42, 60))
    assert out.shape == (1, 3, 42, 60)
    native = up(x)
    # The x2 result is the x4 result filtered down: close to it, not a different picture.
    down = F.interpolate(native, size=(42, 60), mode="area")
    assert psnr(out, down) > 28


def test_precision_rules() -> None:
    assert resolve_precision("auto", CPU) == torch.float32
    assert resolve_precision("auto", torch.device("cuda", 0)) == torch.float16
    assert resolve_precision("bf16", CPU) == torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 on the CPU"):
        resolve_precision("fp16", CPU)


def test_device_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == CPU
    with pytest.raises(UsageError):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="only 2"):
        resolve_device("cuda:2")


def test_bf16_on_cpu_close_to_fp32() -> None:
    x = test_image(24, 32)
    fp32 = Upscaler(_srvgg(), device=CPU, dtype=torch.float32)(x)
    bf16 = Upscaler(_srvgg(), device=CPU, dtype=torch.bfloat16)(x)
    assert bf16.dtype == torch.float32
    assert psnr(bf16, fp32) > 35
