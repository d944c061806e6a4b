"""Build a ready-to-run network from a model name or a weights file.

A spec is, in this order: a registry name (case-insensitive), the name of a model imported
into the cache (``vidsr models import``), or a path to a ``.pth``/``.safetensors``/ncnn
``.param``/``.onnx`` file. A weights file's architecture is recognised from its keys:
vidsr's own RRDBNet and SRVGGNetCompact first (no spandrel needed), then any architecture
spandrel knows (:mod:`vidsr.models.community`). An ONNX file is described from its graph
(:mod:`vidsr.models.onnx`) and run by an ONNX runtime (:mod:`vidsr.pipeline.onnx_run`).
Every load is strict: a missing or unexpected key, or a wrong shape, is a ``ModelError``.
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
from vidsr.models.community import COMPACT_IDS, Community, load_community, recognise
from vidsr.models.detect import ArchSpec, count_params
from vidsr.models.onnx import OnnxGraph, inspect_onnx
from vidsr.models.registry import MODELS, find_record, unknown_model_message
from vidsr.models.sources import (
    Progress,
    cached_models,
    cached_onnx,
    is_cached,
    is_offline_ready,
    read_cache,
    record_spec,
    resolve_state_dict,
)
from vidsr.models.weights import MODEL_SUFFIXES, read_weights_file

#: realesr-general-x4v3's default denoise strength, as in Real-ESRGAN's inference script.
DEFAULT_DENOISE_STRENGTH = 0.5


@dataclass
class LoadedNetwork:
    """A network ready for inference: ``module`` is in eval mode, fp32, on the CPU, with
    ``requires_grad`` off (None for an ONNX graph, ``onnx``: its runtime is chosen when it is
    placed on a device). Input H and W must be multiples of ``size_multiple`` (RRDBNet's
    pixel unshuffle: 4 at scale 1, 2 at scale 2; a community model's descriptor), at least
    ``minimum`` and equal when ``square``. ``precisions``: the reduced precisions it runs
    (fp32 always). ``loader``: ``vidsr``, ``spandrel`` or ``onnx``. ``denoise_strength`` is
    the blend used for realesr-general-x4v3, None for every other model."""

    module: nn.Module | None
    name: str
    arch: str
    kwargs: dict[str, Any]
    scale: int
    size_multiple: int
    params: int
    denoise_strength: float | None = None
    digest: str = ""  # sha256 of the weights as loaded (see weights_digest)
    loader: str = "vidsr"
    minimum: int = 0
    square: bool = False
    precisions: tuple[str, ...] = ("fp16", "bf16")
    tiling: str = "supported"
    onnx: OnnxGraph | None = None

    @property
    def reach_known(self) -> bool:
        """Whether the network's receptive field can be read from its layers (a stack of
        convolutions: SRVGGNetCompact, and spandrel's Compact)."""
        return self.arch in COMPACT_IDS


@dataclass(frozen=True)
class ModelFacts:
    """What a run needs to know of a model before loading it to run: see
    :func:`describe_model`."""

    name: str
    arch: str
    scale: int
    loader: str
    precisions: tuple[str, ...]
    params: int
    dtype: str = "fp32"  # an ONNX graph's input type (what ONNX Runtime runs it at)


@dataclass
class _Found:
    """A model's weights as read: vidsr's own (``spec``), spandrel's (``community``) or an
    ONNX graph (``onnx``)."""

    name: str
    state_dict: dict[str, torch.Tensor]
    spec: ArchSpec | None = None
    strength: float | None = None
    community: Community | None = None
    onnx: OnnxGraph | None = None

    @property
    def digest(self) -> str:
        if self.onnx is not None:
            return self.onnx.digest
        return state_dict_digest(self.community[2] if self.community else self.state_dict)


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
        Path(spec).suffix.lower() in MODEL_SUFFIXES
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
    """("record", ModelRecord) | ("cached", name) | ("file", Path) | ("onnx", (name, Path));
    ModelError if none."""
    text = os.fspath(spec)
    if not isinstance(spec, os.PathLike):
        record = find_record(text)
        if record is not None:
            return "record", record
        onnx_file = cached_onnx(text)
        if onnx_file is not None:
            return "onnx", (text, onnx_file)
        if is_cached(text):
            return "cached", text
    if isinstance(spec, os.PathLike) or _looks_like_path(text):
        path = Path(text)
        if not path.exists():
            raise ModelError(f"model file {path} does not exist")
        if path.suffix.lower() == ".onnx":
            return "onnx", (path.stem, path)
        return "file", path
    names = [*MODELS, *(row["name"] for row in cached_models() if row["name"] not in MODELS)]
    raise ModelError(unknown_model_message(text, names))


def check_model_spec(spec: str | os.PathLike[str]) -> None:
    """Fail fast, without loading weights: ``ModelError`` (with a suggestion) unless ``spec``
    is a registry name, an imported name or an existing weights file. Whether a registry
    model's weights can actually be had is only known when it is loaded."""
    _classify(spec)


_FACTS: dict[tuple[Any, ...], ModelFacts] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _facts_of(kind: str, value: Any) -> ModelFacts:
    if kind == "record":
        return ModelFacts(
            value.name, value.arch, int(value.scale), "vidsr", ("fp16", "bf16"), value.params
        )
    if kind == "cached":  # from the header, no tensors read (ONNX entries: kind "onnx")
        for row in cached_models():
            if row["name"] == value and row["scale"]:
                return ModelFacts(
                    value, row["arch"], row["scale"], row["loader"], row["precisions"],
                    row["params"],
                )  # fmt: skip
    return _facts(_weights_of(kind, value, None, None))


def _facts(found: _Found) -> ModelFacts:
    if found.onnx is not None:
        g = found.onnx
        return ModelFacts(found.name, "ONNX", g.scale, "onnx", (), g.params, g.dtype)
    if found.community is not None:
        module, described, _sd = found.community
        params = sum(p.numel() for p in module.parameters())
        return ModelFacts(
            found.name, described.arch, described.scale, "spandrel", described.precisions, params
        )
    assert found.spec is not None
    return ModelFacts(
        found.name,
        found.spec.arch,
        found.spec.scale,
        "vidsr",
        ("fp16", "bf16"),
        count_params(found.state_dict),
    )


def describe_model(spec: str | os.PathLike[str]) -> ModelFacts:
    """Name, architecture, scale, loader, supported reduced precisions and parameter count
    of ``spec`` (registry and cache entries from their records; a file is read once per
    version and remembered)."""
    kind, value = _classify(spec)
    path = value if kind == "file" else value[1] if kind == "onnx" else None
    key = (kind, os.fspath(spec), _stamp(path) if path is not None else None)
    if kind == "cached":
        from vidsr.models.sources import cache_path

        key = (*key, _stamp(cache_path(value)))
    if key not in _FACTS:
        _FACTS[key] = _facts_of(kind, value)
    return _FACTS[key]


def expected_scale(spec: str | os.PathLike[str]) -> int:
    """The upscale factor of ``spec``'s network (from the registry or the cache metadata
    without reading tensors; a weights file is read and its architecture recognised)."""
    return describe_model(spec).scale


def _weights(
    spec: str | os.PathLike[str], denoise_strength: float | None, progress: Progress | None
) -> _Found:
    """``spec``'s weights as read (see :class:`_Found`)."""
    kind, value = _classify(spec)
    return _weights_of(kind, value, denoise_strength, progress)


def _weights_of(
    kind: str, value: Any, denoise_strength: float | None, progress: Progress | None
) -> _Found:
    if kind == "onnx":
        name, path = value
        _check_strength(name, denoise_strength, False)
        return _Found(name, {}, onnx=inspect_onnx(path))
    if kind == "cached":
        _check_strength(value, denoise_strength, False)
        state_dict, arch_spec = read_cache(value)
        if arch_spec.arch not in ARCHITECTURES:  # a community model: spandrel builds it
            found = load_community(state_dict, f"model {value}", expect=arch_spec.arch)
            return _Found(value, state_dict, community=found)
        return _Found(value, state_dict, arch_spec)
    if kind == "file":
        _check_strength(value.stem, denoise_strength, False)
        state_dict = read_weights_file(value)
        own, community = recognise(state_dict, str(value))
        return _Found(value.stem, state_dict, own, community=community)
    record = value
    _check_strength(record.name, denoise_strength, record.denoise_pair is not None)
    arch_spec = record_spec(record)
    if record.denoise_pair is None:
        return _Found(record.name, resolve_state_dict(record, progress), arch_spec)
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
    return _Found(record.name, state_dict, arch_spec, strength)


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
    return _weights(spec, denoise_strength, progress).digest


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
    found = _weights(spec, denoise_strength, progress)
    if found.onnx is not None:
        g = found.onnx
        return LoadedNetwork(
            module=None, name=found.name, arch="ONNX", kwargs={}, scale=g.scale,
            size_multiple=1, params=g.params, digest=g.digest, loader="onnx",
            precisions=(), onnx=g,  # its runtime decides: onnx_run.onnx_precision
        )  # fmt: skip
    if found.community is not None:
        module, d, _sd = found.community
        return LoadedNetwork(
            module=module, name=found.name, arch=d.arch, kwargs=dict(d.hyperparameters),
            scale=d.scale, size_multiple=d.multiple,
            params=sum(p.numel() for p in module.parameters()), digest=found.digest,
            loader="spandrel", minimum=d.minimum, square=d.square, precisions=d.precisions,
            tiling=d.tiling,
        )  # fmt: skip
    assert found.spec is not None
    module = build_module(found.spec, found.state_dict, found.name)
    return LoadedNetwork(
        module=module,
        name=found.name,
        arch=found.spec.arch,
        kwargs=dict(found.spec.kwargs),
        scale=found.spec.scale,
        size_multiple=_size_multiple(found.spec),
        params=sum(p.numel() for p in module.parameters()),
        denoise_strength=found.strength,
        digest=found.digest,
    )


def list_models() -> list[dict[str, Any]]:
    """One row per model: the registry's, then models imported into the cache.

    Keys: ``name``, ``arch``, ``scale``, ``params``, ``license``, ``offline`` (usable without
    a network), ``offline_source`` (``"cache"``, ``"ncnn"`` or None), ``cached``, ``url``,
    ``description``, ``imported``, ``loader`` (``vidsr``, ``spandrel`` or ``onnx``).
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
                "loader": "vidsr",
            }
        )
    for entry in cached_models():
        if entry["name"] in MODELS or not entry["scale"]:
            continue
        rows.append(
            {
                "name": entry["name"],
                "arch": entry["arch"],
                "scale": entry["scale"],
                "params": entry["params"],
                "license": "unknown (imported file)",
                "offline": True,
                "offline_source": "cache",
                "cached": True,
                "url": None,
                "description": f"imported from {entry['source'].removeprefix('import:')}",
                "imported": True,
                "loader": entry["loader"],
            }
        )
    return rows
