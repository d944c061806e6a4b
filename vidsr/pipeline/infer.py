"""Running a loaded network on batches of RGB frames: device, precision, padding, tiling and
the final resize. Tensor contract everywhere: (N, 3, H, W) float in [0, 1]."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from vidsr.errors import DeviceError, UsageError, opt
from vidsr.models.loader import LoadedNetwork, load_network
from vidsr.options import DEVICE_PATTERN, PRECISIONS
from vidsr.pipeline.memory import MemoryState

log = logging.getLogger(__name__)
_SWITCHING = threading.Lock()  # one precision switch at a time
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(spec: str) -> torch.device:
    """The device rule: ``auto`` -> ``cuda`` when available, else ``cpu``. Refuses a CUDA
    device that is absent."""
    spec = spec.strip().lower()
    m = DEVICE_PATTERN.fullmatch(spec)
    if not m:
        raise UsageError(
            f"{opt('device')} must be auto, cpu, cuda, cuda:N or intel:gpu, not {spec!r}"
        )
    if spec == "cpu" or spec.startswith("intel:"):  # an Intel GPU: tensors stay on the host
        return torch.device("cpu")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec} requested but CUDA is not available on this machine")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {spec} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)


def resolve_precision(
    precision: str,
    device: torch.device,
    supported: tuple[str, ...] = ("fp16", "bf16"),
    model: str = "",
) -> torch.dtype:
    """The precision rule: ``auto`` -> fp16 on CUDA, fp32 on CPU. fp16 on CPU is refused (it
    is ~100x slower). ``supported``: the reduced precisions the model runs (a community
    architecture's descriptor says; ``model`` names it): ``auto`` on CUDA takes fp16, else
    bf16 where the GPU has it, else fp32; an explicit one it does not run is refused."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        if "fp16" in supported:
            return torch.float16
        if "bf16" in supported and bf16_supported(device):
            return torch.bfloat16
        return torch.float32
    if precision in ("fp16", "bf16") and precision not in supported:
        runs = ", ".join(opt("precision", p) for p in ("fp32", *supported))
        raise UsageError(f"model {model or '?'} does not run at {precision}; use {runs}")
    if precision not in _DTYPES:
        raise UsageError(
            f"{opt('precision')} must be one of {', '.join(PRECISIONS)}, not {precision!r}"
        )
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError(
            "fp16 on the CPU is refused: PyTorch runs it about 100x slower than fp32; "
            f"use {opt('precision', 'fp32')} or {opt('precision', 'bf16')} on the CPU"
        )
    if precision == "bf16" and device.type == "cuda" and not bf16_supported(device):
        raise DeviceError(
            f"bf16 is refused on {device}: this GPU has no bfloat16 arithmetic (it needs "
            f"compute capability 8.0, Ampere, or later); use {opt('precision', 'fp16')}"
        )
    return _DTYPES[precision]


def bf16_supported(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes in bfloat16 (compute capability 8.0 or later).
    True where no CUDA is present to ask (a Ray driver: its workers' GPUs decide there)."""
    if not torch.cuda.is_available():
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def precision_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``fp32`` (the option's spelling)."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


def scaled_size(
    height: int, width: int, scale: float, native: int, *, even: bool = False
) -> tuple[int, int]:
    """The result size for ``scale``: exact multiples at the network's own scale, otherwise
    floor(size * scale) (rounded down to even numbers when ``even``: 4:2:0 video needs it)."""
    if scale == native:
        return height * native, width * native
    h, w = int(height * scale), int(width * scale)
    if even:
        h, w = max(2, h // 2 * 2), max(2, w // 2 * 2)
    return h, w


def resize_output(out: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """The network's (clamped) output resized to ``size`` = (height, width) - antialiased
    bicubic, clamped again - where that differs from its own size."""
    if size is not None and tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out, size=tuple(size), mode="bicubic", antialias=True)
        out = out.clamp_(0.0, 1.0)
    return out


def padded_size(
    h: int, w: int, multiple: int, minimum: int = 0, square: bool = False
) -> tuple[int, int]:
    """The input size a network with these needs runs at: at least ``minimum``, square when
    ``square``, rounded up to ``multiple``."""
    h, w = max(h, minimum), max(w, minimum)
    if square:
        h = w = max(h, w)
    return h + (-h) % multiple, w + (-w) % multiple


def pad_to(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """``x`` padded at the bottom and right to ``th`` x ``tw``: mirrored (as Real-ESRGAN and
    spandrel pad) as far as the picture reaches, edge pixels repeated beyond."""
    h, w = x.shape[-2:]
    ph, pw = th - h, tw - w
    rh, rw = min(ph, h - 1), min(pw, w - 1)
    if rh or rw:
        x = F.pad(x, (0, rw, 0, rh), mode="reflect")
    if ph - rh or pw - rw:
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
    return x


class NonFiniteOutput(RuntimeError):
    """The network gave NaN or Inf (an fp16 overflow): the caller may retry in fp32."""


class Upscaler:
    """A network on a device at a precision, run whole-frame or in tiles.

    ``upscaler(x, size=None)``: x is (N, 3, H, W) float in [0, 1] (any float dtype, any
    device; it is moved to ``self.device``); returns (N, 3, H * net_scale, W * net_scale)
    float32 in [0, 1] on ``self.device``, channels_last, or that result resized (antialiased
    bicubic) to ``size`` = (height, width) when given and different. Works for any H, W >= 1.
    With ``check_finite`` a NaN or Inf in the network's output raises
    :class:`NonFiniteOutput` instead of being clipped into black or green pixels.
    ``memory`` is what batches of this network have learned (:mod:`vidsr.pipeline.memory`).
    """

    def __init__(
        self,
        net: LoadedNetwork,
        *,
        device: torch.device,
        dtype: torch.dtype,
        tile: int = 0,
        tile_pad: int = 10,
    ) -> None:
        self.net = net
        self.device = device
        self.tile = tile
        self.tile_pad = tile_pad
        self.net_scale = net.scale
        # CPU bf16 runs under autocast with fp32 weights; CUDA casts the weights.
        autocast = device.type == "cpu" and dtype == torch.bfloat16
        weight_dtype = torch.float32 if autocast else dtype
        module = net.module.to(device=device, dtype=weight_dtype)
        module = module.to(memory_format=torch.channels_last).eval()
        # (module, dtype, autocast), swapped as one: a thread mid-forward keeps its own triple
        self._exec: tuple[Any, torch.dtype, bool] = (module, dtype, autocast)
        self.memory = MemoryState()
        if tile and net.tiling != "supported":
            log.warning(
                "%s: %s %s tiling (its global attention sees the whole frame): tiles may "
                "show seams; leave --tile out where memory allows",
                net.name,
                net.arch,
                "discourages" if net.tiling == "discouraged" else "does its own",
            )
        self.runtime = "torch"  # or "openvino": the module is then an OpenVINOModule
        self.runtime_precision = ""  # OpenVINO's precision (the tensors stay fp32)

    @property
    def module(self) -> Any:
        return self._exec[0]

    @module.setter
    def module(self, module: Any) -> None:  # e.g. the compiled wrapper
        self._exec = (module, self._exec[1], self._exec[2])

    @property
    def dtype(self) -> torch.dtype:
        return self._exec[1]

    def use_fp32(self) -> None:
        """Run in fp32 from now on (after an fp16/bf16 overflow): an fp32 copy of the weights
        (threads mid-forward finish with the old ones; a compiled module is not compiled
        again), and what was measured at the old precision is measured again."""
        with _SWITCHING:
            if self.runtime == "onnxruntime":
                raise DeviceError(
                    f"the ONNX graph gave NaN or Inf at {self.runtime_precision} on ONNX "
                    f"Runtime, which runs it only in its own precision; use "
                    f"{opt('runtime', 'openvino')} or an fp32 export"
                )
            if self.runtime == "openvino":
                if self.runtime_precision != "fp32":
                    self._exec = (self.module.with_precision("fp32"), torch.float32, False)
                    self.runtime_precision = "fp32"
                    self.memory.tiled.clear()
                    self.memory.frame_bytes.clear()
                return
            if self.dtype == torch.float32 and not self._exec[2]:
                return
            module = copy.deepcopy(self.net.module).to(dtype=torch.float32)
            module = module.to(memory_format=torch.channels_last).eval()
            self.net = dataclasses.replace(self.net, module=module)
            self._exec = (module, torch.float32, False)
            self.memory.tiled.clear()
            self.memory.frame_bytes.clear()

    @property
    def precision_name(self) -> str:
        return self.runtime_precision or precision_name(self.dtype)

    @torch.inference_mode()
    def __call__(
        self, x: torch.Tensor, size: tuple[int, int] | None = None, *, check_finite: bool = False
    ) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, non_blocking=True)
        h, w = x.shape[-2:]
        if self.tile and (h > self.tile or w > self.tile):
            out = self._tiled(x)
        else:
            out = self._forward_padded(x)
        out = out.float()
        if check_finite and not bool(torch.isfinite(out).all()):
            raise NonFiniteOutput(f"the network gave NaN or Inf at {self.precision_name}")
        return resize_output(out.clamp_(0.0, 1.0), size)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        module, dtype, autocast = self._exec
        x = x.to(dtype=torch.float32 if autocast else dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x)
        return module(x)

    def _forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Pad to what the network needs (:func:`padded_size`), run, crop."""
        h, w = x.shape[-2:]
        th, tw = padded_size(h, w, self.net.size_multiple, self.net.minimum, self.net.square)
        if (th, tw) != (h, w):
            x = pad_to(x, th, tw)
        out = self._run(x)
        s = self.net_scale
        return out[..., : h * s, : w * s]

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Real-ESRGAN's tile scheme: each tile is run with ``tile_pad`` pixels of context
        on every side (where the frame has them) and only its own area is kept."""
        n, c, h, w = x.shape
        s, t, p = self.net_scale, self.tile, self.tile_pad
        shape = (n, c, h * s, w * s)  # laid out as a whole frame's result: NHWC in memory
        out = torch.empty(
            shape, dtype=torch.float32, device=x.device, memory_format=torch.channels_last
        )
        for ty in range(math.ceil(h / t)):
            for tx in range(math.ceil(w / t)):
                y0, x0 = ty * t, tx * t
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                py0, px0 = max(y0 - p, 0), max(x0 - p, 0)
                py1, px1 = min(y1 + p, h), min(x1 + p, w)
                res = self._forward_padded(x[..., py0:py1, px0:px1]).float()
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] = res[
                    ..., oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s
                ]
        return out


def build_upscaler(
    model: str,
    *,
    device: str,
    precision: str,
    tile: int = 0,
    tile_pad: int = 10,
    denoise_strength: float | None = None,
    compile: bool = False,
    progress: Callable[[int, int], None] | None = None,
    runtime: str = "torch",
) -> Upscaler:
    """Load ``model`` and place it on ``device`` at ``precision`` (both resolved here by the
    device and precision rules), run by torch or (``runtime="openvino"``, and always on an
    Intel GPU) by OpenVINO. Callers with run settings use
    :func:`vidsr.jobs.chunk.upscaler_for`."""
    intel = device.strip().lower().startswith("intel:")
    dev = resolve_device(device)
    net = load_network(model, denoise_strength=denoise_strength, progress=progress)
    if net.onnx is not None:
        return _onnx_upscaler(net, device, dev, precision, runtime, tile, tile_pad, compile)
    if intel and precision == "auto":  # an Intel GPU's own precision, where the model has it
        precision = "fp16" if "fp16" in net.precisions else "fp32"
    if runtime == "onnxruntime":
        raise UsageError(
            f"{opt('runtime', 'onnxruntime')} runs .onnx model files; {net.name} is a "
            f"{net.arch}: use {opt('runtime', 'torch')} or {opt('runtime', 'openvino')}"
        )
    if intel:
        dtype = torch.float32
        if precision in ("fp16", "bf16") and precision not in net.precisions:
            resolve_precision(precision, dev, net.precisions, net.name)  # refused
    else:
        dtype = resolve_precision(precision, dev, net.precisions, net.name)
    if runtime == "openvino" or intel:
        from vidsr.pipeline import openvino

        openvino.check_device(device)
        if compile:
            raise UsageError(f"{opt('compile')} is torch's: leave it out with OpenVINO")
        upscaler = Upscaler(net, device=dev, dtype=torch.float32, tile=tile, tile_pad=tile_pad)
        name = precision if precision in ("bf16", "fp16") else "fp32"
        upscaler.module = openvino.OpenVINOModule(
            net.module, device=openvino.target(device), precision=name,
            static=net.loader != "vidsr",
        )  # fmt: skip
        upscaler.runtime, upscaler.runtime_precision = "openvino", name
        return upscaler
    upscaler = Upscaler(net, device=dev, dtype=dtype, tile=tile, tile_pad=tile_pad)
    if compile:
        upscaler.module = compiled(upscaler.module)
    return upscaler


def _onnx_upscaler(
    net: LoadedNetwork,
    device: str,
    dev: torch.device,
    precision: str,
    runtime: str,
    tile: int,
    tile_pad: int,
    compile: bool,
) -> Upscaler:
    """An ONNX graph's upscaler: OpenVINO (at ``precision``'s hint) or ONNX Runtime (the
    graph's own precision), chosen by :func:`vidsr.pipeline.onnx_run.pick_runtime`."""
    from vidsr.pipeline.onnx_run import OnnxModule, onnx_precision, pick_runtime

    assert net.onnx is not None
    if compile:
        raise UsageError(f"{opt('compile')} is torch's: an ONNX model runs without it")
    chosen = pick_runtime(runtime, device, net.name)
    name = onnx_precision(precision, chosen, net.onnx.dtype, device)
    module = OnnxModule(net.onnx, runtime=chosen, device=device, precision=name)
    upscaler = Upscaler(
        dataclasses.replace(net, module=module), device=dev, dtype=torch.float32,
        tile=tile, tile_pad=tile_pad,
    )  # fmt: skip
    upscaler.runtime, upscaler.runtime_precision = chosen, name
    return upscaler


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(module)``, whose failures (compiled on the first call: no C++ compiler
    on the CPU, no Triton on the GPU) become one clear ``DeviceError``."""
    inner = torch.compile(module)
    compiling = threading.Lock()  # lanes call from several threads: compile in one of them
    warm: set[tuple[int, ...]] = set()

    class _Compiled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                if tuple(x.shape) in warm:
                    return self.inner(x)
                with compiling:
                    out = self.inner(x)
                    warm.add(tuple(x.shape))
                    return out
            except Exception as exc:
                if type(exc).__module__.startswith("torch._"):  # dynamo/inductor failures
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise DeviceError(
                        f"{opt('compile')} failed ({type(exc).__name__}: {first[:200]}); "
                        f"run without {opt('compile')}"
                    ) from exc
                raise

    return _Compiled().eval()
