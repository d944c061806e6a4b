"""``vidsr.training.degrade`` against BasicSR 1.4.2's own code, and its own properties.

BasicSR cannot be imported here: its package ``__init__`` pulls torchvision, which cannot be
installed next to the local CPU torch build. So an installed copy (``make setup``: ``pip
install --no-deps --no-build-isolation basicsr==1.4.2``) is only located, with
``importlib.util.find_spec`` (which does not run the package), and the four files compared
with are loaded by path: ``data/degradations.py``, ``utils/img_process_util.py``,
``utils/diffjpeg.py`` and ``data/transforms.py``. They need OpenCV and SciPy (the dev extra)
and ``torchvision.transforms.functional_tensor.rgb_to_grayscale``, which the test stand-in in
``tests/stubs`` provides (torchvision's own code); the stubs are on ``sys.path`` only while
those files load. Without BasicSR the comparisons skip; the property tests still run.

Where upstream draws from torch's global generator in the same order as vidsr draws from its
``torch.Generator``, both are seeded alike and compared exactly; upstream's ``np.random``
draws are matched by handing vidsr a ``np.random.RandomState`` seeded alike (it has the same
``uniform``). Upstream's ``random`` draws have no counterpart; there the deterministic cores
are compared, and ``feed_data``'s sequence is transcribed with BasicSR's primitives and the
scalar draws made from a numpy generator in ``degrade``'s documented order.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import sys
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidsr.training import degrade as dg

STUBS = Path(__file__).parent / "stubs"
BASICSR_VERSION = "1.4.2"


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_torchvision(name: str) -> bool:
    return name == "torchvision" or name.startswith("torchvision.")


@pytest.fixture(scope="module")
def ref() -> Iterator[types.SimpleNamespace]:
    """BasicSR 1.4.2's degradations, img_process_util, diffjpeg and transforms modules."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("basicsr is not installed: pip install --no-deps basicsr==1.4.2")
    version = importlib.metadata.version("basicsr")
    if version != BASICSR_VERSION:
        pytest.skip(f"basicsr {version} is installed, the reference is {BASICSR_VERSION}")
    pytest.importorskip("cv2", reason="BasicSR's files need opencv-python-headless (dev extra)")
    pytest.importorskip("scipy", reason="BasicSR's files need scipy (dev extra)")
    root = Path(next(iter(spec.submodule_search_locations)))
    # The torchvision stand-in, for degradations.py's import only: any torchvision already
    # imported is set aside meanwhile (and put back), the stand-in's modules dropped after.
    saved = {k: sys.modules.pop(k) for k in [k for k in sys.modules if _is_torchvision(k)]}
    np_err = np.geterr()  # degradations.py calls np.seterr at import
    sys.path.insert(0, str(STUBS))
    try:
        mods = types.SimpleNamespace(
            degradations=_load("_basicsr_ref_degradations", root / "data" / "degradations.py"),
            img_process=_load("_basicsr_ref_img_process", root / "utils" / "img_process_util.py"),
            diffjpeg=_load("_basicsr_ref_diffjpeg", root / "utils" / "diffjpeg.py"),
            transforms=_load("_basicsr_ref_transforms", root / "data" / "transforms.py"),
        )
    finally:
        sys.path.remove(str(STUBS))
        np.seterr(**np_err)
        for k in [k for k in sys.modules if _is_torchvision(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
    yield mods


@pytest.fixture
def keep_global_rngs() -> Iterator[None]:
    """Upstream's functions draw from the global generators: leave them as they were."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    np.random.set_state(np_state)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A smooth-ish test image in [0, 1] (random blobs plus a gradient), float32."""
    g = _gen(seed)
    n, c, h, w = shape
    coarse = torch.rand(n, c, max(h // 8, 2), max(w // 8, 2), generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = img + 0.1 * torch.rand(n, c, h, w, generator=g)
    return (img / img.amax()).clamp(0, 1).contiguous()


def _on_grid(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x * 255, (x * 255).round(), atol=1e-3, rtol=0))


# ------------------------------------------------------------------------------------------ #
# Kernels
# ------------------------------------------------------------------------------------------ #

SHAPES = [  # (sig_x, sig_y, theta)
    (0.2, 0.2, 0.0),
    (1.3, 0.6, 0.4),
    (3.0, 1.1, -2.5),
    (2.2, 2.9, math.pi / 2),
]


def test_kernel_utilities_match_basicsr(ref: types.SimpleNamespace) -> None:
    d = ref.degradations
    for k in (7, 13, 21):
        for ours, theirs in zip(dg.mesh_grid(k), d.mesh_grid(k), strict=True):
            np.testing.assert_array_equal(ours, theirs)
    for sx, sy, th in SHAPES:
        np.testing.assert_array_equal(dg.sigma_matrix2(sx, sy, th), d.sigma_matrix2(sx, sy, th))
        grid = d.mesh_grid(21)[0]
        sm = d.sigma_matrix2(sx, sy, th)
        np.testing.assert_array_equal(dg.pdf2(sm, grid), d.pdf2(sm, grid))


@pytest.mark.parametrize("k", [7, 15, 21])
@pytest.mark.parametrize("isotropic", [True, False])
def test_kernels_match_basicsr(ref: types.SimpleNamespace, k: int, isotropic: bool) -> None:
    d = ref.degradations
    for sx, sy, th in SHAPES:
        ours = dg.bivariate_Gaussian(k, sx, sy, th, isotropic=isotropic)
        theirs = d.bivariate_Gaussian(k, sx, sy, th, isotropic=isotropic)
        assert ours.dtype == theirs.dtype == np.float64
        np.testing.assert_array_equal(ours, theirs)
        for beta in (0.5, 0.8, 1.0, 2.7, 4.0):
            np.testing.assert_array_equal(
                dg.bivariate_generalized_Gaussian(k, sx, sy, th, beta, isotropic=isotropic),
                d.bivariate_generalized_Gaussian(k, sx, sy, th, beta, isotropic=isotropic),
            )
            np.testing.assert_array_equal(
                dg.bivariate_plateau(k, sx, sy, th, beta, isotropic=isotropic),
                d.bivariate_plateau(k, sx, sy, th, beta, isotropic=isotropic),
            )


def test_circular_lowpass_kernel_matches_basicsr(ref: types.SimpleNamespace) -> None:
    d = ref.degradations
    # torch's J1 (vidsr) vs scipy's (upstream): up to 2e-7 apart, see the function's docstring
    for cutoff in (np.pi / 5, np.pi / 3, 1.0, 1.7, 2.5, np.pi):
        for k, pad_to in ((7, 0), (9, 21), (13, 0), (13, 21), (21, 21), (21, 0)):
            with np.errstate(divide="ignore", invalid="ignore"):
                theirs = d.circular_lowpass_kernel(cutoff, k, pad_to=pad_to)
            ours = dg.circular_lowpass_kernel(cutoff, k, pad_to=pad_to)
            assert ours.shape == theirs.shape == (max(k, pad_to),) * 2
            assert ours.dtype == np.float64
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
            assert abs(ours.sum() - 1) < 1e-12


@pytest.mark.usefixtures("keep_global_rngs")
def test_random_kernels_draw_as_basicsr(ref: types.SimpleNamespace) -> None:
    """Same seeds, same draws: upstream on the global ``np.random``, vidsr on a RandomState."""
    d = ref.degradations
    common = ((0.2, 3), (0.2, 3), (-math.pi, math.pi))
    for seed in range(6):
        for iso in (True, False):
            for noise in (None, (0.75, 1.25)):
                np.random.seed(seed)
                theirs = d.random_bivariate_Gaussian(21, *common, noise_range=noise, isotropic=iso)
                ours = dg.random_bivariate_Gaussian(
                    21, *common, noise_range=noise, isotropic=iso, rng=np.random.RandomState(seed)
                )
                np.testing.assert_array_equal(ours, theirs)
                for name in ("random_bivariate_generalized_Gaussian", "random_bivariate_plateau"):
                    np.random.seed(seed)
                    theirs = getattr(d, name)(15, *common, (0.5, 4), noise, isotropic=iso)
                    ours = getattr(dg, name)(
                        15, *common, (0.5, 4), noise, isotropic=iso, rng=np.random.RandomState(seed)
                    )
                    np.testing.assert_array_equal(ours, theirs)


def test_random_mixed_kernels_and_make_kernels() -> None:
    rng = np.random.default_rng(7)
    for i, name in enumerate(dg.KERNEL_LIST):
        prob = [0.0] * len(dg.KERNEL_LIST)
        prob[i] = 1.0
        for k in (7, 21):
            kernel = dg.random_mixed_kernels(dg.KERNEL_LIST, prob, k, (0.2, 3), (0.2, 3), rng=rng)
            assert kernel.shape == (k, k), name
            assert abs(kernel.sum() - 1) < 1e-12
            if name.endswith("_iso"):
                np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    with pytest.raises(ValueError, match="skew"):
        dg.random_mixed_kernels(["skew"], [1.0], 21, rng=rng)

    cfg = dg.DegradationConfig()
    pulse = torch.zeros(21, 21)
    pulse[10, 10] = 1
    pulses = 0
    for seed in range(40):
        ks = dg.make_kernels(cfg, np.random.default_rng(seed))
        for t in (ks.kernel1, ks.kernel2, ks.sinc_kernel):
            assert t.shape == (21, 21) and t.dtype == torch.float32
            assert abs(float(t.double().sum()) - 1) < 1e-5
        pulses += int(torch.equal(ks.sinc_kernel, pulse))
        again = dg.make_kernels(cfg, np.random.default_rng(seed))
        assert torch.equal(again.kernel1, ks.kernel1) and torch.equal(again.kernel2, ks.kernel2)
        assert torch.equal(again.sinc_kernel, ks.sinc_kernel)
    assert 0 < pulses < 40  # final_sinc_prob 0.8: some pulses, mostly sincs
    never = dg.make_kernels(replace(cfg, final_sinc_prob=0.0), np.random.default_rng(0))
    assert torch.equal(never.sinc_kernel, pulse)
    always = dg.make_kernels(replace(cfg, final_sinc_prob=1.0), np.random.default_rng(0))
    assert not torch.equal(always.sinc_kernel, pulse)

    stacked = dg.stack_kernels([ks, never])
    assert stacked.kernel1.shape == stacked.sinc_kernel.shape == (2, 21, 21)


# ------------------------------------------------------------------------------------------ #
# filter2D, USM, resize
# ------------------------------------------------------------------------------------------ #


def test_filter2d_matches_basicsr(ref: types.SimpleNamespace) -> None:
    img = _image(1, (3, 3, 40, 36))
    rng = np.random.default_rng(1)
    per_sample = torch.stack(
        [dg.make_kernels(dg.DegradationConfig(), rng).kernel1 for _ in range(3)]
    )
    one = per_sample[:1]
    for kernel in (per_sample, one):
        theirs = ref.img_process.filter2D(img, kernel)
        assert torch.equal(dg.filter2D(img, kernel), theirs)
        # vidsr's also takes channels_last input (upstream's .view fails on it)
        cl = img.to(memory_format=torch.channels_last)
        assert torch.equal(dg.filter2D(cl, kernel), theirs)
    with pytest.raises(ValueError, match="kernel size"):
        dg.filter2D(img, torch.ones(1, 4, 4))


def test_usm_sharp_matches_basicsr(ref: types.SimpleNamespace) -> None:
    theirs = ref.img_process.USMSharp()
    ours = dg.USMSharp()
    assert torch.equal(ours.kernel, theirs.kernel)  # OpenCV's getGaussianKernel(51, 0)
    img = _image(2, (2, 3, 64, 72))
    assert torch.equal(ours(img), theirs(img))
    assert torch.equal(dg.usm_sharp(img), theirs(img))
    assert torch.equal(ours(img, weight=0.8, threshold=5), theirs(img, weight=0.8, threshold=5))


def test_resize_is_feed_datas_interpolate() -> None:
    img = _image(3, (2, 3, 50, 46))
    for mode in dg.RESIZE_MODES:
        for factor in (0.15, 0.73, 1, 1.5):
            out = dg.resize(img, mode, scale_factor=factor)
            assert torch.equal(out, F.interpolate(img, scale_factor=factor, mode=mode))
            assert out.shape[-2:] == (int(50 * factor), int(46 * factor))
        assert torch.equal(
            dg.resize(img, mode, size=(13, 17)), F.interpolate(img, (13, 17), None, mode)
        )
    with pytest.raises(ValueError, match="nearest"):
        dg.resize(img, "nearest", size=(2, 2))


# ------------------------------------------------------------------------------------------ #
# Noise
# ------------------------------------------------------------------------------------------ #


@pytest.mark.usefixtures("keep_global_rngs")
@pytest.mark.parametrize("gray_prob", [0.0, 0.4, 1.0])
def test_random_noise_matches_basicsr(ref: types.SimpleNamespace, gray_prob: float) -> None:
    d = ref.degradations
    img = _image(4, (4, 3, 24, 20))
    for seed in range(3):
        torch.manual_seed(seed)
        theirs = d.random_add_gaussian_noise_pt(img, (1, 30), gray_prob, clip=True, rounds=False)
        ours = dg.random_add_gaussian_noise_pt(img, (1, 30), gray_prob, True, False, gen=_gen(seed))
        assert torch.equal(ours, theirs)
        torch.manual_seed(seed)
        theirs = d.random_add_poisson_noise_pt(img, (0.05, 3), gray_prob, clip=True, rounds=True)
        ours = dg.random_add_poisson_noise_pt(img, (0.05, 3), gray_prob, True, True, gen=_gen(seed))
        assert torch.equal(ours, theirs)


@pytest.mark.usefixtures("keep_global_rngs")
def test_noise_cores_match_basicsr(ref: types.SimpleNamespace) -> None:
    d = ref.degradations
    img = _image(5, (3, 3, 16, 18))
    sigma = torch.tensor([1.0, 12.5, 30.0])
    gray = torch.tensor([0.0, 1.0, 0.0])
    # (a number sigma with gray noise only works for one sample upstream: its .view)
    cases = [(img, 10, 0), (img[:1], 7.5, 1), (img, sigma, gray), (img, sigma, torch.zeros(3))]
    for x, s, g in cases:
        torch.manual_seed(3)
        theirs = d.generate_gaussian_noise_pt(x, s, g)
        assert torch.equal(dg.generate_gaussian_noise_pt(x, s, g, gen=_gen(3)), theirs)
        torch.manual_seed(3)
        theirs = d.add_gaussian_noise_pt(x, s, g, clip=False, rounds=True)
        assert torch.equal(dg.add_gaussian_noise_pt(x, s, g, False, True, gen=_gen(3)), theirs)
        torch.manual_seed(3)
        theirs = d.generate_poisson_noise_pt(x, s / 10, g)
        assert torch.equal(dg.generate_poisson_noise_pt(x, s / 10, g, gen=_gen(3)), theirs)
        torch.manual_seed(3)
        theirs = d.add_poisson_noise_pt(x, s / 10, clip=True, rounds=False, gray_noise=g)
        ours = dg.add_poisson_noise_pt(x, s / 10, True, False, g, gen=_gen(3))
        assert torch.equal(ours, theirs)
    # the grayscale the gray Poisson noise uses is torchvision's
    assert torch.equal(dg.rgb_to_grayscale(img), d.rgb_to_grayscale(img, num_output_channels=1))


# ------------------------------------------------------------------------------------------ #
# DiffJPEG
# ------------------------------------------------------------------------------------------ #


@pytest.mark.parametrize("differentiable", [False, True])
def test_diffjpeg_matches_basicsr(ref: types.SimpleNamespace, differentiable: bool) -> None:
    theirs = ref.diffjpeg.DiffJPEG(differentiable=differentiable)
    ours = dg.DiffJPEG(differentiable=differentiable)
    for shape in ((4, 3, 32, 48), (4, 3, 21, 27)):
        img = _image(6, shape)
        for quality in (10, 30, 49.5, 50, 95):
            out = ours(img, quality=quality)
            assert out.shape == img.shape
            assert torch.equal(out, theirs(img, quality=quality))
        per_sample = torch.tensor([30.0, 49.9, 50.0, 94.2])
        out = ours(img, quality=per_sample)
        assert torch.equal(per_sample, torch.tensor([30.0, 49.9, 50.0, 94.2]))  # not modified
        assert torch.equal(out, theirs(img, quality=per_sample.clone()))
    low, high = ours(img, quality=10), ours(img, quality=95)
    assert (low - img).abs().mean() > (high - img).abs().mean()


# ------------------------------------------------------------------------------------------ #
# The whole degradation
# ------------------------------------------------------------------------------------------ #


def _pick(rng: np.random.Generator, names: list[str], prob: tuple[float, ...]) -> str:
    p = np.asarray(prob, dtype=np.float64)
    return names[int(rng.choice(len(p), p=p / p.sum()))]


def _feed_data_reference(
    ref: types.SimpleNamespace,
    gt_usm: torch.Tensor,
    kernels: dg.SampleKernels,
    opt: dg.DegradationConfig,
    scale: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """``RealESRGANModel.feed_data``'s synthesis (Real-ESRGAN 0.3.0, which cannot be loaded by
    path: it imports the BasicSR package), transcribed with BasicSR's own primitives. torch's
    draws come from the global generator; ``random.choices`` / ``random.choice`` /
    ``np.random.uniform`` are replaced by ``rng`` calls in degrade's documented order."""
    d = ref.degradations

    def filter2D(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        # upstream's .view fails on DiffJPEG's channels_last output under this torch
        return ref.img_process.filter2D(img.contiguous(), kernel)

    jpeger = ref.diffjpeg.DiffJPEG(differentiable=False)
    modes = ["area", "bilinear", "bicubic"]
    ori_h, ori_w = gt_usm.size()[2:4]

    out = filter2D(gt_usm, kernels.kernel1)
    updown_type = _pick(rng, ["up", "down", "keep"], opt.resize_prob)
    if updown_type == "up":
        s = rng.uniform(1, opt.resize_range[1])
    elif updown_type == "down":
        s = rng.uniform(opt.resize_range[0], 1)
    else:
        s = 1
    mode = modes[rng.integers(3)]
    out = F.interpolate(out, scale_factor=s, mode=mode)
    if rng.uniform() < opt.gaussian_noise_prob:
        out = d.random_add_gaussian_noise_pt(
            out, sigma_range=opt.noise_range, clip=True, rounds=False, gray_prob=opt.gray_noise_prob
        )
    else:
        out = d.random_add_poisson_noise_pt(
            out, scale_range=opt.poisson_scale_range, gray_prob=opt.gray_noise_prob, clip=True
        )
    jpeg_p = out.new_zeros(out.size(0)).uniform_(*opt.jpeg_range)
    out = torch.clamp(out, 0, 1)
    out = jpeger(out, quality=jpeg_p)

    if rng.uniform() < opt.second_blur_prob:
        out = filter2D(out, kernels.kernel2)
    updown_type = _pick(rng, ["up", "down", "keep"], opt.resize_prob2)
    if updown_type == "up":
        s = rng.uniform(1, opt.resize_range2[1])
    elif updown_type == "down":
        s = rng.uniform(opt.resize_range2[0], 1)
    else:
        s = 1
    mode = modes[rng.integers(3)]
    out = F.interpolate(out, size=(int(ori_h / scale * s), int(ori_w / scale * s)), mode=mode)
    if rng.uniform() < opt.gaussian_noise_prob2:
        out = d.random_add_gaussian_noise_pt(
            out,
            sigma_range=opt.noise_range2,
            clip=True,
            rounds=False,
            gray_prob=opt.gray_noise_prob2,
        )
    else:
        out = d.random_add_poisson_noise_pt(
            out, scale_range=opt.poisson_scale_range2, gray_prob=opt.gray_noise_prob2, clip=True
        )

    if rng.uniform() < 0.5:
        mode = modes[rng.integers(3)]
        out = F.interpolate(out, size=(ori_h // scale, ori_w // scale), mode=mode)
        out = filter2D(out, kernels.sinc_kernel)
        jpeg_p = out.new_zeros(out.size(0)).uniform_(*opt.jpeg_range2)
        out = torch.clamp(out, 0, 1)
        out = jpeger(out, quality=jpeg_p)
    else:
        jpeg_p = out.new_zeros(out.size(0)).uniform_(*opt.jpeg_range2)
        out = torch.clamp(out, 0, 1)
        out = jpeger(out, quality=jpeg_p)
        mode = modes[rng.integers(3)]
        out = F.interpolate(out, size=(ori_h // scale, ori_w // scale), mode=mode)
        out = filter2D(out, kernels.sinc_kernel)
    return torch.clamp((out * 255.0).round(), 0, 255) / 255.0


def _batch(seed: int, n: int = 2, size: int = 96) -> tuple[torch.Tensor, list[dg.SampleKernels]]:
    cfg = dg.DegradationConfig()
    rng = np.random.default_rng(1000 + seed)
    return _image(seed, (n, 3, size, size)), [dg.make_kernels(cfg, rng) for _ in range(n)]


@pytest.mark.usefixtures("keep_global_rngs")
def test_degrade_is_feed_datas_sequence(ref: types.SimpleNamespace) -> None:
    cfg = dg.preset("realesrgan")
    for seed in range(8):
        gt, kernels = _batch(seed)
        gt_usm = ref.img_process.USMSharp()(gt)
        torch.manual_seed(seed)
        with torch.no_grad():  # as feed_data (DiffJPEG's tables are parameters)
            theirs = _feed_data_reference(
                ref, gt_usm, dg.stack_kernels(kernels), cfg, 4, np.random.default_rng(seed)
            )
        ours = dg.degrade(gt, kernels, cfg, 4, _gen(seed), np.random.default_rng(seed))
        assert torch.equal(ours, theirs)


def test_degrade_deterministic_on_grid_and_sized() -> None:
    cfg = dg.preset("realesrgan")
    gt, kernels = _batch(11)
    a = dg.degrade(gt, kernels, cfg, 4, _gen(5), np.random.default_rng(5))
    usm = dg.usm_sharp(gt)  # computed once below: the 51x51 blur is the slow part on CPUs
    b = dg.degrade(gt, dg.stack_kernels(kernels), cfg, 4, _gen(5), np.random.default_rng(5))
    c = dg.degrade(gt, kernels, cfg, 4, _gen(6), np.random.default_rng(6), gt_usm=usm)
    assert a.shape == (2, 3, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and _on_grid(a)
    # generators are consumed, not reset: the next batch differs
    gen, rng = _gen(5), np.random.default_rng(5)
    first = dg.degrade(gt, kernels, cfg, 4, gen, rng, gt_usm=usm)
    assert torch.equal(first, a)
    assert not torch.equal(dg.degrade(gt, kernels, cfg, 4, gen, rng, gt_usm=usm), a)
    # x2 and a non-square crop
    gt2 = _image(12, (2, 3, 96, 128))
    lq = dg.degrade(gt2, kernels[:2], cfg, 2, _gen(0), np.random.default_rng(0))
    assert lq.shape == (2, 3, 48, 64) and _on_grid(lq)


def test_degrade_smallest_downscale_fits_the_kernels() -> None:
    # every first resize a 0.15 downscale: 96 -> 14 pixels, still more than the 10-pixel pad
    cfg = replace(dg.preset("realesrgan"), resize_prob=(0, 1, 0), resize_range=(0.15, 0.15 + 1e-9))
    gt, kernels = _batch(13)
    usm = dg.usm_sharp(gt)
    for seed in range(3):
        lq = dg.degrade(gt, kernels, cfg, 4, _gen(seed), np.random.default_rng(seed), gt_usm=usm)
        assert lq.shape == (2, 3, 24, 24) and _on_grid(lq)
    small = _image(14, (1, 3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        dg.degrade(small, kernels[:1], cfg, 4, _gen(0), np.random.default_rng(0))


def test_video_preset_round_trips_through_h264() -> None:
    video = dg.preset("video")
    assert video.video_prob == 0.5 and video.video_crf_range == (18, 35)
    assert replace(video, video_prob=0.0) == dg.preset("realesrgan")
    always = replace(video, video_prob=1.0)
    gt, kernels = _batch(15, n=2)
    usm = dg.usm_sharp(gt)
    plain = dg.degrade(
        gt, kernels, dg.preset("realesrgan"), 4, _gen(1), np.random.default_rng(1), gt_usm=usm
    )
    coded = dg.degrade(gt, kernels, always, 4, _gen(1), np.random.default_rng(1), gt_usm=usm)
    assert coded.shape == plain.shape == (2, 3, 24, 24)
    assert _on_grid(coded) and coded.min() >= 0 and coded.max() <= 1
    # the same draws up to the round trip (its draws come last), then H.264's loss
    assert not torch.equal(coded, plain)
    assert (coded - plain).abs().mean() < 0.1
    again = dg.degrade(gt, kernels, always, 4, _gen(1), np.random.default_rng(1), gt_usm=usm)
    assert torch.equal(coded, again)


def test_h264_round_trip_odd_sizes() -> None:
    img = _image(16, (2, 3, 23, 25))
    out = dg.h264_round_trip(img, [18, 35])
    assert out.shape == img.shape and out.dtype == torch.float32 and _on_grid(out)
    err = (out - img).abs().mean(dim=(1, 2, 3))
    assert float(err[0]) < 0.03 and err[0] < err[1]
    assert torch.equal(out, dg.h264_round_trip(img, [18, 35]))
    with pytest.raises(ValueError, match="crf"):
        dg.h264_round_trip(img, [18])


def test_config_defaults_are_train_realesrgan_x4plus() -> None:
    cfg = dg.preset("realesrgan")
    yml = {  # options/train_realesrgan_x4plus.yml, Real-ESRGAN 0.3.0
        "resize_prob": (0.2, 0.7, 0.1),
        "resize_range": (0.15, 1.5),
        "gaussian_noise_prob": 0.5,
        "noise_range": (1, 30),
        "poisson_scale_range": (0.05, 3),
        "gray_noise_prob": 0.4,
        "jpeg_range": (30, 95),
        "second_blur_prob": 0.8,
        "resize_prob2": (0.3, 0.4, 0.3),
        "resize_range2": (0.3, 1.2),
        "gaussian_noise_prob2": 0.5,
        "noise_range2": (1, 25),
        "poisson_scale_range2": (0.05, 2.5),
        "gray_noise_prob2": 0.4,
        "jpeg_range2": (30, 95),
        "gt_size": 256,
        "queue_size": 180,
        "l1_gt_usm": True,
        "percep_gt_usm": True,
        "gan_gt_usm": False,
        "blur_kernel_size": 21,
        "kernel_prob": (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        "sinc_prob": 0.1,
        "blur_sigma": (0.2, 3),
        "betag_range": (0.5, 4),
        "betap_range": (1, 2),
        "blur_kernel_size2": 21,
        "kernel_prob2": (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        "sinc_prob2": 0.1,
        "blur_sigma2": (0.2, 1.5),
        "betag_range2": (0.5, 4),
        "betap_range2": (1, 2),
        "final_sinc_prob": 0.8,
        "video_prob": 0.0,
    }
    for key, value in yml.items():
        assert getattr(cfg, key) == value, key
    assert cfg.kernel_list == cfg.kernel_list2 == dg.KERNEL_LIST
    with pytest.raises(ValueError, match="unknown degradation preset"):
        dg.preset("anime")


# ------------------------------------------------------------------------------------------ #
# Crop and pool
# ------------------------------------------------------------------------------------------ #


def test_paired_random_crop_keeps_lq_and_gt_aligned() -> None:
    gt = torch.arange(2 * 3 * 96 * 80, dtype=torch.float32).reshape(2, 3, 96, 80)
    lq = gt[:, :, ::4, ::4]
    seen = set()
    for seed in range(6):
        (gt_c, usm_c), lq_c = dg.paired_random_crop(
            [gt, gt + 1], lq, 64, 4, np.random.default_rng(seed)
        )
        assert gt_c.shape == usm_c.shape == (2, 3, 64, 64) and lq_c.shape == (2, 3, 16, 16)
        assert torch.equal(lq_c, gt_c[:, :, ::4, ::4]) and torch.equal(usm_c, gt_c + 1)
        seen.add(float(gt_c[0, 0, 0, 0]))
    assert len(seen) > 1
    with pytest.raises(ValueError, match="smaller"):
        dg.paired_random_crop([gt], lq, 128, 4, np.random.default_rng(0))


def _pool_reference(queue: dict, lq: torch.Tensor, gt: torch.Tensor, size: int):
    """``RealESRGANModel._dequeue_and_enqueue`` transcribed (global torch generator)."""
    b, c, h, w = lq.size()
    if "lr" not in queue:
        queue["lr"] = torch.zeros(size, c, h, w)
        queue["gt"] = torch.zeros(size, *gt.shape[1:])
        queue["ptr"] = 0
    if queue["ptr"] == size:
        idx = torch.randperm(size)
        queue["lr"], queue["gt"] = queue["lr"][idx], queue["gt"][idx]
        lq_out, gt_out = queue["lr"][0:b].clone(), queue["gt"][0:b].clone()
        queue["lr"][0:b], queue["gt"][0:b] = lq.clone(), gt.clone()
        return lq_out, gt_out
    queue["lr"][queue["ptr"] : queue["ptr"] + b] = lq.clone()
    queue["gt"][queue["ptr"] : queue["ptr"] + b] = gt.clone()
    queue["ptr"] += b
    return lq, gt


@pytest.mark.usefixtures("keep_global_rngs")
def test_pair_pool_as_upstream_and_state_round_trips() -> None:
    size, b = 12, 3
    batches = [
        (
            torch.rand(b, 3, 4, 4, generator=_gen(i)),
            torch.rand(b, 3, 16, 16, generator=_gen(100 + i)),
        )
        for i in range(10)
    ]
    pool, queue, gen = dg.PairPool(size), {}, _gen(42)
    torch.manual_seed(42)
    for i, (lq, gt) in enumerate(batches[:7]):
        ours = pool(lq, gt, gen)
        theirs = _pool_reference(queue, lq, gt, size)
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
        if i < 4:
            assert ours[0] is lq  # filling: returned as is
        else:
            assert not torch.equal(ours[0], lq)
    state = pool.state()
    assert set(state) == {"size", "ptr", "queue_lr", "queue_gt"}
    assert all(isinstance(v, (int, torch.Tensor)) for v in state.values())
    assert state["ptr"] == size and state["queue_lr"].shape == (size, 3, 4, 4)
    resumed = dg.PairPool()
    resumed.load_state(state)
    gen_state = gen.get_state()
    gen2 = torch.Generator()
    gen2.set_state(gen_state)
    for lq, gt in batches[7:]:
        a, b_ = pool(lq, gt, gen), resumed(lq, gt, gen2)
        assert torch.equal(a[0], b_[0]) and torch.equal(a[1], b_[1])
    empty = dg.PairPool(6)
    assert empty.state() == {"size": 6, "ptr": 0}
    fresh = dg.PairPool()
    fresh.load_state(empty.state())
    assert fresh.size == 6 and fresh.queue_lr is None
    with pytest.raises(ValueError, match="divisible"):
        dg.PairPool(10)(torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 16, 16), _gen(0))
    with pytest.raises(ValueError, match="pointer"):
        dg.PairPool().load_state({"size": 6, "ptr": 9})
