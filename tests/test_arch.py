"""Architecture shapes and official key names."""

from __future__ import annotations

import pytest
import torch

from vidsr.models.arch import RRDBNet, SRVGGNetCompact, UNetDiscriminatorSN


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_rrdbnet_scales(scale: int) -> None:
    net = RRDBNet(3, 3, scale=scale, num_feat=8, num_block=2, num_grow_ch=4).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 8, 12))
    assert out.shape == (2, 3, 8 * scale, 12 * scale)
    assert ("conv_up3.weight" in net.state_dict()) == (scale == 8)


@pytest.mark.parametrize("act", ["prelu", "relu", "leakyrelu"])
def test_srvgg_activations_and_residual(act: str) -> None:
    net = SRVGGNetCompact(3, 3, num_feat=8, num_conv=2, upscale=3, act_type=act).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        x = torch.rand(1, 3, 5, 7)
        out = net(x)
    # With every weight zero the result is the nearest-upsampled input.
    assert torch.equal(out, torch.nn.functional.interpolate(x, scale_factor=3, mode="nearest"))
    assert any(k.startswith("body.1.") for k in net.state_dict()) == (act == "prelu")
    with pytest.raises(ValueError):
        SRVGGNetCompact(act_type="gelu")


def test_unet_discriminator_shapes_and_keys() -> None:
    d = UNetDiscriminatorSN(3, num_feat=16).eval()
    with torch.no_grad():
        out = d(torch.rand(2, 3, 32, 48))
    assert out.shape == (2, 1, 32, 48)
    keys = set(d.state_dict())
    for i in range(1, 9):  # the official RealESRGAN_x4plus_netD.pth key layout
        assert {f"conv{i}.weight_orig", f"conv{i}.weight_u", f"conv{i}.weight_v"} <= keys
    assert {"conv0.weight", "conv0.bias", "conv9.weight", "conv9.bias"} <= keys
    assert d.state_dict()["conv1.weight_orig"].shape == (32, 16, 4, 4)
