"""Small shared helpers for the tests (no fixtures here; see conftest.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
OFFICIAL_ANIMEVIDEOV3 = SHARED_WEIGHTS / "realesr-animevideov3.pth"


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, peak: float = 1.0) -> float:
    a = torch.as_tensor(np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray) else a)
    b = torch.as_tensor(np.asarray(b, dtype=np.float64) if isinstance(b, np.ndarray) else b)
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def test_image(h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) float in [0, 1]: gradients, hard edges and a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([xx, yy, (xx + yy) / 2])
    img[:, h // 4 : h // 2, w // 3 : w // 2] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    img[:, 3 * h // 4 :, :] = 0.05
    img += 0.03 * torch.rand(img.shape, generator=g)
    return img.clamp(0, 1)[None]


test_image.__test__ = False  # not a pytest test


def run_cli(capture: Any, *args: str) -> tuple[int, str, str]:
    """Run ``vidsr ARGS`` in-process: (exit code, stdout, stderr) read from ``capture``
    (pytest's capsys or capfd)."""
    from vidsr.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capture.readouterr()
    return code, out, err
