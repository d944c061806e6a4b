"""Running an ONNX graph (:class:`vidsr.models.onnx.OnnxGraph`) as the pipeline's module.

Two runtimes: OpenVINO (CPUs, Intel GPUs: ``--runtime openvino``) and ONNX Runtime
(``--runtime onnxruntime``: its CPU provider, and on NVIDIA GPUs TensorRT then CUDA where
the installed build has them). :class:`OnnxModule` is an ``nn.Module`` without parameters,
so the upscaler's batches, tiles, lanes and retries treat it as any other network: tensors
go in and out as (N, 3, H, W) float in [0, 1], on the caller's device.

A graph with a fixed picture size is run in windows of that size, each with context around
the area it keeps (as tiles are); a fixed batch is filled by repeating the last frame.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from vidsr.errors import DeviceError, UsageError, opt
from vidsr.models.onnx import OnnxGraph

#: Context (input pixels) kept around each window's own area for fixed-size graphs.
WINDOW_PAD = 10


def pick_runtime(asked: str, device: str, model: str) -> str:
    """What runs an ONNX model: ``--runtime openvino|onnxruntime`` as asked (checked here:
    installed, and OpenVINO not on CUDA); ``auto`` OpenVINO on Intel GPUs and on the CPU
    where installed, ONNX Runtime on CUDA and where OpenVINO is not. ``torch`` is refused:
    an ONNX graph is not a torch module."""
    from vidsr.pipeline import openvino

    spec = device.strip().lower()
    cuda = spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available())
    if asked == "torch":
        raise UsageError(
            f"{model} is an ONNX model: it runs with {opt('runtime', 'openvino')} or "
            f"{opt('runtime', 'onnxruntime')}, not torch"
        )
    if asked == "auto":
        if spec.startswith("intel:") or (not cuda and openvino.available()):
            asked = "openvino"
        else:
            asked = "onnxruntime"
    if asked == "openvino" and cuda:
        raise UsageError(
            f"{opt('runtime', 'openvino')} runs on CPUs and Intel GPUs; on CUDA use "
            f"{opt('runtime', 'onnxruntime')}"
        )
    if asked == "openvino":
        openvino.check_device(device if spec.startswith("intel:") else "cpu")
        return asked
    if not _ort_available():
        raise DeviceError(
            f"{model} needs an ONNX runtime: pip install 'vidsr[onnx]' (ONNX Runtime) or "
            "'vidsr[openvino]' (CPUs, Intel GPUs)"
        )
    return asked


def onnx_precision(asked: str, runtime: str, graph_dtype: str, device: str) -> str:
    """The precision an ONNX graph runs at: on ONNX Runtime the graph's own (``fp32`` or
    ``fp16``; another one asked for is refused); on OpenVINO its inference hint: ``auto`` is
    fp16 on an Intel GPU and fp32 on the CPU, fp16 on the CPU is refused (as with torch)."""
    intel = device.strip().lower().startswith("intel:")
    if runtime == "onnxruntime":
        if asked not in ("auto", graph_dtype):
            raise UsageError(
                f"ONNX Runtime runs this graph in its own precision ({graph_dtype}); leave "
                f"{opt('precision')} out, or use {opt('runtime', 'openvino')}"
            )
        return graph_dtype
    if asked == "auto":
        return "fp16" if intel else "fp32"
    if asked == "fp16" and not intel:
        raise DeviceError(
            "fp16 on the CPU is refused: it runs far slower than fp32; use "
            f"{opt('precision', 'fp32')} or {opt('precision', 'bf16')} on the CPU"
        )
    return asked


def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ort_providers(device: str) -> list[Any]:
    """ONNX Runtime providers for ``device``: on CUDA TensorRT then CUDA (those the installed
    build has; ``DeviceError`` where it has neither), else the CPU provider."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    spec = device.strip().lower()
    if spec.startswith("cuda") or (spec == "auto" and torch.cuda.is_available()):
        index = int(spec.split(":")[1]) if ":" in spec else 0
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
        if not wanted:
            raise DeviceError(
                f"ONNX Runtime here has no CUDA provider (it has {', '.join(have)}): "
                "pip install onnxruntime-gpu, or use --device cpu"
            )
        from vidsr.home import home_dir

        cache = home_dir() / "tensorrt-engines"  # TensorRT builds an engine per input shape
        options = {
            "TensorrtExecutionProvider": {
                "device_id": index,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            },
            "CUDAExecutionProvider": {"device_id": index},
        }
        return [(p, options[p]) for p in wanted] + ["CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _ort_runner(graph: OnnxGraph, device: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(
            str(graph.path), sess_options=options, providers=ort_providers(device)
        )
    except DeviceError:
        raise
    except Exception as exc:  # ONNX Runtime's own exception types
        text = str(exc).strip().splitlines()
        raise DeviceError(
            f"ONNX Runtime cannot run {graph.path.name} on {device} "
            f"({text[0][:200] if text else type(exc).__name__}); try {opt('runtime', 'openvino')}"
        ) from None
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino_runner(
    graph: OnnxGraph, device: str, precision: str
) -> Callable[[np.ndarray], np.ndarray]:
    from vidsr.pipeline.openvino import OpenVINOModule, target

    module = OpenVINOModule.from_file(graph.path, device=target(device), precision=precision)

    def run(x: np.ndarray) -> np.ndarray:
        return module.infer(x)

    run.module = module  # type: ignore[attr-defined]
    return run


class OnnxModule(nn.Module):
    """An ONNX graph as a module: ``runtime`` is ``openvino`` or ``onnxruntime``; for
    OpenVINO ``precision`` is its inference precision (``fp32``, ``bf16``, ``fp16``)."""

    def __init__(
        self, graph: OnnxGraph, *, runtime: str, device: str = "cpu", precision: str = "fp32",
        threads: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.graph = graph
        self.runtime = runtime
        self.device_spec = device
        self.precision = precision
        self.threads = threads
        self._np_dtype = np.float16 if graph.dtype == "fp16" else np.float32
        self._lock = threading.Lock()
        if runtime == "openvino":
            self._infer = _openvino_runner(graph, device, precision)
        elif runtime == "onnxruntime":
            self._infer = _ort_runner(graph, device, threads or torch.get_num_threads())
        else:
            raise DeviceError(f"an ONNX model runs with openvino or onnxruntime, not {runtime}")

    def with_precision(self, precision: str) -> OnnxModule:
        """The same graph at another OpenVINO precision (after an overflow: fp32)."""
        return OnnxModule(
            self.graph, runtime=self.runtime, device=self.device_spec, precision=precision,
            threads=self.threads,
        )  # fmt: skip

    def _batch(self, x: np.ndarray) -> np.ndarray:
        """Run ``x`` (n, 3, h, w) in the graph's fixed batch where it has one."""
        fixed = self.graph.batch
        if not fixed or fixed == x.shape[0]:
            return np.asarray(self._infer(np.ascontiguousarray(x, dtype=self._np_dtype)))
        parts = []
        for i in range(0, x.shape[0], fixed):
            part = x[i : i + fixed]
            if part.shape[0] < fixed:  # fill the batch with the last frame, then drop it
                fill = np.repeat(part[-1:], fixed - part.shape[0], axis=0)
                part = np.concatenate([part, fill])
            out = self._infer(np.ascontiguousarray(part, dtype=self._np_dtype))
            parts.append(np.asarray(out)[: min(fixed, x.shape[0] - i)])
        return np.concatenate(parts)

    def _windows(self, x: np.ndarray) -> np.ndarray:
        """Run a fixed-size graph over ``x`` in windows of its size (padded where the frame
        is smaller), keeping from each the area it is centred on."""
        n, _c, h, w = x.shape
        fh, fw = self.graph.size or (None, None)
        wh, ww = fh or h, fw or w
        s = self.graph.scale
        if h < wh or w < ww:  # a small frame: pad up to one window, run, crop
            ph, pw = max(0, wh - h), max(0, ww - w)
            padded = torch.nn.functional.pad(
                torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                (0, pw, 0, ph),
                mode="reflect" if ph < h and pw < w else "replicate",
            ).numpy()
            return self._windows(padded)[..., : h * s, : w * s]
        if (h, w) == (wh, ww):
            return self._batch(x)
        pad_y, pad_x = min(WINDOW_PAD, (wh - 1) // 4), min(WINDOW_PAD, (ww - 1) // 4)
        core_y, core_x = wh - 2 * pad_y if h > wh else wh, ww - 2 * pad_x if w > ww else ww
        out = np.empty((n, 3, h * s, w * s), dtype=np.float32)
        for ty in range(math.ceil(h / core_y)):
            for tx in range(math.ceil(w / core_x)):
                y0, x0 = ty * core_y, tx * core_x
                y1, x1 = min(y0 + core_y, h), min(x0 + core_x, w)
                wy = min(max(y0 - pad_y, 0), h - wh)  # the window inside the frame
                wx = min(max(x0 - pad_x, 0), w - ww)
                res = self._batch(x[..., wy : wy + wh, wx : wx + ww])
                out[..., y0 * s : y1 * s, x0 * s : x1 * s] = res[
                    ..., (y0 - wy) * s : (y1 - wy) * s, (x0 - wx) * s : (x1 - wx) * s
                ]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            out = self._windows(data) if self.graph.size else self._batch(data)
        except DeviceError:
            raise
        except Exception as exc:  # a runtime's own failure on this input
            text = str(exc).strip().splitlines()
            detail = text[0][:200] if text else type(exc).__name__
            raise DeviceError(
                f"{self.runtime} failed to run {self.graph.path.name} on a "
                f"{data.shape[3]}x{data.shape[2]} input ({detail}); try {opt('tile', 256)}"
            ) from exc
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)  # ours: no copy
