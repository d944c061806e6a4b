"""Build a ready-to-run network from a model name or a weights file.

A spec is, in this order: a registry name (case-insensitive), the name of a model imported
into the cache (``vidsr models import``), or a path to a ``.pth``/``.safetensors``/ncnn
``.param`` file (architecture recognised from the weights). Every load is strict: a missing
or unexpected key, or a wrong shape, is a ``ModelError``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidsr.errors import ModelError, UsageError, opt
from vidsr.models.arch import ARCHITECTURES
from vidsr.models.detect import ArchSpec, detect_architecture
from vidsr.models.registry import MODELS, find_record, unknown_model_message
from vidsr.models.sources import (
    Progress,
    cached_models,
    is_cached,
    is_offline_ready,
    read_cache,
    record_spec,
    resolve_state_dict,
)
from vidsr.models.weights import WEIGHT_SUFFIXES, read_weights_file

#: realesr-general-x4v3's default denoise strength, as in Real-ESRGAN's inference script.
DEFAULT_DENOISE_STRENGTH = 0.5


@dataclass
class LoadedNetwork:
    """A network ready for inference: ``module`` is in eval mode, fp32, on the CPU, with
    ``requires_grad`` off. Input H and W must be multiples of ``size_multiple`` (RRDBNet's
    pixel unshuffle: 4 at scale 1, 2 at scale 2, else 1). ``denoise_strength`` is the blend
    used for realesr-general-x4v3, None for every other model."""

    module: nn.Module
    name: str
    arch: str
    kwargs: dict[str, Any]
    scale: int
    size_multiple: int
    params: int
    denoise_strength: float | None = None
    digest: str = ""  # sha256 of the weights as loaded (see weights_digest)


def blend_state_dicts(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], strength: float
) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's deep network interpolation: ``strength * a + (1 - strength) * b`` key
    by key (``a`` = realesr-general-x4v3, ``b`` = its wdn pair)."""
    if set(a) != set(b):
        raise ModelError("cannot blend weights with different keys")
    out = {}
    for key, value in a.items():
        if value.shape != b[key].shape:
            raise ModelError(
                f"cannot blend {key}: shapes {list(value.shape)} and {list(b[key].shape)}"
            )
        out[key] = strength * value + (1 - strength) * b[key]
    return out


def build_module(spec: ArchSpec, state_dict: Mapping[str, torch.Tensor], name: str) -> nn.Module:
    """Instantiate ``spec`` and load ``state_dict`` strictly; eval, fp32, CPU, no grad."""
    cls = ARCHITECTURES.get(spec.arch)
    if cls is None:
        raise ModelError(f"model {name}: unknown architecture {spec.arch!r}")
    try:
        with torch.device("meta"):
            module = cls(**spec.kwargs)
        tensors = {
            k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()
        }
        module.load_state_dict(tensors, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise ModelError(f"model {name}: weights do not fit {spec.arch} ({detail})") from exc
    if any(t.is_meta for t in list(module.parameters()) + list(module.buffers())):
        raise ModelError(f"model {name}: some parameters were not loaded")
    module.eval()
    module.requires_grad_(False)
    return module


def _size_multiple(spec: ArchSpec) -> int:
    if spec.arch == "RRDBNet":
        return {1: 4, 2: 2}.get(int(spec.kwargs["scale"]), 1)
    return 1


def _looks_like_path(spec: str) -> bool:
    return (
        Path(spec).suffix.lower() in WEIGHT_SUFFIXES
        or os.sep in spec
        or (os.altsep is not None and os.altsep in spec)
        or Path(spec).exists()
    )


def _check_strength(name: str, strength: float | None, allowed: bool) -> None:
    if strength is None:
        return
    if not allowed:  # its range is the option's own check
        raise UsageError(
            f"{opt('denoise_strength')} applies to realesr-general-x4v3 only, not to model {name}"
        )


def _classify(spec: str | os.PathLike[str]) -> tuple[str, Any]:
    """("record", ModelRecord) | ("cached", name) | ("file", Path); ModelError if none."""
    text = os.fspath(spec)
    if not isinstance(spec, os.PathLike):
        record = find_record(text)
        if record is not None:
            return "record", record
        if is_cached(text):
            return "cached", text
    if isinstance(spec, os.PathLike) or _looks_like_path(text):
        path = Path(text)
        if not path.exists():
            raise ModelError(f"model file {path} does not exist")
        return "file", path
    names = [*MODELS, *(row["name"] for row in cached_models() if row["name"] not in MODELS)]
    raise ModelError(unknown_model_message(text, names))


def check_model_spec(spec: str | os.PathLike[str]) -> None:
    """Fail fast, without loading weights: ``ModelError`` (with a suggestion) unless ``spec``
    is a registry name, an imported name or an existing weights file. Whether a registry
    model's weights can actually be had is only known when it is loaded."""
    _classify(spec)


def expected_scale(spec: str | os.PathLike[str]) -> int:
    """The upscale factor of ``spec``'s network (from the registry or the cache metadata
    without reading tensors; a weights file is read and its architecture recognised)."""
    kind, value = _classify(spec)
    if kind == "record":
        return int(value.scale)
    if kind == "cached":
        for row in cached_models():
            if row["name"] == value:
                return ArchSpec(row["arch"], row["kwargs"]).scale
        return read_cache(value)[1].scale
    return detect_architecture(read_weights_file(value), source=str(value)).scale


def _weights(
    spec: str | os.PathLike[str], denoise_strength: float | None, progress: Progress | None
) -> tuple[str, dict[str, torch.Tensor], ArchSpec, float | None]:
    """(name, state dict, architecture, denoise strength used) for ``spec``."""
    kind, value = _classify(spec)
    if kind == "cached":
        _check_strength(value, denoise_strength, False)
        state_dict, arch_spec = read_cache(value)
        return value, state_dict, arch_spec, None
    if kind == "file":
        _check_strength(value.stem, denoise_strength, False)
        state_dict = read_weights_file(value)
        return value.stem, state_dict, detect_architecture(state_dict, source=str(value)), None
    record = value
    _check_strength(record.name, denoise_strength, record.denoise_pair is not None)
    arch_spec = record_spec(record)
    if record.denoise_pair is None:
        return record.name, resolve_state_dict(record, progress), arch_spec, None
    strength = DEFAULT_DENOISE_STRENGTH if denoise_strength is None else float(denoise_strength)
    pair = MODELS[record.denoise_pair]
    if strength == 1.0:
        state_dict = resolve_state_dict(record, progress)
    elif strength == 0.0:
        state_dict = resolve_state_dict(pair, progress)
    else:
        state_dict = blend_state_dicts(
            resolve_state_dict(record, progress), resolve_state_dict(pair, progress), strength
        )
    return record.name, state_dict, arch_spec, strength


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor (as fp32, key order sorted) and its name and shape: equal
    exactly when the network computes the same thing from the same weights."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def weights_digest(
    spec: str | os.PathLike[str],
    *,
    denoise_strength: float | None = None,
    progress: Progress | None = None,
) -> str:
    """The sha256 of ``spec``'s weights as :func:`load_network` would load them (the blend
    included), without building the network: part of a job's resume fingerprint, so a
    resumed job never mixes segments made by different weights (an imported official file
    and the bundled ncnn conversion of the same model, say)."""
    _name, state_dict, _spec, _strength = _weights(spec, denoise_strength, progress)
    return state_dict_digest(state_dict)


def load_network(
    spec: str | os.PathLike[str],
    *,
    denoise_strength: float | None = None,
    progress: Progress | None = None,
) -> LoadedNetwork:
    """Load a network by registry name, imported name, or weights file path.

    ``denoise_strength`` (realesr-general-x4v3 only; default 0.5) blends its weights with
    realesr-general-wdn-x4v3's as Real-ESRGAN does: ``S * x4v3 + (1 - S) * wdn``; 1 uses
    x4v3 alone. ``progress(done_bytes, total_bytes)`` follows any download.

    Raises ``ModelError`` (unknown name with a suggestion, weights unavailable, file
    unreadable or unfit) and ``UsageError`` (denoise strength on another model or out of range).
    """
    name, state_dict, arch_spec, strength = _weights(spec, denoise_strength, progress)
    module = build_module(arch_spec, state_dict, name)
    return LoadedNetwork(
        module=module,
        name=name,
        arch=arch_spec.arch,
        kwargs=dict(arch_spec.kwargs),
        scale=arch_spec.scale,
        size_multiple=_size_multiple(arch_spec),
        params=sum(p.numel() for p in module.parameters()),
        denoise_strength=strength,
        digest=state_dict_digest(state_dict),
    )


def list_models() -> list[dict[str, Any]]:
    """One row per model: the registry's, then models imported into the cache.

    Keys: ``name``, ``arch``, ``scale``, ``params``, ``license``, ``offline`` (usable without
    a network), ``offline_source`` (``"cache"``, ``"ncnn"`` or None), ``cached``, ``url``,
    ``description``, ``imported``.
    """
    rows: list[dict[str, Any]] = []
    for record in MODELS.values():
        cached = is_cached(record.name)
        offline = is_offline_ready(record)
        rows.append(
            {
                "name": record.name,
                "arch": record.arch,
                "scale": record.scale,
                "params": record.params,
                "license": record.license,
                "offline": offline,
                "offline_source": "cache" if cached else "ncnn" if offline else None,
                "cached": cached,
                "url": record.url,
                "description": record.description,
                "imported": False,
            }
        )
    for entry in cached_models():
        if entry["name"] in MODELS:
            continue
        spec = ArchSpec(entry["arch"], entry["kwargs"])
        try:
            scale = spec.scale
        except KeyError:
            continue
        rows.append(
            {
                "name": entry["name"],
                "arch": spec.arch,
                "scale": scale,
                "params": entry["params"],
                "license": "unknown (imported file)",
                "offline": True,
                "offline_source": "cache",
                "cached": True,
                "url": None,
                "description": f"imported from {entry['source'].removeprefix('import:')}",
                "imported": True,
            }
        )
    return rows
