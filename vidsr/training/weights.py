"""Weights the training needs besides the generator: VGG19 for the perceptual loss and
Real-ESRGAN's released discriminators.

Both are cached in ``$VIDSR_HOME/models`` as safetensors (fp32, written atomically) with no
``arch`` in their header, so ``vidsr models list`` and the upscaler never take them for
generators:

- ``vgg19-features.safetensors``: the 16 convs (``features.N.weight``/``bias``) of torchvision's
  ImageNet VGG19, from ``VGG19_URL`` (``$VIDSR_VGG_URL`` replaces the whole URL, for a mirror).
  torchvision checks a download only by the 8 hex digits in its file name, the start of the
  file's sha256; vidsr checks the same (the full digest is not published, and none is known
  here offline).
- ``<model>_netD.safetensors``: the discriminator for the generator ``<model>``, downloaded from
  :data:`DISCRIMINATORS` (``$VIDSR_MODEL_BASE_URL`` replaces the release prefix, as for models)
  or imported with :func:`import_discriminator`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from vidsr.errors import ModelError, OutputError, opt
from vidsr.files import atomic_output
from vidsr.home import models_dir
from vidsr.models.arch import UNetDiscriminatorSN
from vidsr.models.registry import LICENSE, OFFICIAL_BASE_URL, find_record
from vidsr.models.sources import (
    ENV_BASE_URL,
    NetworkError,
    Progress,
    check_model_name,
    download,
)
from vidsr.models.weights import read_safetensors, read_weights_file
from vidsr.training.losses import PerceptualLoss, vgg19_feature_shapes

# --- VGG19 ------------------------------------------------------------------------------------

#: torchvision's ImageNet VGG19 (``VGG19_Weights.IMAGENET1K_V1``), 548 MB with the classifier.
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
#: The start of the file's sha256, as in its name (torchvision's ``check_hash`` rule).
VGG19_SHA256_PREFIX = "dcbb9e9d"
ENV_VGG_URL = "VIDSR_VGG_URL"
VGG19_CACHE_NAME = "vgg19-features"
#: What a VGG19 conv state dict holds; a module constant so a test can stand in a smaller one.
VGG19_SHAPES: Mapping[str, tuple[int, ...]] = vgg19_feature_shapes()


def vgg19_url() -> str:
    """``$VIDSR_VGG_URL`` if set, else torchvision's official URL."""
    return os.environ.get(ENV_VGG_URL) or VGG19_URL


def vgg19_cache_path() -> Path:
    """``HOME/models/vgg19-features.safetensors``."""
    return models_dir() / f"{VGG19_CACHE_NAME}.safetensors"


def _vgg19_problem(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``state_dict`` does not hold VGG19's convs (one phrase), or None when it does."""
    for key, shape in VGG19_SHAPES.items():
        value = state_dict.get(key)
        if not isinstance(value, torch.Tensor):
            return f"no {key}"
        if tuple(value.shape) != tuple(shape):
            return f"{key} is {tuple(value.shape)}, VGG19's is {tuple(shape)}"
    extra = sorted(k for k in state_dict if k.startswith("features.") and k not in VGG19_SHAPES)
    if extra:
        return f"{extra[0]} is not a VGG19 conv (a VGG with batch norm?)"
    return None


def is_vgg19_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` holds torchvision VGG19's 16 convs with their shapes (other
    keys, such as ``classifier.*``, are allowed; other ``features.*`` keys are not)."""
    return _vgg19_problem(state_dict) is None


def _vgg19_features(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    problem = _vgg19_problem(state_dict)
    if problem is not None:
        raise ModelError(f"{source} is not torchvision's VGG19 ({problem})")
    return {k: state_dict[k].detach().to("cpu", torch.float32).contiguous() for k in VGG19_SHAPES}


def _write_tensors(
    final: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]
) -> Path:
    """Write ``tensors`` (fp32) to ``final`` atomically with ``metadata`` in the header."""
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {final.parent}: {exc.strerror or exc}") from exc
    with atomic_output(final) as tmp:
        save_file(data, str(tmp), metadata={"format": "pt", **metadata})
    return final


def _write_vgg19(features: Mapping[str, torch.Tensor], source: str) -> Path:
    return _write_tensors(
        vgg19_cache_path(), features, {"vidsr_training": "vgg19-features", "source": source}
    )


def vgg19_offline_message(url: str | None = None) -> str:
    """The one line that tells a user how to get the VGG19 weights without a network."""
    url = url or vgg19_url()
    filename = url.rsplit("/", 1)[-1] or "vgg19-dcbb9e9d.pth"
    return (
        f"VGG19 weights for the perceptual loss are not available offline; download {url} "
        f"and run: vidsr models import {filename} (or train with {opt('perceptual_weight', 0)})"
    )


def vgg19_state_dict(
    progress: Progress | None = None, allow_download: bool = True
) -> dict[str, torch.Tensor]:
    """VGG19's conv weights (``features.N.weight``/``bias``, fp32, CPU) for
    :class:`~vidsr.training.losses.PerceptualLoss`: from the cache, else downloaded from
    :func:`vgg19_url` (size and sha256-prefix checked), reduced to the convs and cached.
    ``progress(done_bytes, total_bytes)`` follows a download.

    Raises ``ModelError``; offline (or with ``allow_download`` False) its one line says where
    to download the file and how to import it.
    """
    path = vgg19_cache_path()
    if path.is_file():
        with contextlib.suppress(ModelError):  # a damaged entry: fetch it again
            return _vgg19_features(read_safetensors(path)[0], str(path))
    url = vgg19_url()
    if not allow_download:
        raise ModelError(vgg19_offline_message(url))
    try:
        downloaded = download(url, progress, VGG19_SHA256_PREFIX, "VGG19 weights", prefix=True)
    except NetworkError as exc:
        raise ModelError(vgg19_offline_message(url)) from exc
    try:
        features = _vgg19_features(read_weights_file(downloaded), url)
        with contextlib.suppress(OutputError):  # an unwritable cache costs a later download
            _write_vgg19(features, f"url:{url}")
    finally:
        downloaded.unlink(missing_ok=True)
    return features


def import_vgg19(path: str | Path, *, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Read torchvision's VGG19 file at ``path`` (``weights_only``: no code in it runs), keep
    the conv features after checking every shape, and write the cache entry; returns its path.
    ``state_dict``: the file's tensors when the caller has read them already (to tell what the
    file is), so the 548 MB are not read twice. ``ModelError`` (one line) if it is not VGG19."""
    path = Path(path)
    if state_dict is None:
        state_dict = read_weights_file(path)
    features = _vgg19_features(state_dict, str(path))
    return _write_vgg19(features, f"import:{path.name}")


def perceptual_loss(
    *, perceptual_weight: float = 1.0, progress: Progress | None = None, allow_download: bool = True
) -> PerceptualLoss:
    """Real-ESRGAN's perceptual loss with the ImageNet VGG19 (see :func:`vgg19_state_dict`)."""
    return PerceptualLoss(
        vgg19_state_dict(progress, allow_download), perceptual_weight=perceptual_weight
    )


# --- discriminators ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscriminatorRecord:
    """An official UNetDiscriminatorSN release file, for the generator named ``model``."""

    model: str
    url: str
    sha256: str | None
    license: str = LICENSE
    num_in_ch: int = 3
    num_feat: int = 64
    skip_connection: bool = True


#: Real-ESRGAN's released discriminators (docs/model_zoo.md; docs/Training.md for x4plus). No
#: digest is published for them. realesr-animevideov3 ("TODO" in the model zoo), the
#: realesr-general models and RealESRNet_x4plus (trained without a GAN) have none: their
#: training starts a fresh UNetDiscriminatorSN(num_feat=64, skip_connection=True).
DISCRIMINATORS: dict[str, DiscriminatorRecord] = {
    r.model: r
    for r in (
        DiscriminatorRecord(
            "RealESRGAN_x4plus", OFFICIAL_BASE_URL + "v0.2.2.3/RealESRGAN_x4plus_netD.pth", None
        ),
        DiscriminatorRecord(
            "RealESRGAN_x2plus", OFFICIAL_BASE_URL + "v0.2.2.3/RealESRGAN_x2plus_netD.pth", None
        ),
        DiscriminatorRecord(
            "RealESRGAN_x4plus_anime_6B",
            OFFICIAL_BASE_URL + "v0.2.2.4/RealESRGAN_x4plus_anime_6B_netD.pth",
            None,
        ),
    )
}

#: A new discriminator's settings (Real-ESRGAN's ``network_d``).
FRESH_DISCRIMINATOR = {"num_in_ch": 3, "num_feat": 64, "skip_connection": True}


def discriminator_cache_path(model_name: str) -> Path:
    """``HOME/models/<model>_netD.safetensors`` (a registry name in its registry spelling)."""
    record = find_record(model_name)
    name = record.name if record is not None else check_model_name(model_name)
    return models_dir() / f"{name}_netD.safetensors"


def discriminator_url(record: DiscriminatorRecord) -> str:
    """``record.url`` with the official prefix replaced by ``$VIDSR_MODEL_BASE_URL`` if set."""
    base = os.environ.get(ENV_BASE_URL)
    if base and record.url.startswith(OFFICIAL_BASE_URL):
        return base.rstrip("/") + "/" + record.url[len(OFFICIAL_BASE_URL) :]
    return record.url


def _discriminator_problem(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    conv0 = state_dict.get("conv0.weight")
    if not isinstance(conv0, torch.Tensor) or conv0.dim() != 4:
        return "no conv0.weight"
    expected = UNetDiscriminatorSN(num_in_ch=conv0.shape[1], num_feat=conv0.shape[0]).state_dict()
    for key, value in expected.items():
        got = state_dict.get(key)
        if not isinstance(got, torch.Tensor):
            return f"no {key}"
        if got.shape != value.shape:
            return f"{key} is {tuple(got.shape)}, expected {tuple(value.shape)}"
    extra = sorted(set(state_dict) - set(expected))
    return f"unexpected {extra[0]}" if extra else None


def is_discriminator_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is a UNetDiscriminatorSN's in the official key layout
    (``conv0.weight``, ``conv1.weight_orig``/``weight_u``/``weight_v``, ...), any width."""
    return _discriminator_problem(state_dict) is None


def _build_discriminator(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> UNetDiscriminatorSN:
    """A UNetDiscriminatorSN (width and input channels from ``conv0``, skip connections on, as
    every Real-ESRGAN release) loaded strictly from ``state_dict``; ``ModelError`` otherwise."""
    problem = _discriminator_problem(state_dict)
    if problem is not None:
        raise ModelError(f"{source} is not a UNetDiscriminatorSN ({problem})")
    conv0 = state_dict["conv0.weight"]
    net = UNetDiscriminatorSN(
        num_in_ch=conv0.shape[1], num_feat=conv0.shape[0], skip_connection=True
    )
    net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return net


def _write_discriminator(model_name: str, net: UNetDiscriminatorSN, source: str) -> Path:
    return _write_tensors(
        discriminator_cache_path(model_name),
        net.state_dict(),
        {"vidsr_training": "discriminator", "model": model_name, "source": source},
    )


def fresh_discriminator() -> UNetDiscriminatorSN:
    """A new UNetDiscriminatorSN(num_in_ch=3, num_feat=64, skip_connection=True) (PyTorch's
    default initialisation, from the global RNG)."""
    return UNetDiscriminatorSN(**FRESH_DISCRIMINATOR)


def discriminator_for(
    model_name: str, progress: Progress | None = None, allow_download: bool = True
) -> tuple[UNetDiscriminatorSN, str]:
    """The discriminator to fine-tune the generator ``model_name`` against (fp32, CPU, train
    mode), and where it came from:

    - ``"cache"``: ``HOME/models/<model>_netD.safetensors`` (downloaded or imported before);
    - ``"official:<url>"``: Real-ESRGAN's release file (:data:`DISCRIMINATORS`), downloaded now,
      loaded strictly and cached;
    - ``"fresh"``: a new one, for a model with no released discriminator;
    - ``"fresh: <note>"``: a new one because the official file could not be downloaded
      (offline, or ``allow_download`` False). This is a choice: the training still runs, as
      Real-ESRGAN's own recipe trains its discriminator from scratch; the note (one line)
      says how to get the official one.

    ``ModelError`` for a download that is not a UNetDiscriminatorSN (nothing is cached).
    """
    path = discriminator_cache_path(model_name)
    if path.is_file():
        with contextlib.suppress(ModelError):  # a damaged entry: fetch or start afresh
            return _build_discriminator(read_safetensors(path)[0], str(path)), "cache"
    registry = find_record(model_name)
    record = DISCRIMINATORS.get(registry.name if registry is not None else model_name)
    if record is None:
        return fresh_discriminator(), "fresh"
    url = discriminator_url(record)
    filename = url.rsplit("/", 1)[-1]
    note = (
        f"fresh: the official discriminator for {record.model} is not available offline, so "
        f"training starts a new one; for the official one download {url} and run: "
        f"vidsr models import {filename}"
    )
    if not allow_download:
        return fresh_discriminator(), note
    try:
        downloaded = download(url, progress, record.sha256, f"the {record.model} discriminator")
    except NetworkError:
        return fresh_discriminator(), note
    try:
        net = _build_discriminator(read_weights_file(downloaded), url)
        with contextlib.suppress(OutputError):
            _write_discriminator(record.model, net, f"url:{url}")
    finally:
        downloaded.unlink(missing_ok=True)
    return net, f"official:{url}"


def import_discriminator(
    path: str | Path,
    model_name: str | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Read a UNetDiscriminatorSN file (``weights_only``) and cache it as the discriminator of
    the generator ``model_name`` (default: the file's stem without ``_netD``, so
    ``RealESRGAN_x4plus_netD.pth`` is ``RealESRGAN_x4plus``'s); returns the cache path.
    ``state_dict``: the file's tensors if the caller has read them already."""
    path = Path(path)
    if model_name is None:
        model_name = path.stem.removesuffix("_netD")
    registry = find_record(model_name)
    model_name = registry.name if registry is not None else model_name
    if state_dict is None:
        state_dict = read_weights_file(path)
    net = _build_discriminator(state_dict, str(path))
    return _write_discriminator(model_name, net, f"import:{path.name}")
