"""The OpenVINO runtime (``--runtime openvino``): the same torch module, converted in memory
(``openvino.convert_model``, no ONNX file) with a dynamic input shape, compiled once per input
shape (cached), run on OpenVINO's CPU plugin or on an Intel GPU (``--device intel:gpu``).

OpenVINO is an optional extra (``pip install 'vidsr[openvino]'``); this module imports it
only when a runtime is built. Inference precision: f32 unless the run asks for bf16 (CPU) or
fp16 (Intel GPU; its default there). Threads: all of torch's on the CPU, in one stream (a
lane's threads when the run has lanes: each lane then has its own compiled model).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from vidsr.errors import DeviceError, opt

#: --precision -> OpenVINO's inference precision hint.
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def available() -> bool:
    """Whether OpenVINO imports here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def devices() -> list[str]:
    """OpenVINO's devices here (``CPU``, ``GPU``, ``GPU.0`` ...); empty without OpenVINO."""
    if not available():
        return []
    import openvino as ov

    return list(ov.Core().available_devices)


def target(device: str) -> str:
    """The OpenVINO device of a ``--device`` spelling: ``intel:gpu`` -> ``GPU``,
    ``intel:gpu.1`` -> ``GPU.1``, anything else (the CPU) -> ``CPU``."""
    spec = device.strip().lower()
    if spec.startswith("intel:gpu"):
        return "GPU" + spec.removeprefix("intel:gpu").upper()
    return "CPU"


def check_device(device: str) -> None:
    """Refuse (one line) an OpenVINO device that is not here, or OpenVINO itself missing."""
    if not available():
        raise DeviceError(
            f"{opt('runtime', 'openvino')} needs OpenVINO: pip install 'vidsr[openvino]' "
            f"(or {opt('runtime', 'torch')})"
        )
    name = target(device)
    here = devices()
    if name not in here and not (name == "GPU" and any(d.startswith("GPU") for d in here)):
        raise DeviceError(
            f"{opt('device', device)}: OpenVINO finds no {name} on this machine (it has "
            f"{', '.join(here) or 'nothing'}); use {opt('device', 'cpu')}"
        )


class OpenVINOModule:
    """``module`` as OpenVINO runs it: ``self(x)`` takes and returns (N, 3, H, W) float32 CPU
    tensors, like the module. Compiled models are cached per input shape; each call has its
    own infer request (lanes call from several threads)."""

    def __init__(
        self, module: torch.nn.Module | None, *, device: str = "CPU", precision: str = "fp32",
        threads: int = 0, static: bool = False, model: Any = None,
    ) -> None:  # fmt: skip
        import openvino as ov

        self.core = ov.Core()
        self.device = device
        self.precision = precision
        self.threads = threads or torch.get_num_threads()
        # static: converted again for each input shape, with that input as the example - for
        # architectures whose forward reads the input's size in Python (window attention,
        # padding to a multiple), which a dynamic conversion would freeze at the example's
        self.static = static
        self.source = module
        self.model = model
        if model is None and not static:
            self.model = self._convert(torch.zeros(1, 3, 32, 32), dynamic=True)
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls, path: Any, *, device: str = "CPU", precision: str = "fp32"
    ) -> OpenVINOModule:
        """An ONNX (or OpenVINO IR) file, read by OpenVINO; ``DeviceError`` if it cannot."""
        import openvino as ov

        try:
            model = ov.Core().read_model(str(path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DeviceError(f"OpenVINO cannot read {path} ({first})") from exc
        return cls(None, device=device, precision=precision, model=model)

    def _convert(self, example: torch.Tensor, *, dynamic: bool) -> Any:
        import openvino as ov

        assert self.source is not None
        shape = [-1, 3, -1, -1] if dynamic else list(example.shape)
        # not inference_mode (the converter traces the module): off even inside a call
        with torch.inference_mode(False), torch.no_grad():
            try:
                return ov.convert_model(
                    self.source.float().eval(), example_input=example.clone(),
                    input=[ov.PartialShape(shape)],
                )  # fmt: skip
            except Exception as exc:  # tracing and conversion failures of every kind
                text = str(exc).strip().splitlines()
                detail = text[0][:200] if text else type(exc).__name__
                raise DeviceError(
                    f"OpenVINO cannot convert this model ({detail}); use {opt('runtime', 'torch')}"
                ) from exc

    def config(self) -> dict[str, Any]:
        hint = _HINTS.get(self.precision, "f32")
        out: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self.device == "CPU":
            # One stream on every thread (two streams under two lanes measured the same here),
            # not pinned: the encoder process shares these cores (pinned: 1.12x torch end to
            # end at 640x480 in one A/B, unpinned 1.41x; docs/BENCHMARKS.md).
            out |= {
                "INFERENCE_NUM_THREADS": self.threads,
                "NUM_STREAMS": 1,
                "ENABLE_CPU_PINNING": False,
            }
        return out

    def compiled(self, shape: tuple[int, ...]) -> Any:
        """The model compiled for input ``shape`` (once)."""
        with self._lock:
            found = self._compiled.get(shape)
            if found is None:
                if self.static:
                    model = self._convert(torch.rand(*shape), dynamic=False)
                else:
                    model = self.model.clone()
                    model.reshape({model.inputs[0]: list(shape)})
                try:
                    found = self.core.compile_model(model, self.device, self.config())
                except RuntimeError as exc:
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                    raise DeviceError(
                        f"OpenVINO cannot compile the model for {self.device} at "
                        f"{self.precision} ({first}); use {opt('runtime', 'torch')}"
                    ) from exc
                self._compiled[shape] = found
            return found

    def with_precision(self, precision: str) -> OpenVINOModule:
        """The same converted model at another precision (new compiled models)."""
        other = object.__new__(OpenVINOModule)
        other.__dict__.update(self.__dict__)
        other.precision = precision
        other._compiled = {}
        other._lock = threading.Lock()
        return other

    def infer(self, data: np.ndarray) -> np.ndarray:
        """One run on an array of the model's input type; a copy of its output."""
        data = np.ascontiguousarray(data)
        request = self.compiled(tuple(data.shape)).create_infer_request()
        return np.array(request.infer({0: data})[0], copy=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().to(torch.float32).cpu().numpy()
        return torch.from_numpy(self.infer(data))
