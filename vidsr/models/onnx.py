"""ONNX model files (``-m FILE.onnx``): what the graph takes and gives, read without torch.

The graph is read by OpenVINO (``openvino.Core.read_model``) where it is installed, else by
ONNX Runtime; one of them is needed to run it anyway (:mod:`vidsr.pipeline.onnx_run`). From
the graph: its input name, batch and picture size (each fixed or dynamic), its element type
(fp32 or fp16), and the channel counts. The scale comes from OpenVINO's shape inference at a
probe size, else from one probe run; a graph whose output is not a whole multiple of its
input, or that is not 3-channel RGB, is refused in one line.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidsr.errors import ModelError

INSTALL_HINT = "pip install 'vidsr[openvino]' (CPUs, Intel GPUs) or 'vidsr[onnx]' (ONNX Runtime)"

#: Probe size for graphs with a dynamic picture size: a multiple of every window size the
#: usual architectures need (8, 16, 32, 64).
PROBE = 64


@dataclass(frozen=True)
class OnnxGraph:
    """An ONNX super-resolution graph. ``batch``/``size``: the fixed batch and (height,
    width), None where dynamic (a fixed side is run in windows of that size; ``size`` is
    None when both are dynamic). ``dtype``:
    ``fp32`` or ``fp16`` (what the input tensor must be). ``params``: weights' element
    count (0 where no reader could count them). ``digest``: sha256 of the file."""

    path: Path
    input: str
    batch: int | None
    size: tuple[int | None, int | None] | None
    dtype: str
    channels: int
    out_channels: int
    scale: int
    params: int
    digest: str


def available() -> bool:
    """Whether a runtime that reads ONNX files imports here."""
    for name in ("openvino", "onnxruntime"):
        with contextlib.suppress(ImportError):
            __import__(name)
            return True
    return False


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def uses_external_data(path: Path) -> bool:
    """Whether the graph keeps weights in files beside it (checked with the onnx package
    where installed; False where it is not)."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    return False


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dim(value: Any) -> int | None:
    """A static dimension as int, None where dynamic."""
    if isinstance(value, int) and value > 0:
        return value
    return None


def _read_openvino(path: Path) -> tuple[str, list[int | None], str, Any]:
    import openvino as ov

    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise ModelError(f"cannot read {path}: not a valid ONNX model ({_first(exc)})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"{path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; vidsr "
            "runs graphs with one image in and one image out"
        )
    port = model.inputs[0]
    shape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
    dtype = "fp16" if port.get_element_type() == ov.Type.f16 else "fp32"
    name = port.get_any_name() if port.get_names() else "input"
    return name, dims, dtype, model


def _read_onnxruntime(path: Path) -> tuple[str, list[int | None], str, Any]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise ModelError(f"cannot read {path}: not a valid ONNX model ({_first(exc)})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; vidsr runs graphs "
            "with one image in and one image out"
        )
    dtype = "fp16" if inputs[0].type == "tensor(float16)" else "fp32"
    return inputs[0].name, [_dim(d) for d in inputs[0].shape], dtype, session


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _probe_shape(dims: list[int | None]) -> list[int]:
    return [dims[0] or 1, dims[1] or 3, dims[2] or PROBE, dims[3] or PROBE]


def _out_shape(reader: Any, probe: list[int], dtype: str) -> tuple[int, ...]:
    """The output shape at input ``probe``: OpenVINO's shape inference (or a compiled run
    where it cannot tell), or an ONNX Runtime run."""
    if hasattr(reader, "reshape"):  # an OpenVINO model
        import openvino as ov

        model = reader.clone()
        model.reshape({model.inputs[0]: probe})
        shape = model.outputs[0].get_partial_shape()
        if shape.is_static:
            return tuple(int(d.get_length()) for d in shape)
        compiled = ov.Core().compile_model(model, "CPU")
        x = np.zeros(probe, dtype=np.float16 if dtype == "fp16" else np.float32)
        return tuple(compiled.create_infer_request().infer({0: x})[0].shape)
    x = np.zeros(probe, dtype=np.float16 if dtype == "fp16" else np.float32)
    return tuple(reader.run(None, {reader.get_inputs()[0].name: x})[0].shape)


def _params(path: Path, reader: Any) -> int:
    """Element count of the graph's weights: the onnx package's initializers where it is
    installed, else OpenVINO's float constants (0 where neither can count them). A graph
    holds its weights after the exporter's folding, so this can differ a little from the
    source network's parameter count."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer))
    total = 0
    if hasattr(reader, "get_ops"):
        for op in reader.get_ops():
            if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real():
                shape = op.get_output_partial_shape(0)
                if shape.is_static:
                    total += int(np.prod([d.get_length() for d in shape], dtype=np.int64))
    return total


def inspect_onnx(path: str | Path) -> OnnxGraph:
    """What ``path``'s graph takes and gives (see :class:`OnnxGraph`); ``ModelError`` in one
    line for a file no runtime reads, a graph that is not one 3-channel image in and out, a
    scale that is not whole, or no ONNX runtime installed."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    readers = [r for r in ("openvino", "onnxruntime") if _importable(r)]
    if not readers:
        raise ModelError(f"{path} is an ONNX model; running it needs {INSTALL_HINT}")
    for i, reader_name in enumerate(readers):  # OpenVINO first; ONNX Runtime where it fails
        try:
            read = _read_openvino if reader_name == "openvino" else _read_onnxruntime
            name, dims, dtype, reader = read(path)
            break
        except ModelError:
            if i == len(readers) - 1:
                raise
    if len(dims) != 4:
        rank = len(dims) if dims else "unknown"
        raise ModelError(f"{path}: its input has rank {rank}; vidsr runs (N, C, H, W) images")
    if dims[1] not in (None, 3):
        raise ModelError(
            f"{path} takes {dims[1]}-channel images; vidsr runs 3-channel RGB models only"
        )
    probe = _probe_shape(dims)
    try:
        out = _out_shape(reader, probe, dtype)
    except Exception as exc:  # either runtime's own failure
        raise ModelError(f"{path}: a probe run at {probe} failed ({_first(exc)})") from None
    if len(out) != 4 or out[1] != 3:
        raise ModelError(
            f"{path} gives {out[1] if len(out) == 4 else out}-channel output; vidsr runs "
            "3-channel RGB models only"
        )
    scale = out[2] // probe[2]
    if scale < 1 or out[2] != probe[2] * scale or out[3] != probe[3] * scale:
        raise ModelError(
            f"{path}: input {probe[2]}x{probe[3]} gives {out[2]}x{out[3]}, not a whole scale"
        )
    return OnnxGraph(
        path=path,
        input=name,
        batch=dims[0],
        size=(dims[2], dims[3]) if dims[2] or dims[3] else None,
        dtype=dtype,
        channels=3,
        out_channels=3,
        scale=scale,
        params=_params(path, reader),
        digest=file_digest(path),
    )
