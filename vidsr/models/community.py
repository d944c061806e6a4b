"""Community architectures through spandrel (``pip install 'vidsr[models]'``).

A weights file that is not one of vidsr's own architectures (RRDBNet and SRVGGNetCompact with
BasicSR key names, :mod:`vidsr.models.detect`) is handed to spandrel's architecture registry:
SPAN, RealPLKSR, OmniSR, old-format ESRGAN, SwinIR, HAT, DAT and the rest. The file itself is
always read by :func:`vidsr.models.weights.read_weights_file` (``torch.load`` with
``weights_only=True``): spandrel sees a state dict of tensors, never a pickle, so its own file
loader (a restricted unpickler) is not used and cannot widen what vidsr accepts.

spandrel's model descriptor drives the rest of the pipeline (:class:`Description`): the scale
(1x is a restoration pass), 3-channel RGB only, the size multiple / minimum / square padding,
and which precisions the architecture supports.

spandrel imports torchvision at package import (two architectures use it); spandrel and
torchvision are imported only here, and only when a file needs them.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vidsr.errors import ModelError
from vidsr.models.detect import ArchSpec, NearMiss, detect_architecture

INSTALL_HINT = "pip install 'vidsr[models]'"

#: spandrel's id of the architecture that is vidsr's own SRVGGNetCompact (same layers, same
#: keys): its receptive field is known, so held-frame reuse works per tile for it too.
COMPACT_IDS = ("SRVGGNetCompact", "Compact")


@dataclass(frozen=True)
class Description:
    """What a network asks of the pipeline, whoever loaded it.

    ``multiple``/``minimum``/``square``: the input must be padded to a multiple of
    ``multiple``, to at least ``minimum`` pixels a side, and square when ``square``.
    ``precisions``: the reduced precisions it supports (``fp16``, ``bf16``); fp32 always.
    ``tiling``: ``supported``, ``discouraged`` (global attention: tiles show seams) or
    ``internal`` (the model tiles itself)."""

    arch: str
    scale: int
    multiple: int = 1
    minimum: int = 0
    square: bool = False
    precisions: tuple[str, ...] = ("fp16", "bf16")
    tiling: str = "supported"
    purpose: str = "SR"
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        """The description as safetensors header strings (see :func:`from_metadata`)."""
        return {
            "scale": str(self.scale),
            "multiple": str(self.multiple),
            "minimum": str(self.minimum),
            "square": "1" if self.square else "0",
            "precisions": ",".join(self.precisions),
            "tiling": self.tiling,
            "purpose": self.purpose,
        }


def available() -> bool:
    """Whether spandrel imports here (it needs torchvision and einops)."""
    try:
        import spandrel  # noqa: F401
    except Exception:  # ImportError, or a torchvision that does not match torch
        return False
    return True


def _spandrel(source: str) -> Any:
    try:
        import spandrel
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "spandrel"
        raise ModelError(
            f"{source} is not a Real-ESRGAN model (RRDBNet or SRVGGNetCompact); other "
            f"architectures load through spandrel, which does not import here ({missing} is "
            f"missing): {INSTALL_HINT}"
        ) from None
    except Exception as exc:  # e.g. "operator torchvision::nms does not exist"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{source} needs spandrel, which fails to import ({first}): torchvision must be the "
            "build that matches torch (README: Community models)"
        ) from None
    return spandrel


class SpandrelModule(nn.Module):
    """A spandrel model called the way its descriptor calls it (some architectures return a
    tuple, or take their input shifted): (N, 3, H, W) in [0, 1] in, (N, 3, sH, sW) out.

    Community architectures are not all safe to call from two threads at once (SPAN rebuilds
    its fused convolution weights in place on every call in eval mode), so each calling
    thread after the first runs its own copy of the model (lanes stay parallel); the copies
    are dropped whenever the module moves to another device or dtype."""

    def __init__(self, model: nn.Module, call: Callable[[nn.Module, torch.Tensor], Any]) -> None:
        super().__init__()
        self.model = model
        self._call = call
        self._copies: dict[int, nn.Module] = {}
        self._copying = threading.Lock()
        self._first: int | None = None

    def _model_for_thread(self) -> nn.Module:
        me = threading.get_ident()
        with self._copying:
            if self._first is None:
                self._first = me
            if me == self._first:
                return self.model
            found = self._copies.get(me)
            if found is None:
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._copies if i not in alive]:
                    del self._copies[ident]  # a lane that has ended
                found = self._copies[me] = copy.deepcopy(self.model)
            return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self._model_for_thread(), x)

    def _apply(self, fn: Any, recurse: bool = True) -> SpandrelModule:
        with self._copying:
            self._copies.clear()
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict[int, Any]) -> SpandrelModule:
        return SpandrelModule(copy.deepcopy(self.model, memo), self._call)


#: (module in eval mode, its description, its state dict as the module holds it).
Community = tuple[nn.Module, Description, dict[str, torch.Tensor]]


def _score(condition: Any, state_dict: Mapping[str, Any]) -> float:
    """How much of a spandrel ``KeyCondition`` ``state_dict`` meets, 0 to 1."""
    keys = getattr(condition, "_keys", None)
    kind = getattr(condition, "_kind", None)
    if keys is None or kind not in ("all", "any") or not keys:
        return 0.0
    scores = [
        (k in state_dict) * 1.0 if isinstance(k, str) else _score(k, state_dict) for k in keys
    ]
    return max(scores) if kind == "any" else sum(scores) / len(scores)


def closest_architecture(state_dict: Mapping[str, Any]) -> str | None:
    """The spandrel architecture whose detection keys ``state_dict`` comes nearest to (at
    least half of them present), or None; without spandrel, None."""
    try:
        import spandrel
    except Exception:
        return None
    best, best_score = None, 0.0
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        score = _score(getattr(support.architecture, "_detect", None), state_dict)
        if score > best_score:
            best, best_score = str(support.architecture.id), score
    return best if best_score >= 0.5 else None


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[str(key)] = list(value) if isinstance(value, tuple) else value
    return out


def describe(descriptor: Any) -> Description:
    """A spandrel image model descriptor as a :class:`Description`."""
    req = descriptor.size_requirements
    precisions = tuple(
        name
        for name, ok in (("fp16", descriptor.supports_half), ("bf16", descriptor.supports_bfloat16))
        if ok
    )
    return Description(
        arch=str(descriptor.architecture.id),
        scale=int(descriptor.scale),
        multiple=int(req.multiple_of),
        minimum=int(req.minimum),
        square=bool(req.square),
        precisions=precisions,
        tiling=str(descriptor.tiling.name).lower(),
        purpose=str(descriptor.purpose),
        hyperparameters=_json_safe(getattr(descriptor.model, "hyperparameters", {}) or {}),
    )


def _channels_message(source: str, arch: str, cin: int, cout: int) -> str:
    what = {1: "1-channel (grey)", 4: "4-channel (RGBA)"}.get(cin, f"{cin}-channel")
    return (
        f"{source} is a {arch} model for {what} images ({cin} channels in, {cout} out); "
        "vidsr runs 3-channel RGB models only"
    )


def _refusal(descriptor: Any, source: str) -> str | None:
    arch = descriptor.architecture.id
    purpose = descriptor.purpose
    if purpose == "Inpainting" or not hasattr(descriptor, "scale"):
        return f"{source} is a {arch} inpainting model (it needs a mask); vidsr runs image-to-image models"
    if purpose == "FaceSR":
        return (
            f"{source} is a {arch} face restoration model (it runs on aligned face crops, not "
            "whole frames); vidsr runs super-resolution and restoration models"
        )
    cin, cout = descriptor.input_channels, descriptor.output_channels
    if (cin, cout) != (3, 3):
        return _channels_message(source, arch, cin, cout)
    if descriptor.scale not in (1, 2, 3, 4, 8):
        return f"{source} is a {arch} model at scale {descriptor.scale}; vidsr runs 1x, 2x, 3x, 4x and 8x"
    return None


def recognise(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[ArchSpec | None, Community | None]:
    """vidsr's own architecture of ``state_dict`` (``(spec, None)``), else spandrel's
    (``(None, community)``); ``ModelError`` in one line when neither knows it, naming the
    closest known architecture."""
    try:
        spec = detect_architecture(state_dict, source=source)
    except NearMiss as own:
        if not available():
            raise ModelError(
                f"{own}; if it is another architecture, spandrel may know it: {INSTALL_HINT}"
            ) from None
        return None, load_community(state_dict, source, near=own.arch)
    except ModelError:
        return None, load_community(state_dict, source)
    cin, cout = spec.kwargs["num_in_ch"], spec.kwargs["num_out_ch"]
    if (cin, cout) != (3, 3):
        raise ModelError(_channels_message(source, spec.arch, cin, cout))
    return spec, None


def load_community(
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    *,
    expect: str | None = None,
    near: str | None = None,
) -> Community:
    """Detect and build ``state_dict``'s architecture with spandrel: (module in eval mode,
    fp32, no grad; its description; its state dict as the module holds it, for the cache).

    ``expect``: the architecture id a cache entry recorded (a mismatch means the entry is
    damaged); ``near``: the closest of vidsr's own architectures, for the message when
    spandrel knows none. ``ModelError`` in one line: spandrel missing, an architecture nobody knows
    (naming the closest known one), weights that do not fit it, or a model vidsr cannot run
    (not 3-channel RGB, an inpainting or face model).
    """
    spandrel = _spandrel(source)
    sd = spandrel.canonicalize_state_dict(dict(state_dict))
    support = next(
        (s for s in spandrel.MAIN_REGISTRY.architectures("detection") if s.detect(sd)), None
    )
    if support is None:
        near = closest_architecture(sd) or near
        sample = ", ".join(list(sd)[:3]) or "no tensors"
        hint = f"; the closest known architecture is {near}, but keys are missing" if near else ""
        raise ModelError(
            f"cannot recognise the architecture of {source}: neither vidsr nor spandrel "
            f"knows it (keys: {sample}){hint}"
        )
    arch = str(support.architecture.id)
    try:
        descriptor = support.architecture.load(sd)
    except Exception as exc:  # an architecture's own loader: KeyError, RuntimeError, assert...
        text = str(exc).strip().splitlines()
        detail = text[0][:200] if text else type(exc).__name__
        raise ModelError(
            f"{source} looks like {arch}, but its weights do not fit ({detail})"
        ) from None
    if expect is not None and arch != expect:
        raise ModelError(f"{source} was recorded as {expect} but spandrel now reads it as {arch}")
    problem = _refusal(descriptor, source)
    if problem is not None:
        raise ModelError(problem)
    call = getattr(descriptor, "_call_fn", None) or (lambda model, image: model(image))
    module = SpandrelModule(descriptor.model, call).float().eval()
    module.requires_grad_(False)
    tensors = {k: v.detach() for k, v in descriptor.model.state_dict().items()}  # views
    return module, describe(descriptor), tensors
