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


def run_main(*args: str | Path) -> int:
    """Run ``vidsr ARGS`` in-process and return its exit code (output left where it goes)."""
    from vidsr.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def run_cli(capture: Any, *args: str | Path) -> tuple[int, str, str]:
    """Run ``vidsr ARGS`` in-process: (exit code, stdout, stderr), read from ``capture``
    (pytest's capsys or capfd), or caught here when ``capture`` is None (module fixtures)."""
    import contextlib
    import io

    if capture is not None:
        code = run_main(*args)
        return code, *capture.readouterr()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_main(*args)
    return code, out.getvalue(), err.getvalue()


def json_events(stdout: str) -> list[dict[str, Any]]:
    """The ``--json`` lines of a run's stdout."""
    import json

    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def upscale_settings(**options: Any) -> Any:
    """``vidsr upscale``'s settings from Python values (CPU unless told otherwise)."""
    from vidsr.settings import make_settings

    return make_settings("upscale", {"device": "cpu", **options})


def video_plan(source: Path, output: Path, executor: Any = None, **options: Any) -> tuple[Any, Any]:
    """(plan, executor) of an in-process run of ``source`` into ``output``: the settings
    resolved and the run planned as ``vidsr upscale`` does it."""
    from vidsr.jobs.local import InProcessExecutor
    from vidsr.run.job import prepare

    settings = upscale_settings(output=output, **options)
    executor = executor or InProcessExecutor(settings.device)
    return prepare(settings, source, executor), executor


def run_video(
    source: Path, output: Path, *, upscaler: Any = None, on_event: Any = None, **options: Any
) -> Any:
    """``vidsr upscale SOURCE -o OUTPUT`` in this process (on the CPU, with ``upscaler`` if
    given), returning its ``UpscaleResult``."""
    from vidsr.jobs.local import InProcessExecutor
    from vidsr.run.job import run_job

    executor = InProcessExecutor("cpu", upscaler)
    plan, executor = video_plan(source, output, executor, **options)
    return run_job(plan, executor, on_event=on_event)
