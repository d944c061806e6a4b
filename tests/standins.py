"""A stand-in network with fault injection, for the tests of what happens when the device
runs short (CUDA out of memory cannot be made here; the errors are raised as CUDA raises
them) and of the NaN fallback."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vidsr.models.loader import LoadedNetwork
from vidsr.pipeline.infer import Upscaler

Hook = Callable[[torch.Tensor], None]


class Pointwise(nn.Module):
    """A per-pixel colour change, then nearest-neighbour x``scale``: no receptive field, so
    every batching and tiling gives the very same pixels. ``hook(x)`` runs first."""

    def __init__(self, scale: int, hook: Hook | None = None) -> None:
        super().__init__()
        self.scale = scale
        self.hook = hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hook is not None:
            self.hook(x)
        y = x.flip(1) * 0.75 + 0.125
        return y.repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)


def fake_upscaler(net_scale: int = 2, hook: Hook | None = None, **kwargs: Any) -> Upscaler:
    net = LoadedNetwork(
        module=Pointwise(net_scale, hook),
        name="pointwise",
        arch="SRVGGNetCompact",
        kwargs={},
        scale=net_scale,
        size_multiple=1,
        params=0,
    )
    return Upscaler(net, device=torch.device("cpu"), dtype=torch.float32, **kwargs)


def oom_when(
    *,
    batch_over: int | None = None,
    pixels_over: int | None = None,
    always: bool = False,
    ran: list[int] | None = None,
) -> Hook:
    """Raise CUDA out-of-memory for batches or inputs that are too large; ``ran`` collects
    the batch size of every call that went through."""

    def hook(x: torch.Tensor) -> None:
        n, _, h, w = x.shape
        if (
            always
            or (batch_over is not None and n > batch_over)
            or (pixels_over is not None and h * w > pixels_over)
        ):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if ran is not None:
            ran.append(n)

    return hook


def fail_after(calls: int, exc: BaseException) -> Hook:
    count = itertools.count(1)

    def hook(x: torch.Tensor) -> None:
        if next(count) > calls:
            raise exc

    return hook


def report_environment(results: Any) -> None:
    """A worker-process body for the pinning test: what the worker and the encoder process it
    would start see of the GPUs."""
    import os

    from vidsr.jobs.local import worker_device
    from vidsr.pipeline.encoder_process import _child_env

    results.put(
        (
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            _child_env().get("CUDA_VISIBLE_DEVICES"),
            worker_device("cuda:3"),
            os.getpid(),
        )
    )
