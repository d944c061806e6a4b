"""Real-ESRGAN's synthetic training degradations, with explicit random generators.

This module is a port of the "high-order" degradation model of Real-ESRGAN:

* BasicSR 1.4.2 (https://github.com/XPixelGroup/BasicSR, Apache License 2.0, Copyright Xintao
  Wang and the BasicSR authors): ``basicsr/data/degradations.py`` (blur kernels, noise),
  ``basicsr/utils/img_process_util.py`` (``filter2D``, ``USMSharp``) and
  ``basicsr/utils/diffjpeg.py`` (``DiffJPEG``, itself modified from
  https://github.com/mlomnitz/DiffJPEG, MIT License);
* Real-ESRGAN 0.3.0 (https://github.com/xinntao/Real-ESRGAN, BSD-3-Clause License, Copyright
  Xintao Wang): the per-sample kernels of ``RealESRGANDataset.__getitem__``, the batch
  degradation of ``RealESRGANModel.feed_data``, the training-pair pool of
  ``RealESRGANModel._dequeue_and_enqueue`` and the defaults of
  ``options/train_realesrgan_x4plus.yml``.

The maths is upstream's, operation for operation (``tests/test_degrade.py`` compares each
primitive with BasicSR's own code). What differs:

* Randomness. Upstream draws from Python's ``random``, ``np.random`` and torch's global
  generator. Here every draw goes through a generator passed in: a ``np.random.Generator``
  (``rng``) for what upstream drew from ``random``/``np.random`` (kernel shapes, which
  degradation, resize factors and modes), a ``torch.Generator`` (``gen``) for what upstream
  drew from torch (noise levels, noise fields, JPEG qualities, the pool's shuffle). Same
  distributions; saving both generators' states resumes training bit-identically.
* ``circular_lowpass_kernel`` uses ``torch.special.bessel_j1`` (float64) instead of
  ``scipy.special.j1``, so vidsr needs no scipy at run time.
* ``filter2D`` uses ``reshape`` instead of ``view`` (upstream fails on channels_last input).
* No global side effects (upstream calls ``np.seterr`` at import).
* vidsr's own addition: the ``"video"`` preset, a lossy H.264 round trip of the low-res
  batch (``h264_round_trip``) after the second-order degradations.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RESIZE_MODES",
    "DegradationConfig",
    "DiffJPEG",
    "PairPool",
    "SampleKernels",
    "USMSharp",
    "add_gaussian_noise_pt",
    "add_poisson_noise_pt",
    "bivariate_Gaussian",
    "bivariate_generalized_Gaussian",
    "bivariate_plateau",
    "circular_lowpass_kernel",
    "degrade",
    "filter2D",
    "generate_gaussian_noise_pt",
    "generate_poisson_noise_pt",
    "h264_round_trip",
    "make_kernels",
    "mesh_grid",
    "paired_random_crop",
    "pdf2",
    "preset",
    "random_add_gaussian_noise_pt",
    "random_add_poisson_noise_pt",
    "random_bivariate_Gaussian",
    "random_bivariate_generalized_Gaussian",
    "random_bivariate_plateau",
    "random_mixed_kernels",
    "resize",
    "rgb_to_grayscale",
    "sigma_matrix2",
    "stack_kernels",
    "usm_sharp",
]

#: The interpolation modes ``feed_data`` picks from, uniformly, at each resize.
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")

#: Real-ESRGAN's six blur kernel families (BasicSR also names a "skew" it never implemented).
KERNEL_LIST: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)


# ----------------------------------------------------------------------------------------- #
# Blur kernels (numpy, float64 as upstream)
# ----------------------------------------------------------------------------------------- #


def sigma_matrix2(sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """The rotated covariance matrix ``U diag(sig_x², sig_y²) Uᵀ`` (theta in radians)."""
    d_matrix = np.array([[sig_x**2, 0], [0, sig_y**2]])
    u_matrix = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return np.dot(u_matrix, np.dot(d_matrix, u_matrix.T))


def mesh_grid(kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xy (K, K, 2), xx (K, K), yy (K, K))``: a grid centred at zero."""
    ax = np.arange(-kernel_size // 2 + 1.0, kernel_size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    xy = np.hstack(
        (xx.reshape((kernel_size * kernel_size, 1)), yy.reshape(kernel_size * kernel_size, 1))
    ).reshape(kernel_size, kernel_size, 2)
    return xy, xx, yy


def pdf2(sigma_matrix: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The un-normalised bivariate Gaussian density on ``grid`` (from :func:`mesh_grid`)."""
    inverse_sigma = np.linalg.inv(sigma_matrix)
    return np.exp(-0.5 * np.sum(np.dot(grid, inverse_sigma) * grid, 2))


def _sigma(sig_x: float, sig_y: float, theta: float, isotropic: bool) -> np.ndarray:
    if isotropic:
        return np.array([[sig_x**2, 0], [0, sig_x**2]])
    return sigma_matrix2(sig_x, sig_y, theta)


def bivariate_Gaussian(
    kernel_size: int,
    sig_x: float,
    sig_y: float,
    theta: float,
    grid: np.ndarray | None = None,
    isotropic: bool = True,
) -> np.ndarray:
    """A normalised bivariate Gaussian kernel (isotropic: only ``sig_x`` is used)."""
    if grid is None:
        grid, _, _ = mesh_grid(kernel_size)
    kernel = pdf2(_sigma(sig_x, sig_y, theta, isotropic), grid)
    return kernel / np.sum(kernel)


def bivariate_generalized_Gaussian(
    kernel_size: int,
    sig_x: float,
    sig_y: float,
    theta: float,
    beta: float,
    grid: np.ndarray | None = None,
    isotropic: bool = True,
) -> np.ndarray:
    """A normalised generalized Gaussian kernel ``exp(-0.5 (xᵀΣ⁻¹x)^beta)`` (Pascal et al.)."""
    if grid is None:
        grid, _, _ = mesh_grid(kernel_size)
    inverse_sigma = np.linalg.inv(_sigma(sig_x, sig_y, theta, isotropic))
    kernel = np.exp(-0.5 * np.power(np.sum(np.dot(grid, inverse_sigma) * grid, 2), beta))
    return kernel / np.sum(kernel)


def bivariate_plateau(
    kernel_size: int,
    sig_x: float,
    sig_y: float,
    theta: float,
    beta: float,
    grid: np.ndarray | None = None,
    isotropic: bool = True,
) -> np.ndarray:
    """A normalised plateau-shaped kernel ``1 / (1 + (xᵀΣ⁻¹x)^beta)``."""
    if grid is None:
        grid, _, _ = mesh_grid(kernel_size)
    inverse_sigma = np.linalg.inv(_sigma(sig_x, sig_y, theta, isotropic))
    kernel = np.reciprocal(np.power(np.sum(np.dot(grid, inverse_sigma) * grid, 2), beta) + 1)
    return kernel / np.sum(kernel)


def _check_ranges(
    kernel_size: int,
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    isotropic: bool,
) -> None:
    if kernel_size % 2 != 1:
        raise ValueError("Kernel size must be an odd number.")
    if not sigma_x_range[0] < sigma_x_range[1]:
        raise ValueError("Wrong sigma_x_range.")
    if not isotropic:
        if not sigma_y_range[0] < sigma_y_range[1]:
            raise ValueError("Wrong sigma_y_range.")
        if not rotation_range[0] < rotation_range[1]:
            raise ValueError("Wrong rotation_range.")


def _draw_shape(
    rng: np.random.Generator,
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    isotropic: bool,
) -> tuple[float, float, float]:
    sigma_x = rng.uniform(sigma_x_range[0], sigma_x_range[1])
    if isotropic:
        return sigma_x, sigma_x, 0.0
    sigma_y = rng.uniform(sigma_y_range[0], sigma_y_range[1])
    rotation = rng.uniform(rotation_range[0], rotation_range[1])
    return sigma_x, sigma_y, rotation


def _draw_beta(rng: np.random.Generator, beta_range: Sequence[float]) -> float:
    # upstream assumes beta_range[0] < 1 < beta_range[1]: half below 1, half above
    if rng.uniform() < 0.5:
        return rng.uniform(beta_range[0], 1)
    return rng.uniform(1, beta_range[1])


def _kernel_noise(
    kernel: np.ndarray, rng: np.random.Generator, noise_range: Sequence[float] | None
) -> np.ndarray:
    if noise_range is not None:
        if not noise_range[0] < noise_range[1]:
            raise ValueError("Wrong noise range.")
        kernel = kernel * rng.uniform(noise_range[0], noise_range[1], size=kernel.shape)
    return kernel / np.sum(kernel)


def random_bivariate_Gaussian(
    kernel_size: int,
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    noise_range: Sequence[float] | None = None,
    isotropic: bool = True,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """A random Gaussian kernel; draws from ``rng`` in upstream's order: ``sigma_x``, then
    (anisotropic) ``sigma_y`` and the rotation, then the multiplicative noise if any."""
    _check_ranges(kernel_size, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    sx, sy, rot = _draw_shape(rng, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    kernel = bivariate_Gaussian(kernel_size, sx, sy, rot, isotropic=isotropic)
    return _kernel_noise(kernel, rng, noise_range)


def random_bivariate_generalized_Gaussian(
    kernel_size: int,
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    beta_range: Sequence[float],
    noise_range: Sequence[float] | None = None,
    isotropic: bool = True,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """A random generalized Gaussian kernel (draws as :func:`random_bivariate_Gaussian`, then
    ``beta``: a coin, then uniform in ``[beta_range[0], 1)`` or ``[1, beta_range[1])``)."""
    _check_ranges(kernel_size, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    sx, sy, rot = _draw_shape(rng, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    beta = _draw_beta(rng, beta_range)
    kernel = bivariate_generalized_Gaussian(kernel_size, sx, sy, rot, beta, isotropic=isotropic)
    return _kernel_noise(kernel, rng, noise_range)


def random_bivariate_plateau(
    kernel_size: int,
    sigma_x_range: Sequence[float],
    sigma_y_range: Sequence[float],
    rotation_range: Sequence[float],
    beta_range: Sequence[float],
    noise_range: Sequence[float] | None = None,
    isotropic: bool = True,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """A random plateau kernel (draws as :func:`random_bivariate_generalized_Gaussian`)."""
    _check_ranges(kernel_size, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    sx, sy, rot = _draw_shape(rng, sigma_x_range, sigma_y_range, rotation_range, isotropic)
    beta = _draw_beta(rng, beta_range)
    kernel = bivariate_plateau(kernel_size, sx, sy, rot, beta, isotropic=isotropic)
    return _kernel_noise(kernel, rng, noise_range)


def _weighted_index(rng: np.random.Generator, weights: Sequence[float]) -> int:
    """``random.choices(range(len(weights)), weights)[0]`` on ``rng``: one ``rng.choice``."""
    p = np.asarray(weights, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def random_mixed_kernels(
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    kernel_size: int = 21,
    sigma_x_range: Sequence[float] = (0.6, 5),
    sigma_y_range: Sequence[float] = (0.6, 5),
    rotation_range: Sequence[float] = (-math.pi, math.pi),
    betag_range: Sequence[float] = (0.5, 8),
    betap_range: Sequence[float] = (0.5, 8),
    noise_range: Sequence[float] | None = None,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """A kernel of a family drawn from ``kernel_list`` with weights ``kernel_prob`` (one
    ``rng.choice``), then that family's random kernel. Plateau kernels never get noise, as
    upstream."""
    kernel_type = kernel_list[_weighted_index(rng, kernel_prob)]
    shape = (kernel_size, sigma_x_range, sigma_y_range, rotation_range)
    if kernel_type in ("iso", "aniso"):
        return random_bivariate_Gaussian(
            *shape, noise_range=noise_range, isotropic=kernel_type == "iso", rng=rng
        )
    if kernel_type in ("generalized_iso", "generalized_aniso"):
        return random_bivariate_generalized_Gaussian(
            *shape,
            betag_range,
            noise_range=noise_range,
            isotropic=kernel_type == "generalized_iso",
            rng=rng,
        )
    if kernel_type in ("plateau_iso", "plateau_aniso"):
        return random_bivariate_plateau(
            *shape, betap_range, noise_range=None, isotropic=kernel_type == "plateau_iso", rng=rng
        )
    raise ValueError(f"unknown kernel type {kernel_type!r} (known: {', '.join(KERNEL_LIST)})")


def circular_lowpass_kernel(cutoff: float, kernel_size: int, pad_to: int = 0) -> np.ndarray:
    """A 2D circularly symmetric sinc (ideal low-pass) kernel, normalised, float64.

    ``cutoff`` in radians (pi is the maximum), ``kernel_size`` odd, ``pad_to`` a larger odd
    size to zero-pad to (0: none). The Bessel function J1 is ``torch.special.bessel_j1`` in
    float64 (upstream: ``scipy.special.j1``). torch's J1 is off by up to 5e-7 for arguments
    near 5 (scipy's by 1e-16), so kernels differ from upstream's by up to 2e-7.
    """
    if kernel_size % 2 != 1:
        raise ValueError("Kernel size must be an odd number.")
    x, y = np.indices((kernel_size, kernel_size), dtype=np.float64)
    half = (kernel_size - 1) / 2
    r = np.sqrt((x - half) ** 2 + (y - half) ** 2)
    j1 = torch.special.bessel_j1(torch.from_numpy(cutoff * r)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):  # the centre: 0 / 0, set below
        kernel = cutoff * j1 / (2 * np.pi * r)
    kernel[(kernel_size - 1) // 2, (kernel_size - 1) // 2] = cutoff**2 / (4 * np.pi)
    kernel = kernel / np.sum(kernel)
    if pad_to > kernel_size:
        pad_size = (pad_to - kernel_size) // 2
        kernel = np.pad(kernel, ((pad_size, pad_size), (pad_size, pad_size)))
    return kernel


# ----------------------------------------------------------------------------------------- #
# Filtering, sharpening, resizing (torch)
# ----------------------------------------------------------------------------------------- #


def filter2D(img: Tensor, kernel: Tensor) -> Tensor:
    """BasicSR's ``filter2D`` (``cv2.filter2D`` in torch, reflect padding).

    ``img`` (b, c, h, w), any memory format; ``kernel`` (1, k, k): one kernel for the whole
    batch, or (b, k, k): one per sample; ``k`` odd and less than ``h`` and ``w`` minus 1.
    """
    k = kernel.size(-1)
    b, c, h, w = img.size()
    if k % 2 != 1:
        raise ValueError("Wrong kernel size")
    img = F.pad(img, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    ph, pw = img.size()[-2:]
    if kernel.size(0) == 1:
        # the same kernel for every image of the batch
        img = img.reshape(b * c, 1, ph, pw)
        kernel = kernel.reshape(1, 1, k, k)
        return F.conv2d(img, kernel, padding=0).reshape(b, c, h, w)
    img = img.reshape(1, b * c, ph, pw)
    kernel = kernel.reshape(b, 1, k, k).repeat(1, c, 1, 1).reshape(b * c, 1, k, k)
    return F.conv2d(img, kernel, groups=b * c).reshape(b, c, h, w)


def _gaussian_kernel_1d(ksize: int) -> np.ndarray:
    """``cv2.getGaussianKernel(ksize, 0)`` (float64, ``ksize`` odd and > 7): sigma
    ``0.3 ((ksize - 1) / 2 - 1) + 0.8``, normalised as OpenCV does (its soft-float exp may
    differ from numpy's in the last bit)."""
    sigma = ksize * 0.15 + 0.35  # = 0.3 * ((ksize - 1) / 2 - 1) + 0.8, as OpenCV writes it
    scale2x = -0.125 / (sigma * sigma)  # OpenCV's x runs over 1 - n, 3 - n, ... (twice)
    x = np.arange(1 - ksize, 0, 2, dtype=np.float64)
    values = np.exp((x * x) * scale2x)
    total = 2 * float(np.sum(values)) + 1.0
    mul = 1.0 / total
    half = values * mul
    return np.concatenate([half, [mul], half[::-1]])[:, None]


class USMSharp(nn.Module):
    """BasicSR's ``USMSharp``: unsharp masking with a soft mask, for the ground truth.

    ``sharp = img + weight (img - blur)`` (clipped to [0, 1]) where ``|img - blur| * 255 >
    threshold``, blended by the blurred mask. The blur is OpenCV's default Gaussian of size
    ``radius`` (made odd: 50 -> 51).
    """

    kernel: Tensor

    def __init__(self, radius: int = 50, sigma: float = 0) -> None:
        super().__init__()
        if radius % 2 == 0:
            radius += 1
        if sigma != 0 or radius <= 7:
            raise ValueError("only OpenCV's default sigma (0) for radius > 7 is ported")
        self.radius = radius
        k1 = _gaussian_kernel_1d(radius)
        kernel = torch.from_numpy(np.dot(k1, k1.transpose())).float().unsqueeze_(0)
        self.register_buffer("kernel", kernel)

    def forward(self, img: Tensor, weight: float = 0.5, threshold: float = 10) -> Tensor:
        blur = filter2D(img, self.kernel)
        residual = img - blur
        mask = torch.abs(residual) * 255 > threshold
        mask = mask.float()
        soft_mask = filter2D(mask, self.kernel)
        sharp = img + weight * residual
        sharp = torch.clip(sharp, 0, 1)
        return soft_mask * sharp + (1 - soft_mask) * img


@functools.lru_cache(maxsize=8)
def _usm(device: torch.device) -> USMSharp:
    return USMSharp().to(device)


@torch.no_grad()
def usm_sharp(gt: Tensor, weight: float = 0.5, threshold: float = 10) -> Tensor:
    """``USMSharp()(gt)`` (radius 50, weight 0.5, threshold 10): the ground truth Real-ESRGAN
    degrades and, with ``l1_gt_usm`` / ``percep_gt_usm`` (the defaults), the target of the
    pixel and perceptual losses. ``gt`` (n, 3, h, w) in [0, 1], h and w over 25."""
    return _usm(gt.device)(gt, weight=weight, threshold=threshold)


def resize(
    img: Tensor,
    mode: str,
    *,
    scale_factor: float | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """``F.interpolate`` as ``feed_data`` calls it: ``mode`` one of :data:`RESIZE_MODES`, by a
    ``scale_factor`` (the first resize) or to a ``size`` (the others); torch's defaults
    otherwise (``align_corners=False``, the scale factor itself used for the sampling)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    if (scale_factor is None) == (size is None):
        raise ValueError("give exactly one of scale_factor and size")
    if size is not None:
        return F.interpolate(img, size=size, mode=mode)
    return F.interpolate(img, scale_factor=scale_factor, mode=mode)


# ----------------------------------------------------------------------------------------- #
# Noise (torch)
# ----------------------------------------------------------------------------------------- #


def rgb_to_grayscale(img: Tensor) -> Tensor:
    """torchvision's ``rgb_to_grayscale(img, 1)`` for (..., 3, h, w): ITU-R 601 luma weights
    0.2989, 0.587, 0.114, the way torchvision computes them."""
    r, g, b = img.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)


def _finish(out: Tensor, clip: bool, rounds: bool) -> Tensor:
    if clip and rounds:
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0
    if clip:
        return torch.clamp(out, 0, 1)
    if rounds:
        return (out * 255.0).round() / 255.0
    return out


def _gray_flag(gray_noise: float | Tensor, b: int) -> tuple[float | Tensor, bool]:
    if isinstance(gray_noise, (float, int)):
        return gray_noise, gray_noise > 0
    gray_noise = gray_noise.view(b, 1, 1, 1)
    return gray_noise, bool(torch.sum(gray_noise) > 0)


def generate_gaussian_noise_pt(
    img: Tensor, sigma: float | Tensor = 10, gray_noise: float | Tensor = 0, *, gen: torch.Generator
) -> Tensor:
    """Gaussian noise for a batch (b, c, h, w): ``sigma`` on the 0-255 scale (a number or one
    per sample), ``gray_noise`` 0/1 (a number or one per sample: those samples get the same
    noise on the three channels).

    Draws from ``gen`` as upstream does from torch's global generator: if any sample is gray,
    one (h, w) field first (upstream shares it across the batch, each sample scaled by its
    own sigma), then the (b, c, h, w) colour field.
    """
    b, _, h, w = img.size()
    if not isinstance(sigma, (float, int)):
        sigma = sigma.view(img.size(0), 1, 1, 1)
    gray_noise, cal_gray_noise = _gray_flag(gray_noise, b)
    noise_gray = None
    if cal_gray_noise:
        noise_gray = (
            torch.randn(h, w, dtype=img.dtype, device=img.device, generator=gen) * sigma / 255.0
        )
        noise_gray = noise_gray.reshape(-1, 1, h, w)
    # always calculate colour noise
    noise = torch.randn(*img.size(), dtype=img.dtype, device=img.device, generator=gen)
    noise = noise * sigma / 255.0
    if noise_gray is not None:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    return noise


def add_gaussian_noise_pt(
    img: Tensor,
    sigma: float | Tensor = 10,
    gray_noise: float | Tensor = 0,
    clip: bool = True,
    rounds: bool = False,
    *,
    gen: torch.Generator,
) -> Tensor:
    """``img`` plus :func:`generate_gaussian_noise_pt`, clipped to [0, 1] and/or rounded to
    8 bits as asked."""
    return _finish(img + generate_gaussian_noise_pt(img, sigma, gray_noise, gen=gen), clip, rounds)


def _random_levels(
    img: Tensor, value_range: Sequence[float], gray_prob: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    n, kw = img.size(0), {"dtype": img.dtype, "device": img.device, "generator": gen}
    level = torch.rand(n, **kw) * (value_range[1] - value_range[0]) + value_range[0]
    gray = (torch.rand(n, **kw) < gray_prob).float()
    return level, gray


def random_add_gaussian_noise_pt(
    img: Tensor,
    sigma_range: Sequence[float] = (0, 1.0),
    gray_prob: float = 0,
    clip: bool = True,
    rounds: bool = False,
    *,
    gen: torch.Generator,
) -> Tensor:
    """Gaussian noise of a random level per sample: from ``gen``, b sigmas (uniform in
    ``sigma_range``), b gray coins (``< gray_prob``), then the noise fields."""
    sigma, gray = _random_levels(img, sigma_range, gray_prob, gen)
    return add_gaussian_noise_pt(img, sigma, gray, clip, rounds, gen=gen)


def _poisson(img: Tensor, gen: torch.Generator) -> Tensor:
    b = img.size(0)
    # round and clip the image to count its values correctly
    img = torch.clamp((img * 255.0).round(), 0, 255) / 255.0
    vals_list = [len(torch.unique(img[i, :, :, :])) for i in range(b)]
    vals_list = [2 ** np.ceil(np.log2(vals)) for vals in vals_list]
    vals = img.new_tensor(vals_list).view(b, 1, 1, 1)
    out = torch.poisson(img * vals, generator=gen) / vals
    return out - img


def generate_poisson_noise_pt(
    img: Tensor,
    scale: float | Tensor = 1.0,
    gray_noise: float | Tensor = 0,
    *,
    gen: torch.Generator,
) -> Tensor:
    """Poisson (shot) noise for a batch (b, c, h, w), ``scale`` and ``gray_noise`` a number or
    one per sample. The image is rounded to 8 bits and each sample's count of distinct values,
    rounded up to a power of 2, is its photon scale (as scikit-image does).

    Draws from ``gen`` as upstream from torch's: if any sample is gray, the luma Poisson field
    first, then the colour one.
    """
    b, _, h, w = img.size()
    gray_noise, cal_gray_noise = _gray_flag(gray_noise, b)
    noise_gray = None
    if cal_gray_noise:
        noise_gray = _poisson(rgb_to_grayscale(img), gen).expand(b, 3, h, w)
    noise = _poisson(img, gen)
    if noise_gray is not None:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    if not isinstance(scale, (float, int)):
        scale = scale.view(b, 1, 1, 1)
    return noise * scale


def add_poisson_noise_pt(
    img: Tensor,
    scale: float | Tensor = 1.0,
    clip: bool = True,
    rounds: bool = False,
    gray_noise: float | Tensor = 0,
    *,
    gen: torch.Generator,
) -> Tensor:
    """``img`` plus :func:`generate_poisson_noise_pt` (upstream's argument order)."""
    return _finish(img + generate_poisson_noise_pt(img, scale, gray_noise, gen=gen), clip, rounds)


def random_add_poisson_noise_pt(
    img: Tensor,
    scale_range: Sequence[float] = (0, 1.0),
    gray_prob: float = 0,
    clip: bool = True,
    rounds: bool = False,
    *,
    gen: torch.Generator,
) -> Tensor:
    """Poisson noise of a random scale per sample: from ``gen``, b scales (uniform in
    ``scale_range``), b gray coins, then the Poisson fields."""
    scale, gray = _random_levels(img, scale_range, gray_prob, gen)
    return add_poisson_noise_pt(img, scale, clip, rounds, gray, gen=gen)


# ----------------------------------------------------------------------------------------- #
# DiffJPEG (torch)
# ----------------------------------------------------------------------------------------- #

_Y_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
).T


def _c_table() -> np.ndarray:
    table = np.full((8, 8), 99, dtype=np.float32)
    table[:4, :4] = np.array(
        [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
    ).T
    return table


def diff_round(x: Tensor) -> Tensor:
    """The differentiable rounding: ``round(x) + (x - round(x))³``."""
    return torch.round(x) + (x - torch.round(x)) ** 3


def quality_to_factor(quality: float | Tensor) -> float | Tensor:
    """The JPEG quality (1-100) as a factor on the standard tables (libjpeg's scaling)."""
    if isinstance(quality, Tensor):
        return torch.where(quality < 50, 5000.0 / quality, 200.0 - quality * 2) / 100.0
    quality = 5000.0 / quality if quality < 50 else 200.0 - quality * 2
    return quality / 100.0


class DiffJPEG(nn.Module):
    """BasicSR's ``DiffJPEG``: JPEG compression and decompression in torch, a batch at once,
    each sample at its own quality (as ``feed_data`` uses it: ``differentiable=False``).

    YCbCr (JFIF), 4:2:0 chroma by 2x2 averaging, 8x8 DCT, the standard luma/chroma tables
    scaled by the quality, rounding, and back; sizes padded to a multiple of 16 with zeros
    and cropped back. Slightly different from libjpeg (no chroma filtering, float DCT).
    """

    y_table: Tensor
    c_table: Tensor
    rgb2ycbcr: Tensor
    ycbcr_shift: Tensor
    ycbcr2rgb: Tensor
    rgb_shift: Tensor
    dct_tensor: Tensor
    dct_scale: Tensor
    idct_alpha: Tensor
    idct_tensor: Tensor

    def __init__(self, differentiable: bool = True) -> None:
        super().__init__()
        self.rounding = diff_round if differentiable else torch.round
        self.register_buffer("y_table", torch.from_numpy(_Y_TABLE.copy()))
        self.register_buffer("c_table", torch.from_numpy(_c_table()))
        matrix = np.array(
            [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
            dtype=np.float32,
        ).T
        self.register_buffer("rgb2ycbcr", torch.from_numpy(matrix))
        self.register_buffer("ycbcr_shift", torch.tensor([0.0, 128.0, 128.0]))
        matrix = np.array(
            [[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]], dtype=np.float32
        ).T
        self.register_buffer("ycbcr2rgb", torch.from_numpy(matrix))
        self.register_buffer("rgb_shift", torch.tensor([0, -128.0, -128.0]))
        dct = np.zeros((8, 8, 8, 8), dtype=np.float32)
        idct = np.zeros((8, 8, 8, 8), dtype=np.float32)
        for x, y, u, v in itertools.product(range(8), repeat=4):
            dct[x, y, u, v] = np.cos((2 * x + 1) * u * np.pi / 16) * np.cos(
                (2 * y + 1) * v * np.pi / 16
            )
            idct[x, y, u, v] = np.cos((2 * u + 1) * x * np.pi / 16) * np.cos(
                (2 * v + 1) * y * np.pi / 16
            )
        alpha = np.array([1.0 / np.sqrt(2)] + [1] * 7)
        self.register_buffer("dct_tensor", torch.from_numpy(dct).float())
        self.register_buffer("dct_scale", torch.from_numpy(np.outer(alpha, alpha) * 0.25).float())
        self.register_buffer("idct_alpha", torch.from_numpy(np.outer(alpha, alpha)).float())
        self.register_buffer("idct_tensor", torch.from_numpy(idct).float())

    # -- the pieces, in upstream's order ---------------------------------------------------- #

    @staticmethod
    def _split(image: Tensor) -> Tensor:
        """(b, h, w) -> (b, h*w/64, 8, 8)."""
        height, b = image.shape[1], image.shape[0]
        blocks = image.reshape(b, height // 8, 8, -1, 8).permute(0, 1, 3, 2, 4)
        return blocks.contiguous().view(b, -1, 8, 8)

    @staticmethod
    def _merge(patches: Tensor, height: int, width: int) -> Tensor:
        b = patches.shape[0]
        image = patches.view(b, height // 8, width // 8, 8, 8).permute(0, 1, 3, 2, 4)
        return image.contiguous().view(b, height, width)

    @staticmethod
    def _table(table: Tensor, factor: float | Tensor) -> Tensor:
        if isinstance(factor, (int, float)):
            return table * factor
        b = factor.size(0)
        return table.expand(b, 1, 8, 8) * factor.view(b, 1, 1, 1)

    def _compress(self, image: Tensor, factor: float | Tensor) -> list[Tensor]:
        image = (image * 255).permute(0, 2, 3, 1)
        ycc = (torch.tensordot(image, self.rgb2ycbcr, dims=1) + self.ycbcr_shift).view(image.shape)
        chans = ycc.permute(0, 3, 1, 2).clone()
        planes = [ycc[:, :, :, 0]]
        for i in (1, 2):
            sub = F.avg_pool2d(
                chans[:, i, :, :].unsqueeze(1),
                kernel_size=2,
                stride=(2, 2),
                count_include_pad=False,
            )
            planes.append(sub.permute(0, 2, 3, 1).squeeze(3))
        out = []
        for i, plane in enumerate(planes):
            blocks = self._split(plane) - 128
            coeffs = self.dct_scale * torch.tensordot(blocks, self.dct_tensor, dims=2)
            table = self._table(self.y_table if i == 0 else self.c_table, factor)
            out.append(self.rounding(coeffs.float() / table))
        return out

    def _decompress(
        self, comps: list[Tensor], imgh: int, imgw: int, factor: float | Tensor
    ) -> Tensor:
        planes = []
        for i, comp in enumerate(comps):
            comp = comp * self._table(self.y_table if i == 0 else self.c_table, factor)
            height, width = (imgh, imgw) if i == 0 else (int(imgh / 2), int(imgw / 2))
            comp = 0.25 * torch.tensordot(comp * self.idct_alpha, self.idct_tensor, dims=2) + 128
            planes.append(self._merge(comp, height, width))

        def up(x: Tensor, k: int = 2) -> Tensor:
            height, width = x.shape[1:3]
            return x.unsqueeze(-1).repeat(1, 1, k, k).view(-1, height * k, width * k)

        image = torch.cat(
            [planes[0].unsqueeze(3), up(planes[1]).unsqueeze(3), up(planes[2]).unsqueeze(3)],
            dim=3,
        )
        rgb = torch.tensordot(image + self.rgb_shift, self.ycbcr2rgb, dims=1)
        rgb = rgb.view(image.shape).permute(0, 3, 1, 2)
        rgb = torch.min(255 * torch.ones_like(rgb), torch.max(torch.zeros_like(rgb), rgb))
        return rgb / 255

    def forward(self, x: Tensor, quality: float | Tensor) -> Tensor:
        """``x`` (b, 3, h, w) RGB in [0, 1]; ``quality`` a number or one per sample (b,)."""
        factor = quality_to_factor(quality)
        h, w = x.size()[-2:]
        h_pad = (16 - h % 16) % 16
        w_pad = (16 - w % 16) % 16
        x = F.pad(x, (0, w_pad, 0, h_pad), mode="constant", value=0)
        comps = self._compress(x, factor)
        recovered = self._decompress(comps, h + h_pad, w + w_pad, factor)
        return recovered[:, :, 0:h, 0:w]


@functools.lru_cache(maxsize=8)
def _jpeger(device: torch.device) -> DiffJPEG:
    return DiffJPEG(differentiable=False).to(device)


# ----------------------------------------------------------------------------------------- #
# H.264 round trip (vidsr's own addition)
# ----------------------------------------------------------------------------------------- #


def h264_round_trip(img: Tensor, crf: int | Sequence[int], preset: str = "medium") -> Tensor:
    """vidsr's own addition: each sample of ``img`` (b, 3, h, w) in [0, 1] rounded to 8 bits,
    encoded as a one-frame yuv420p H.264 stream (libx264, ``crf`` one or per sample, one
    thread, so the same input gives the same bytes), decoded back; odd sizes are padded
    (edge) to even and cropped back. Returns float32 on the 1/255 grid, ``img``'s device."""
    import av  # vidsr's video dependency; imported here to keep this module light

    b, _, h, w = img.shape
    crfs = [int(crf)] * b if isinstance(crf, (int, np.integer)) else [int(c) for c in crf]
    if len(crfs) != b:
        raise ValueError(f"{len(crfs)} crf values for a batch of {b}")
    pix = torch.clamp((img.detach().float() * 255.0).round(), 0, 255).to(torch.uint8)
    arrays = pix.permute(0, 2, 3, 1).cpu().numpy()
    ph, pw = h + h % 2, w + w % 2
    out = np.empty_like(arrays)
    for i in range(b):
        frame_rgb = np.pad(arrays[i], ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        buf = io.BytesIO()
        with av.open(buf, "w", format="h264") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = {"crf": str(crfs[i]), "preset": preset, "threads": "1"}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        buf.seek(0)
        with av.open(buf, "r", format="h264") as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        if len(decoded) != 1:
            raise RuntimeError(f"H.264 round trip gave {len(decoded)} frames, not 1")
        out[i] = decoded[0][:h, :w]
    result = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0
    return result.contiguous().to(img.device)


# ----------------------------------------------------------------------------------------- #
# Configuration
# ----------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class DegradationConfig:
    """The degradation settings; defaults: ``options/train_realesrgan_x4plus.yml``.

    ``*2`` fields are the second degradation's. ``resize_prob*``: weights of up, down, keep.
    ``noise_range*``: Gaussian sigma on the 0-255 scale. ``video_prob`` / ``video_crf_range``
    (vidsr's own addition, 0 / unused in the ``"realesrgan"`` preset): the probability that
    a low-res sample gets an H.264 round trip and the crf range (inclusive) it is drawn from.
    """

    # the first degradation process
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1, 30)
    poisson_scale_range: tuple[float, float] = (0.05, 3)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30, 95)
    # the second degradation process
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1, 25)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30, 95)
    # the per-sample kernels (RealESRGANDataset)
    blur_kernel_size: int = 21
    kernel_list: tuple[str, ...] = KERNEL_LIST
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3)
    betag_range: tuple[float, float] = (0.5, 4)
    betap_range: tuple[float, float] = (1, 2)
    blur_kernel_size2: int = 21
    kernel_list2: tuple[str, ...] = KERNEL_LIST
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4)
    betap_range2: tuple[float, float] = (1, 2)
    final_sinc_prob: float = 0.8
    # the crop, the pool and the sharpened targets (RealESRGANModel)
    gt_size: int = 256
    queue_size: int = 180
    l1_gt_usm: bool = True
    percep_gt_usm: bool = True
    gan_gt_usm: bool = False
    # vidsr's own addition: the H.264 round trip of the "video" preset
    video_prob: float = 0.0
    video_crf_range: tuple[int, int] = (18, 35)
    video_x264_preset: str = "medium"

    def __post_init__(self) -> None:
        if self.blur_kernel_size != 21 or self.blur_kernel_size2 != 21:
            # upstream hard-codes kernel sizes 7-21 and the 21x21 pad
            raise ValueError("only 21x21 kernels are supported (as upstream)")
        if not 0 <= self.video_prob <= 1:
            raise ValueError(f"video_prob {self.video_prob} is not in [0, 1]")
        lo, hi = self.video_crf_range
        if not 0 <= lo <= hi <= 51:
            raise ValueError(f"video_crf_range {self.video_crf_range} is not within 0-51")


PRESETS: tuple[str, ...] = ("realesrgan", "video")


def preset(name: str) -> DegradationConfig:
    """A named configuration: ``"realesrgan"`` is ``train_realesrgan_x4plus.yml``;
    ``"video"`` (vidsr's own addition) is the same plus an H.264 round trip of half the
    low-res samples at a crf drawn uniformly from 18-35, for footage that was once streamed."""
    if name == "realesrgan":
        return DegradationConfig()
    if name == "video":
        return replace(DegradationConfig(), video_prob=0.5, video_crf_range=(18, 35))
    raise ValueError(f"unknown degradation preset {name!r} (known: {', '.join(PRESETS)})")


# ----------------------------------------------------------------------------------------- #
# Per-sample kernels (RealESRGANDataset.__getitem__)
# ----------------------------------------------------------------------------------------- #


@dataclass
class SampleKernels:
    """The three kernels of one sample (each (21, 21) float32), or of a batch ((n, 21, 21),
    from :func:`stack_kernels`): the first and second blurs and the final sinc filter (a
    centred pulse when there is none)."""

    kernel1: Tensor
    kernel2: Tensor
    sinc_kernel: Tensor

    def to(self, device: torch.device | str) -> SampleKernels:
        return SampleKernels(
            self.kernel1.to(device), self.kernel2.to(device), self.sinc_kernel.to(device)
        )


def stack_kernels(kernels: Sequence[SampleKernels]) -> SampleKernels:
    """One :class:`SampleKernels` of (n, 21, 21) tensors from ``n`` samples' (a DataLoader's
    default collate does the same to the fields)."""
    if not kernels:
        raise ValueError("no kernels to stack")
    return SampleKernels(
        torch.stack([k.kernel1 for k in kernels]),
        torch.stack([k.kernel2 for k in kernels]),
        torch.stack([k.sinc_kernel for k in kernels]),
    )


def _blur_kernel(
    rng: np.random.Generator,
    kernel_range: Sequence[int],
    size: int,
    sinc_prob: float,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    blur_sigma: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
) -> np.ndarray:
    kernel_size = int(kernel_range[rng.integers(len(kernel_range))])
    if rng.uniform() < sinc_prob:
        # this sinc setting is for kernels of 7 to 21
        lo = np.pi / 3 if kernel_size < 13 else np.pi / 5
        kernel = circular_lowpass_kernel(rng.uniform(lo, np.pi), kernel_size, pad_to=0)
    else:
        kernel = random_mixed_kernels(
            kernel_list,
            kernel_prob,
            kernel_size,
            blur_sigma,
            blur_sigma,
            [-math.pi, math.pi],
            betag_range,
            betap_range,
            noise_range=None,
            rng=rng,
        )
    pad_size = (size - kernel_size) // 2
    return np.pad(kernel, ((pad_size, pad_size), (pad_size, pad_size)))


def make_kernels(cfg: DegradationConfig, rng: np.random.Generator) -> SampleKernels:
    """One sample's kernels, as ``RealESRGANDataset.__getitem__`` makes them.

    Each blur: a size uniform over 7, 9, ..., 21 (``rng.integers``), a coin against its
    ``sinc_prob`` (``rng.uniform``): a sinc of cutoff uniform in [pi/3, pi) (size < 13) or
    [pi/5, pi), otherwise :func:`random_mixed_kernels`; zero-padded to 21x21. Then a coin
    against ``final_sinc_prob``: a size, a cutoff in [pi/3, pi), the sinc padded to 21;
    otherwise the pulse. All draws from ``rng``, in that order.
    """
    size = cfg.blur_kernel_size
    kernel_range = [2 * v + 1 for v in range(3, size // 2 + 1)]  # 7 to 21
    kernel1 = _blur_kernel(
        rng,
        kernel_range,
        size,
        cfg.sinc_prob,
        cfg.kernel_list,
        cfg.kernel_prob,
        cfg.blur_sigma,
        cfg.betag_range,
        cfg.betap_range,
    )
    kernel2 = _blur_kernel(
        rng,
        kernel_range,
        cfg.blur_kernel_size2,
        cfg.sinc_prob2,
        cfg.kernel_list2,
        cfg.kernel_prob2,
        cfg.blur_sigma2,
        cfg.betag_range2,
        cfg.betap_range2,
    )
    if rng.uniform() < cfg.final_sinc_prob:
        kernel_size = int(kernel_range[rng.integers(len(kernel_range))])
        omega_c = rng.uniform(np.pi / 3, np.pi)
        sinc = torch.from_numpy(circular_lowpass_kernel(omega_c, kernel_size, pad_to=size)).float()
    else:
        # convolving with a pulse changes nothing
        sinc = torch.zeros(size, size, dtype=torch.float32)
        sinc[size // 2, size // 2] = 1
    return SampleKernels(torch.from_numpy(kernel1).float(), torch.from_numpy(kernel2).float(), sinc)


# ----------------------------------------------------------------------------------------- #
# The batch degradation (RealESRGANModel.feed_data)
# ----------------------------------------------------------------------------------------- #


def _draw_resize(
    rng: np.random.Generator, prob: Sequence[float], value_range: Sequence[float]
) -> tuple[float, str]:
    updown = _weighted_index(rng, prob)  # 0 up, 1 down, 2 keep
    if updown == 0:
        scale: float = rng.uniform(1, value_range[1])
    elif updown == 1:
        scale = rng.uniform(value_range[0], 1)
    else:
        scale = 1
    return scale, RESIZE_MODES[rng.integers(len(RESIZE_MODES))]


def _noise(
    out: Tensor,
    rng: np.random.Generator,
    gen: torch.Generator,
    gaussian_prob: float,
    sigma_range: Sequence[float],
    scale_range: Sequence[float],
    gray_prob: float,
) -> Tensor:
    if rng.uniform() < gaussian_prob:
        return random_add_gaussian_noise_pt(
            out, sigma_range=sigma_range, clip=True, rounds=False, gray_prob=gray_prob, gen=gen
        )
    return random_add_poisson_noise_pt(
        out, scale_range=scale_range, gray_prob=gray_prob, clip=True, rounds=False, gen=gen
    )


def _jpeg(out: Tensor, value_range: Sequence[float], gen: torch.Generator) -> Tensor:
    jpeg_p = out.new_zeros(out.size(0)).uniform_(value_range[0], value_range[1], generator=gen)
    out = torch.clamp(out, 0, 1)  # else the JPEG gives unpleasant artifacts
    return _jpeger(out.device)(out, quality=jpeg_p)


def _as_batch(
    kernels: Sequence[SampleKernels] | SampleKernels, device: torch.device
) -> SampleKernels:
    stacked = kernels if isinstance(kernels, SampleKernels) else stack_kernels(kernels)
    if stacked.kernel1.dim() == 2:
        stacked = SampleKernels(
            *(k.unsqueeze(0) for k in (stacked.kernel1, stacked.kernel2, stacked.sinc_kernel))
        )
    return stacked.to(device)


@torch.no_grad()
def degrade(
    gt: Tensor,
    kernels: Sequence[SampleKernels] | SampleKernels,
    cfg: DegradationConfig,
    scale: int,
    gen: torch.Generator,
    rng: np.random.Generator,
    *,
    gt_usm: Tensor | None = None,
) -> Tensor:
    """The low-res batch (n, 3, h // scale, w // scale) for ``gt`` (n, 3, h, w) in [0, 1],
    float32, as ``RealESRGANModel.feed_data`` synthesises it.

    ``kernels``: the n samples' :class:`SampleKernels` (a list, or stacked). The degradation
    starts from the USM-sharpened ground truth, as upstream (``gt_usm``: pass it if already
    computed). ``h`` and ``w`` must keep the 21-tap blurs in range after the smallest first
    resize (``int(h * resize_range[0]) > 10``: 74 pixels and up at the defaults).

    The sequence, and which generator draws what (``rng``: upstream's ``random`` and
    ``np.random``; ``gen``: upstream's torch global generator; the order is this list's):

    1. blur with kernel1;
    2. resize: up/down/keep (``rng.choice`` with ``resize_prob``), its factor
       (``rng.uniform``), the mode (``rng.integers(3)``: area, bilinear, bicubic);
    3. noise: Gaussian or Poisson (``rng.uniform() < gaussian_noise_prob``), each sample's
       level and gray coin and the noise fields (``gen``), clipped to [0, 1];
    4. JPEG at a quality per sample uniform in ``jpeg_range`` (``gen``), after a clamp;
    5. blur with kernel2 if ``rng.uniform() < second_blur_prob``;
    6. resize as 2 (``*2`` settings) to ``int(h / scale * factor)``, ``int(w / ...)``;
    7. noise as 3, with the ``*2`` settings;
    8. in random order (``rng.uniform() < 0.5``: resize first): [resize to h // scale,
       w // scale (mode: ``rng.integers(3)``) and the sinc filter] and JPEG (``jpeg_range2``,
       ``gen``);
    9. vidsr's own addition, when ``cfg.video_prob > 0``: for each sample a coin
       (``rng.uniform(size=n) < video_prob``) and a crf (``rng.integers`` over
       ``video_crf_range``, both drawn for all samples), then :func:`h264_round_trip` of the
       chosen ones;
    10. clamp and round to 8 bits: ``torch.clamp((out * 255).round(), 0, 255) / 255``.
    """
    if gt.dim() != 4 or gt.size(1) != 3:
        raise ValueError(f"gt must be (n, 3, h, w), not {tuple(gt.shape)}")
    ori_h, ori_w = gt.size()[2:4]
    pad = cfg.blur_kernel_size // 2
    if int(min(ori_h, ori_w) * cfg.resize_range[0]) <= pad:
        raise ValueError(
            f"gt {ori_h}x{ori_w} is too small: a {cfg.resize_range[0]} resize leaves under "
            f"{pad + 1} pixels for the {cfg.blur_kernel_size}-tap blur"
        )
    k = _as_batch(kernels, gt.device)
    if k.kernel1.size(0) not in (1, gt.size(0)):
        raise ValueError(f"{k.kernel1.size(0)} kernels for a batch of {gt.size(0)}")
    if gt_usm is None:
        gt_usm = usm_sharp(gt)

    # ----------------------- the first degradation ----------------------- #
    out = filter2D(gt_usm, k.kernel1)
    factor, mode = _draw_resize(rng, cfg.resize_prob, cfg.resize_range)
    out = resize(out, mode, scale_factor=factor)
    out = _noise(
        out,
        rng,
        gen,
        cfg.gaussian_noise_prob,
        cfg.noise_range,
        cfg.poisson_scale_range,
        cfg.gray_noise_prob,
    )
    out = _jpeg(out, cfg.jpeg_range, gen)

    # ----------------------- the second degradation ----------------------- #
    if rng.uniform() < cfg.second_blur_prob:
        out = filter2D(out, k.kernel2)
    factor, mode = _draw_resize(rng, cfg.resize_prob2, cfg.resize_range2)
    size = (int(ori_h / scale * factor), int(ori_w / scale * factor))
    out = resize(out, mode, size=size)
    out = _noise(
        out,
        rng,
        gen,
        cfg.gaussian_noise_prob2,
        cfg.noise_range2,
        cfg.poisson_scale_range2,
        cfg.gray_noise_prob2,
    )

    # -------- [resize back + the final sinc] and JPEG, in either order -------- #
    final = (ori_h // scale, ori_w // scale)
    if rng.uniform() < 0.5:
        mode = RESIZE_MODES[rng.integers(len(RESIZE_MODES))]
        out = filter2D(resize(out, mode, size=final), k.sinc_kernel)
        out = _jpeg(out, cfg.jpeg_range2, gen)
    else:
        out = _jpeg(out, cfg.jpeg_range2, gen)
        mode = RESIZE_MODES[rng.integers(len(RESIZE_MODES))]
        out = filter2D(resize(out, mode, size=final), k.sinc_kernel)

    # ----------------- vidsr's own addition: the H.264 round trip ----------------- #
    if cfg.video_prob > 0:
        n = out.size(0)
        chosen = rng.uniform(size=n) < cfg.video_prob
        crfs = rng.integers(cfg.video_crf_range[0], cfg.video_crf_range[1] + 1, size=n)
        if chosen.any():
            idx = torch.from_numpy(np.flatnonzero(chosen)).to(out.device)
            coded = h264_round_trip(out[idx], crfs[chosen].tolist(), cfg.video_x264_preset)
            out = out.clone()
            out[idx] = coded.to(out.dtype)

    # clamp and round (contiguous, as feed_data makes the batch after the pool)
    return (torch.clamp((out * 255.0).round(), 0, 255) / 255.0).contiguous()


def paired_random_crop(
    gts: Sequence[Tensor], lq: Tensor, gt_size: int, scale: int, rng: np.random.Generator
) -> tuple[list[Tensor], Tensor]:
    """BasicSR's ``paired_random_crop`` for batches: the same ``gt_size // scale`` window of
    ``lq`` and ``gt_size`` window of each of ``gts`` (n, c, h, w); top, then left, each
    ``rng.integers`` (upstream: ``random.randint``, both ends inclusive)."""
    h_lq, w_lq = lq.shape[-2:]
    h_gt, w_gt = gts[0].shape[-2:]
    lq_size = gt_size // scale
    if h_gt != h_lq * scale or w_gt != w_lq * scale:
        raise ValueError(f"GT ({h_gt}, {w_gt}) is not {scale}x LQ ({h_lq}, {w_lq})")
    if h_lq < lq_size or w_lq < lq_size:
        raise ValueError(f"LQ ({h_lq}, {w_lq}) is smaller than the patch ({lq_size}, {lq_size})")
    top = int(rng.integers(0, h_lq - lq_size + 1))
    left = int(rng.integers(0, w_lq - lq_size + 1))
    lq = lq[:, :, top : top + lq_size, left : left + lq_size]
    top_gt, left_gt = top * scale, left * scale
    gts = [g[:, :, top_gt : top_gt + gt_size, left_gt : left_gt + gt_size] for g in gts]
    return gts, lq


# ----------------------------------------------------------------------------------------- #
# The training-pair pool (RealESRGANModel._dequeue_and_enqueue)
# ----------------------------------------------------------------------------------------- #


class PairPool:
    """Real-ESRGAN's training-pair pool: more degradation diversity in a batch than one
    batch's shared resize factors and modes allow.

    Until ``size`` pairs are held, a batch is stored and returned as is. Then each call
    shuffles the pool (``torch.randperm`` on ``gen``), returns its first ``b`` pairs and
    puts the new batch in their place. ``size`` must be a multiple of the batch size.
    """

    def __init__(self, size: int = 180) -> None:
        if size <= 0:
            raise ValueError(f"pool size {size} is not positive")
        self.size = size
        self.queue_lr: Tensor | None = None
        self.queue_gt: Tensor | None = None
        self.ptr = 0

    @torch.no_grad()
    def __call__(self, lq: Tensor, gt: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(lq, gt)`` for this step from the new batch ``lq`` (b, c, h, w) and ``gt``."""
        b = lq.size(0)
        if self.queue_lr is None or self.queue_gt is None:
            if self.size % b != 0:
                raise ValueError(f"pool size {self.size} is not divisible by batch size {b}")
            self.queue_lr = torch.zeros(self.size, *lq.shape[1:], dtype=lq.dtype, device=lq.device)
            self.queue_gt = torch.zeros(self.size, *gt.shape[1:], dtype=gt.dtype, device=gt.device)
            self.ptr = 0
        if self.ptr == self.size:  # full: dequeue and enqueue
            idx = torch.randperm(self.size, generator=gen, device=gen.device)
            self.queue_lr = self.queue_lr[idx.to(self.queue_lr.device)]
            self.queue_gt = self.queue_gt[idx.to(self.queue_gt.device)]
            lq_out = self.queue_lr[0:b].clone()
            gt_out = self.queue_gt[0:b].clone()
            self.queue_lr[0:b] = lq
            self.queue_gt[0:b] = gt
            return lq_out, gt_out
        self.queue_lr[self.ptr : self.ptr + b] = lq
        self.queue_gt[self.ptr : self.ptr + b] = gt
        self.ptr += b
        return lq, gt

    def state(self) -> dict[str, Tensor | int]:
        """Plain tensors and ints (no pickle needed): ``size``, ``ptr`` and, once the first
        batch came, ``queue_lr`` and ``queue_gt``."""
        state: dict[str, Tensor | int] = {"size": self.size, "ptr": self.ptr}
        if self.queue_lr is not None and self.queue_gt is not None:
            state["queue_lr"] = self.queue_lr.clone()
            state["queue_gt"] = self.queue_gt.clone()
        return state

    def load_state(self, state: dict[str, Tensor | int]) -> None:
        """Restore :meth:`state`'s result (the tensors keep their device)."""
        size, ptr = int(state["size"]), int(state["ptr"])
        lr, gt = state.get("queue_lr"), state.get("queue_gt")
        if not 0 <= ptr <= size:
            raise ValueError(f"pool pointer {ptr} is outside 0-{size}")
        if (lr is None) != (gt is None):
            raise ValueError("pool state has one queue but not the other")
        if isinstance(lr, Tensor) and isinstance(gt, Tensor):
            if lr.size(0) != size or gt.size(0) != size:
                raise ValueError(f"pool queues of {lr.size(0)}/{gt.size(0)} pairs, not {size}")
            self.queue_lr, self.queue_gt = lr.clone(), gt.clone()
        elif lr is not None or gt is not None:
            raise ValueError("pool queues must be tensors")
        else:
            self.queue_lr = self.queue_gt = None
        self.size, self.ptr = size, ptr
