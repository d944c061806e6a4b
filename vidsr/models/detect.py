"""Recognise the architecture and hyperparameters of a state dict from its keys and shapes.

Only the two Real-ESRGAN generators are recognised, with the official BasicSR key names:
SRVGGNetCompact (``body.N.weight``) and RRDBNet (``conv_first``, ``body.N.rdbK.convM``, ...).
Every detection is checked by building the architecture on the ``meta`` device and comparing
the full key set and every shape, so an :class:`ArchSpec` returned here always loads strictly.

What the weights cannot tell:

* SRVGGNetCompact's activation when it has no parameters: ReLU and LeakyReLU look the same.
  Without ``body.1.weight`` (PReLU slopes) the default is ``"relu"``; pass ``act_type`` to
  say otherwise.
* SRVGGNetCompact's output channels are taken equal to the input channels (every released
  model), falling back to 3 or 1 when that does not give a whole upscale factor.
* RRDBNet's scale 1 and 2 are told from scale 4 by ``conv_first`` having 16x or 4x the output
  channels as input channels (pixel unshuffle), as in BasicSR.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vidsr.errors import ModelError
from vidsr.models.arch import ARCHITECTURES

_SRVGG_KEY = re.compile(r"^body\.(\d+)\.(weight|bias)$")
_RRDB_BODY_KEY = re.compile(r"^body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
_RRDB_TOP = (
    "conv_first",
    "conv_body",
    "conv_up1",
    "conv_up2",
    "conv_up3",
    "conv_hr",
    "conv_last",
)


@dataclass(frozen=True)
class ArchSpec:
    """An architecture name (a key of ``vidsr.models.arch.ARCHITECTURES``) and the full
    keyword arguments of its constructor."""

    arch: str
    kwargs: dict[str, Any]

    @property
    def scale(self) -> int:
        """The upscale factor of the network."""
        return int(
            self.kwargs["upscale"] if self.arch == "SRVGGNetCompact" else self.kwargs["scale"]
        )

    def build(self) -> torch.nn.Module:
        """A freshly initialised module of this architecture (on the current default device)."""
        return ARCHITECTURES[self.arch](**self.kwargs)


class NearMiss(ModelError):
    """The weights look like ``arch`` (one of vidsr's own) but do not fit it exactly."""

    def __init__(self, message: str, arch: str) -> None:
        super().__init__(message)
        self.arch = arch


def _shape(state_dict: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(state_dict[key].shape)


def _detect_srvgg(sd: Mapping[str, Any], act_type: str | None) -> ArchSpec:
    indices = sorted({int(m.group(1)) for k in sd if (m := _SRVGG_KEY.match(k))})
    conv_idx = [i for i in indices if len(_shape(sd, f"body.{i}.weight")) == 4]
    has_prelu = "body.1.weight" in sd
    last = conv_idx[-1]
    if last < 2 or last % 2:
        raise ValueError("unexpected body layout")
    num_conv = (last - 2) // 2
    first = _shape(sd, "body.0.weight")
    num_feat, num_in_ch = first[0], first[1]
    last_out = _shape(sd, f"body.{last}.weight")[0]
    upscale = num_out_ch = 0
    for out_ch in dict.fromkeys((num_in_ch, 3, 1)):
        root = math.isqrt(last_out // out_ch) if last_out % out_ch == 0 else 0
        if root and root * root * out_ch == last_out:
            upscale, num_out_ch = root, out_ch
            break
    if not upscale:
        raise ValueError(f"last conv has {last_out} channels: no whole upscale factor")
    if act_type is None:
        act_type = "prelu" if has_prelu else "relu"
    elif (act_type == "prelu") != has_prelu:
        raise ValueError(f"act_type {act_type!r} does not fit the weights")
    return ArchSpec(
        "SRVGGNetCompact",
        {
            "num_in_ch": num_in_ch,
            "num_out_ch": num_out_ch,
            "num_feat": num_feat,
            "num_conv": num_conv,
            "upscale": upscale,
            "act_type": act_type,
        },
    )


def _detect_rrdb(sd: Mapping[str, Any]) -> ArchSpec:
    blocks = [int(m.group(1)) for k in sd if (m := _RRDB_BODY_KEY.match(k))]
    num_block = max(blocks) + 1 if blocks else 0
    first = _shape(sd, "conv_first.weight")
    num_feat, in_ch = first[0], first[1]
    num_out_ch = _shape(sd, "conv_last.weight")[0]
    num_grow_ch = _shape(sd, "body.0.rdb1.conv1.weight")[0] if num_block else 32
    if "conv_up3.weight" in sd:
        scale, num_in_ch = 8, in_ch
    elif in_ch == num_out_ch * 16:
        scale, num_in_ch = 1, num_out_ch
    elif in_ch == num_out_ch * 4:
        scale, num_in_ch = 2, num_out_ch
    else:
        scale, num_in_ch = 4, in_ch
    return ArchSpec(
        "RRDBNet",
        {
            "num_in_ch": num_in_ch,
            "num_out_ch": num_out_ch,
            "scale": scale,
            "num_feat": num_feat,
            "num_block": num_block,
            "num_grow_ch": num_grow_ch,
        },
    )


def check_state_dict(spec: ArchSpec, state_dict: Mapping[str, Any]) -> str | None:
    """Why ``state_dict`` does not fit ``spec`` exactly (keys and shapes), or None if it does."""
    with torch.device("meta"):
        expected = spec.build().state_dict()
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
        return "; ".join(parts)
    for key, tensor in expected.items():
        got = tuple(state_dict[key].shape)
        if got != tuple(tensor.shape):
            return f"{key} has shape {list(got)}, expected {list(tensor.shape)}"
    return None


def detect_architecture(
    state_dict: Mapping[str, Any], *, act_type: str | None = None, source: str = "the weights"
) -> ArchSpec:
    """Recognise the architecture of ``state_dict`` (BasicSR key names) from keys and shapes.

    ``act_type`` overrides SRVGGNetCompact's activation (which weights cannot show unless it
    is PReLU; the default without PReLU keys is ``"relu"``). ``source`` names the file in
    error messages. Raises ``ModelError("cannot recognise the architecture of SOURCE ...")``
    for anything that is not exactly one of the known architectures.
    """
    fail = f"cannot recognise the architecture of {source}"
    try:
        if "conv_first.weight" in state_dict and "conv_last.weight" in state_dict:
            spec = _detect_rrdb(state_dict)
        elif "body.0.weight" in state_dict and all(_SRVGG_KEY.match(k) for k in state_dict):
            spec = _detect_srvgg(state_dict, act_type)
        else:
            sample = ", ".join(list(state_dict)[:3]) or "no tensors"
            raise ModelError(f"{fail} (keys: {sample})")
        if act_type is not None and spec.arch != "SRVGGNetCompact":
            raise ValueError("act_type applies to SRVGGNetCompact only")
        problem = check_state_dict(spec, state_dict)
    except ModelError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError) as exc:
        raise ModelError(f"{fail} ({exc})") from exc
    if problem is not None:
        raise NearMiss(f"{fail} (looks like {spec.arch}, but {problem})", spec.arch)
    return spec


def count_params(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of parameters (elements of all tensors) in a state dict."""
    return int(sum(t.numel() for t in state_dict.values()))
