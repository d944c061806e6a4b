"""Run settings: frozen dataclasses built once (by the CLI or the Python API) and passed down.

Presets are merged here and nowhere else (:func:`merge_preset`): defaults < preset < explicit
options. Finding and reading preset files is :mod:`vidsr.presets`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from vidsr.errors import UsageError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: The values of the auto/on/off switches (``--device-colour``, ``--hw-decode``).
SWITCH = ("auto", "on", "off")


@dataclass(frozen=True)
class InferConfig:
    """How the model runs.

    model: a registry name, an imported model name, or a path to a weights file.
    device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` (CUDA only), ``bf16``.
    tile: tile edge in input pixels, 0 = whole frame. tile_pad: overlap around each tile.
    scale: final scale factor (None = the model's own); the result is resized to it.
    denoise_strength: realesr-general-x4v3 only: blend of the plain and wdn weights.
    lanes: CPU only: batches run at once, each on a share of torch's threads (0 = auto,
    see :mod:`vidsr.pipeline.lanes`); CUDA always runs one.
    device_colour: where video YUV<->RGB runs: ``auto`` (on the device on CUDA), ``on``
    (on the device, the CPU included), ``off`` (numpy on the CPU).
    compile: run the network through ``torch.compile`` (compiled on the first frames).
    hw_decode: NVDEC decoding: ``auto`` (when the model runs on CUDA), ``on`` (always try),
    ``off`` (the default: no GPU benchmark has shown it helps yet); it falls back to software
    decoding where NVDEC does not open.
    """

    model: str = "realesr-animevideov3"
    device: str = "auto"
    precision: str = "auto"
    tile: int = 0
    tile_pad: int = 10
    scale: float | None = None
    denoise_strength: float | None = None
    lanes: int = 0
    device_colour: str = "auto"
    compile: bool = False
    hw_decode: str = "off"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if self.tile < 0:
            raise UsageError("--tile must be 0 (whole frame) or a positive number of pixels")
        if 0 < self.tile < 8:
            raise UsageError("--tile must be at least 8 pixels (or 0 for whole frames)")
        if self.tile_pad < 0:
            raise UsageError("--tile-pad must be >= 0")
        if self.scale is not None and not (0 < self.scale <= 16):
            raise UsageError("--scale must be in (0, 16]")
        for flag, value in (
            ("--hw-decode", self.hw_decode),
            ("--device-colour", self.device_colour),
        ):
            if value not in SWITCH:
                raise UsageError(f"{flag} must be one of {', '.join(SWITCH)}, not {value!r}")
        if self.lanes < 0:
            raise UsageError("--lanes must be 0 (auto) or positive")
        if self.denoise_strength is not None and not (0.0 <= self.denoise_strength <= 1.0):
            raise UsageError("--denoise-strength must be between 0 and 1")


def merge_preset(
    options: Mapping[str, Any], preset: Mapping[str, Any], explicit: Collection[str]
) -> dict[str, Any]:
    """``options`` with each of ``preset``'s values applied unless that option was given
    explicitly: an explicit option beats the preset, which beats the default. All three use the
    option's parameter name (``pix_fmt``)."""
    merged = dict(options)
    for name, value in preset.items():
        if name not in explicit:
            merged[name] = value
    return merged
