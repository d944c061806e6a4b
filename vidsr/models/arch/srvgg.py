"""SRVGGNetCompact: the small VGG-style network behind realesr-animevideov3 and
realesr-general-x4v3. Key names match the official release files (``body.N.weight``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("prelu", "relu", "leakyrelu")


class SRVGGNetCompact(nn.Module):
    """A stack of 3x3 convs with activations, a pixel shuffle, and the nearest-upsampled
    input added to the result.

    forward: (N, num_in_ch, H, W) -> (N, num_out_ch, upscale*H, upscale*W), unclipped.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        if act_type not in ACTIVATIONS:
            raise ValueError(f"act_type must be one of {ACTIVATIONS}, not {act_type!r}")
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_conv = num_conv
        self.upscale = upscale
        self.act_type = act_type

        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)])
        self.body.append(self._activation())
        for _ in range(num_conv):
            self.body.append(nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.body.append(self._activation())
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def _activation(self) -> nn.Module:
        if self.act_type == "prelu":
            return nn.PReLU(num_parameters=self.num_feat)
        if self.act_type == "relu":
            return nn.ReLU(inplace=True)
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        if self.num_in_ch == self.num_out_ch:
            out = out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        return out
