"""Resolution: what a run really uses, decided once, before any work.

- :func:`placement`: where the chunks run - the worker slots of the local backend (``--device``,
  or ``--devices`` with ``all`` expanded, times ``--workers-per-device``), each device checked
  to exist, or Ray (whose cluster decides the device type when ``--device auto``);
- :func:`resolve`: the settings with every ``auto`` this run can decide replaced - precision
  (fp16 on CUDA, fp32 on the CPU), device colour and NVDEC (on with CUDA), the codec (``auto``
  on the CPU: libx264; on CUDA it depends on each file's output size and bit depth, and the
  plan decides it: :func:`vidsr.media.encode.auto_codec`), the scale (the model's own) - for
  the device type the placement gives. Every later step (plan, fingerprint, chunks, workers)
  reads the resolved settings, so ``--device``, ``--devices all`` and ``--codec auto`` always
  agree.

The device and precision rules themselves are :func:`vidsr.pipeline.infer.resolve_device` and
:func:`~vidsr.pipeline.infer.resolve_precision`, which worker processes use too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vidsr.errors import UsageError, opt
from vidsr.settings import Settings


@dataclass(frozen=True)
class Placement:
    """Where a run's chunks go. ``slots``: one torch device per local worker slot (one slot:
    in this process); empty for Ray. ``device_type``: ``cpu`` or ``cuda``, or None when the
    Ray cluster decides (known once connected)."""

    backend: str
    slots: tuple[str, ...]
    device_type: str | None

    @property
    def in_process(self) -> bool:
        """Whether chunks run in this process (one local slot)."""
        return self.backend == "local" and len(self.slots) == 1


def expand_devices(devices: Sequence[str], workers_per_device: int) -> list[str]:
    """``["all"]`` -> every CUDA device (or the CPU when there is none); each device is
    repeated ``workers_per_device`` times: one worker slot each."""
    import torch

    out: list[str] = []
    for d in devices:
        d = d.strip().lower()
        if d == "all":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            out.extend([f"cuda:{i}" for i in range(n)] or ["cpu"])
        elif d:
            out.append(d)
    return [d for d in out for _ in range(workers_per_device)]


def _device_type(spec: str) -> str | None:
    spec = spec.strip().lower()
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        return "cuda"
    return None  # auto


def placement(settings: Settings) -> Placement:
    """The run's :class:`Placement`; ``UsageError``/``DeviceError`` for devices that are absent
    or cannot be mixed."""
    if settings.backend == "ray":
        if settings.devices:
            raise UsageError(
                f"{opt('devices')} is for the local backend; with {opt('backend', 'ray')} use "
                f"{opt('device')} (auto, cpu or cuda) and Ray places the chunks"
            )
        return Placement("ray", (), _device_type(settings.device))
    from vidsr.pipeline.infer import resolve_device

    specs = expand_devices(settings.devices or (settings.device,), settings.workers_per_device)
    # an Intel GPU keeps its spelling: OpenVINO runs there, the tensors stay on the CPU
    slots = tuple(s if s.startswith("intel:") else str(resolve_device(s)) for s in specs)
    types = sorted({_device_type(s) or "cpu" for s in slots})
    if len(types) > 1:
        raise UsageError(
            f"{opt('devices')} mixes CPU and CUDA devices ({', '.join(slots)}), whose outputs "
            "differ (precision, colour path): use devices of one kind"
        )
    return Placement("local", slots, types[0])


def resolve_switch(value: str, device_type: str) -> str:
    """An auto/on/off switch that follows the device (device colour, NVDEC): ``auto`` is on
    with CUDA, off on the CPU."""
    if value != "auto":
        return value
    return "on" if device_type == "cuda" else "off"


def resolve(settings: Settings, device_type: str) -> Settings:
    """``settings`` with every default this run can decide made explicit, for a run on
    ``device_type`` (``cpu`` or ``cuda``): ``precision``, ``device_colour``, ``hw_decode``,
    ``scale`` (the model's own, unless a size option sets the output size), ``denoise_strength`` (the blend's default for
    realesr-general-x4v3), and the codec with its ``crf`` / ``encoder_preset`` defaults
    (:func:`with_codec`), so that spelling a default out is the same job as leaving it out.
    ``--codec auto`` on CUDA depends on each file's output size and bit depth: it stays
    ``auto`` here and :func:`vidsr.run.plan.plan_video` decides it per file. The model and
    encoder are checked: ``DeviceError`` for a precision the device cannot run, ``ModelError``
    for an unknown model, ``UsageError`` for an unknown encoder."""
    import torch

    from vidsr.models.loader import DEFAULT_DENOISE_STRENGTH, describe_model
    from vidsr.models.registry import find_record
    from vidsr.pipeline.infer import precision_name, resolve_precision

    facts = describe_model(settings.model)
    dev = torch.device(device_type)
    if facts.loader == "onnx":  # its runtime's rule (vidsr.pipeline.onnx_run)
        from vidsr.pipeline.onnx_run import onnx_precision, pick_runtime

        device = settings.device if settings.device.lower().startswith("intel:") else device_type
        runtime = pick_runtime(settings.runtime, device, facts.name)
        precision = onnx_precision(settings.precision, runtime, facts.dtype, device)
    else:
        precision = precision_name(
            resolve_precision(settings.precision, dev, facts.precisions, facts.name)
        )
    scale = settings.scale if settings.scale is not None else float(facts.scale)
    if any(v is not None for v in (settings.size, settings.width, settings.height)):
        scale = None  # the size options set the output size (one way only: the option table)
    record = find_record(settings.model)
    strength = settings.denoise_strength
    if strength is None and record is not None and record.denoise_pair is not None:
        strength = DEFAULT_DENOISE_STRENGTH
    resolved = settings.replace(
        precision=precision,
        device_colour=resolve_switch(settings.device_colour, device_type),
        hw_decode=resolve_switch(settings.hw_decode, device_type),
        scale=scale,
        denoise_strength=strength,
    )
    if settings.codec == "auto" and device_type == "cuda":
        return resolved
    return with_codec(resolved, "libx264" if settings.codec == "auto" else settings.codec)


#: ``--runtime auto`` takes OpenVINO on the CPU for model inputs of at least this many pixels
#: (320x240): docs/BENCHMARKS.md measured it 1.4-1.5x faster than torch at 640x480 and about
#: even at 128x72 on the development machines.
OPENVINO_MIN_PIXELS = 320 * 240


def resolve_runtime(settings: Settings, size: tuple[int, int], device_type: str) -> str:
    """What runs the model for a model input of ``size`` (w, h): ``--runtime`` where given
    (OpenVINO refused in one line where it is not installed, or beside CUDA); an Intel GPU
    always OpenVINO; an ONNX model OpenVINO or ONNX Runtime
    (:func:`vidsr.pipeline.onnx_run.pick_runtime`); ``auto`` OpenVINO on the CPU where it is
    installed and the frames are large enough (:data:`OPENVINO_MIN_PIXELS`) for vidsr's own
    architectures, torch otherwise (community architectures: torch, unmeasured)."""
    from vidsr.models.loader import describe_model
    from vidsr.pipeline import openvino

    devices = getattr(settings, "devices", ())  # bench and preview have one device
    intel_devices = [
        d for d in (settings.device, *devices) if d.strip().lower().startswith("intel:")
    ]
    runtime = settings.runtime
    facts = describe_model(settings.model)
    if facts.loader == "onnx":
        from vidsr.pipeline.onnx_run import pick_runtime

        device = intel_devices[0] if intel_devices else device_type
        return pick_runtime(runtime, device, facts.name)
    if runtime == "onnxruntime":
        raise UsageError(
            f"{opt('runtime', 'onnxruntime')} runs .onnx model files; {facts.name} is a "
            f"{facts.arch}: use {opt('runtime', 'torch')} or {opt('runtime', 'openvino')}"
        )
    if intel_devices:
        if runtime == "torch":
            raise UsageError(f"{opt('device', settings.device)} runs with OpenVINO, not torch")
        for d in intel_devices:
            openvino.check_device(d)  # refused before any work where there is none
        return "openvino"
    if runtime == "openvino" and device_type == "cuda":
        raise UsageError(
            f"{opt('runtime', 'openvino')} runs on CPUs and Intel GPUs; on CUDA use "
            f"{opt('runtime', 'torch')} (or {opt('device', 'cpu')})"
        )
    if runtime == "openvino":
        openvino.check_device("cpu")
        return runtime
    if runtime == "torch" or device_type != "cpu" or getattr(settings, "backend", "") == "ray":
        return "torch"
    if settings.compile or facts.loader != "vidsr":  # compile is torch's; see the docstring
        return "torch"
    w, h = size
    return "openvino" if openvino.available() and w * h >= OPENVINO_MIN_PIXELS else "torch"


def label_scale(settings: Settings) -> float:
    """The scale an output's default name says: ``--scale``, else the model's own."""
    from vidsr.models.loader import expected_scale

    return settings.scale if settings.scale is not None else float(expected_scale(settings.model))


def with_codec(settings: Settings, codec: str) -> Settings:
    """``settings`` writing with ``codec`` (checked: ``UsageError`` for an unknown encoder),
    its ``crf`` and ``encoder_preset`` defaults made explicit where not given."""
    from vidsr.media.encode import CODEC_DEFAULTS, encoder_pix_fmts

    encoder_pix_fmts(codec)  # an unknown encoder is a UsageError here, before any work
    defaults = CODEC_DEFAULTS.get(codec, {})
    crf = settings.crf
    if crf is None and (defaults.get("crf") or defaults.get("cq")):
        crf = float(defaults.get("crf") or defaults["cq"])
    return settings.replace(
        codec=codec, crf=crf, encoder_preset=settings.encoder_preset or defaults.get("preset")
    )
