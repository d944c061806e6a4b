"""GPU memory for the model step: how many frames a batch may hold, and what a batch that did
not fit taught.

One owner for the policy (issue 12):

- **Measured, not assumed.** The first time a network meets a frame size, one probe forward
  of a single frame reads the device's peak allocation (:class:`CudaMemory`): what one more
  frame costs that network at that precision - RRDBNet several times what SRVGGNetCompact
  does. The step's other device temporaries (the uploaded samples, the colour conversion's
  float planes, the quantised output) are added by formula (:func:`step_temporaries`).
- **Sized from what is really free**: free device memory plus the blocks PyTorch's caching
  allocator holds unused, with headroom, shared by every user of the device at once (chunks
  encoded in parallel on one model, worker slots on one GPU).
- **No tensor past 2^31 elements.** The probe also records the largest activation of one
  frame (forward hooks); many CUDA kernels index with 32 bits, so a batch stays below that.
- **Kept.** What was measured, and what an out-of-memory retry learned (the largest batch
  that ran, or the tile size frames of that size need), is kept in the network's
  :class:`MemoryState` for every later chunk, so a job does not run out of memory at the
  start of each chunk again.

:class:`CudaMemory` is the only part that touches CUDA; tests give a stand-in for the device
(the arithmetic and the learning are the same).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from vidsr.errors import GpuMemoryError, VidsrError

#: Largest element count many CUDA kernels (cuDNN convolutions, upsampling) index.
INT32_ELEMENTS = 2**31 - 1
#: The share of the memory found free that batches may take.
HEADROOM = 0.85
MAX_BATCH = 16


#: How CUDA (and the libraries on it) say they ran out of memory.
_OOM_TEXTS = (
    "CUDA out of memory",
    "out of memory",  # "CUDA error: out of memory", "CUDA driver error: out of memory"
    "STATUS_ALLOC_FAILED",  # cuBLAS, cuDNN
    "cudaErrorMemoryAllocation",
    "CUFFT_ALLOC_FAILED",
    "Unable to find a valid cuDNN algorithm",  # cuDNN with no room for its workspace
)
#: How kernels refuse a tensor past 32-bit indexing (a smaller batch or tile runs).
_TOO_LARGE_TEXTS = (
    "canUse32BitIndexMath",
    "32-bit index",
    "2^31",
    "2**31",
    "INT_MAX",
    "less than 2147483648",
    "CUDNN_STATUS_NOT_SUPPORTED",
)


def needs_smaller(exc: BaseException) -> str | None:
    """Whether ``exc`` (or any exception in its chain of causes) says the work was too big
    for the device: ``"memory"`` (CUDA out of memory in any of its spellings, or vidsr's own
    :class:`~vidsr.errors.GpuMemoryError`), ``"size"`` (a tensor past what a kernel can
    index), else None."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, torch.cuda.OutOfMemoryError | GpuMemoryError):
            return "memory"
        # torch's and CUDA's errors by their text; vidsr's own (an encoder's "out of memory"
        # from NVENC's session limit, say) are not the model's memory
        if isinstance(seen, RuntimeError) and not isinstance(seen, VidsrError):
            text = str(seen)
            if any(t in text for t in _OOM_TEXTS):
                return "memory"
            if any(t in text for t in _TOO_LARGE_TEXTS):
                return "size"
        seen = seen.__cause__ or seen.__context__
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """The out-of-memory rule (Ray retries such a task): :func:`needs_smaller` says memory."""
    return needs_smaller(exc) == "memory"


def release_cuda_memory() -> None:
    """Give the caching allocator's free blocks back after a failed attempt."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class DeviceMemory(Protocol):
    """What the batch sizer asks of a device."""

    def free(self) -> int:
        """Bytes a new batch may take: free on the device plus the allocator's unused cache."""
        ...

    def measure(self, run: Callable[[], Any]) -> int:
        """Peak bytes ``run()`` allocated above what was allocated before it."""
        ...


class CudaMemory:
    """:class:`DeviceMemory` of a CUDA device, from PyTorch's allocator statistics."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def free(self) -> int:
        free, _total = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return int(free + max(0, cached))

    def measure(self, run: Callable[[], Any]) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        run()
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device) - before)


@dataclass
class MemoryState:
    """What one network on one device has learned, by input frame size (height, width):
    ``frame_bytes`` one frame's measured cost, ``largest`` its largest activation (elements),
    ``max_batch`` the largest batch that may run (after an out-of-memory retry), ``tile`` the
    tile size frames of that size need (after even one frame did not fit)."""

    frame_bytes: dict[tuple[int, int], int] = field(default_factory=dict)
    largest: dict[tuple[int, int], int] = field(default_factory=dict)
    max_batch: dict[tuple[int, int], int] = field(default_factory=dict)
    tile: dict[tuple[int, int], int] = field(default_factory=dict)
    tiled: dict[int, Any] = field(default_factory=dict)  # tile size -> its Upscaler


def step_temporaries(height: int, width: int, scale: int) -> int:
    """Bytes one frame's step needs on the device besides the network's own peak: the
    uploaded samples and their float RGB (the colour conversion's float planes at most 8
    float32 values a pixel), and on the way out the float result, its conversion to YUV and
    the quantised codes (at most 8 float32 values an output pixel)."""
    return 4 * 8 * (height * width + height * width * scale * scale)


def largest_activation(module: torch.nn.Module, run: Callable[[], Any]) -> int:
    """The largest tensor (elements) any layer of ``module`` takes or gives while ``run()``
    runs it: inputs count too (a concatenation or an interpolation feeds the next layer)."""
    largest = 0

    def hook(_m: torch.nn.Module, inputs: Any, output: Any) -> None:
        nonlocal largest
        for t in (*inputs, output):
            if isinstance(t, torch.Tensor):
                largest = max(largest, t.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return largest


def batch_size(
    upscaler: Any,
    height: int,
    width: int,
    *,
    sharers: int = 1,
    memory: DeviceMemory | None = None,
) -> int:
    """How many ``height`` x ``width`` frames one batch of ``upscaler`` may hold.

    On the CPU: 1 (batching does not help there, measured). On CUDA (or with a ``memory``
    stand-in): what :data:`HEADROOM` of the memory found free holds, shared by ``sharers``
    users of the device at once, at the measured cost of one frame plus its temporaries; at
    most :data:`MAX_BATCH`, below 2^31 elements in the largest activation, and never more
    than an earlier out-of-memory retry let run. 1 when even the probe frame did not fit
    (the step then finds the tile size)."""
    if memory is None:
        if upscaler.device.type != "cuda":
            return 1
        memory = CudaMemory(upscaler.device)
    if getattr(upscaler, "runtime", "torch") == "onnxruntime":
        return 1  # ONNX Runtime's own memory arena: torch's counters do not see it
    state: MemoryState = upscaler.memory
    key = (height, width)
    if key in state.tile or state.max_batch.get(key) == 1:
        return 1
    if key not in state.frame_bytes:
        module = upscaler.module

        def forward() -> None:
            upscaler(torch.zeros((1, 3, height, width), device=upscaler.device))

        try:
            if not hasattr(module, "inner"):
                peak = memory.measure(lambda: _record_largest(state, key, module, forward))
            else:  # compiled: hooks do not see inside the graph
                peak = memory.measure(forward)
        except RuntimeError as exc:
            if needs_smaller(exc) is None:
                raise
            release_cuda_memory()
            state.max_batch[key] = 1
            return 1
        state.frame_bytes[key] = peak + step_temporaries(height, width, upscaler.net_scale)
    per_frame = max(1, state.frame_bytes[key])
    n = int(memory.free() * HEADROOM / max(1, sharers) // per_frame)
    largest = state.largest.get(key, 0)
    if largest:
        n = min(n, INT32_ELEMENTS // largest)
    return max(1, min(n, MAX_BATCH, state.max_batch.get(key, MAX_BATCH)))


def _record_largest(
    state: MemoryState, key: tuple[int, int], module: torch.nn.Module, run: Callable[[], None]
) -> None:
    state.largest[key] = largest_activation(module, run)
