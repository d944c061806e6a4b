"""`vidsr bench` through the real command line (in-process), and its table and chart."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from helpers import run_cli as run
from PIL import Image

from vidsr.bench import STAGES, format_table, write_plot
from vidsr.errors import UsageError
from vidsr.options import find

FPS_FIELDS = [f"{name}_fps" for name in STAGES]


@pytest.mark.slow
def test_bench_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the bench's own temp folder
    png = tmp_path / "bench.png"
    args = [
        "bench",
        "--device",
        "cpu",
        "--size",
        "64x36",
        "--frames",
        "8",
        "--json",
        "--lanes",
        "3",
        "--device-colour",
        "on",
    ]
    code, out, err = run(capsys, *args, "--plot", str(png))
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # one JSON object, nothing else on stdout
    r = json.loads(out)
    for key in FPS_FIELDS:
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
    for key in ("pipeline_frames", "segment_frames", "serial_frames", "decode_frames"):
        assert r[key] == 8, key
    assert 50 < r["peak_rss_mb"] < 8000
    assert r["rss_method"] in ("procfs", "psutil")
    assert set(r["stage_peak_rss_mb"]) == set(STAGES)
    assert r["peak_gpu_mb"] is None
    s = r["settings"]
    assert (s["size"], s["output_size"], s["frames"]) == ("64x36", "256x144", 8)
    assert (s["device"], s["precision"], s["batch_size"]) == ("cpu", "fp32", 1)
    assert s["model"] == "realesr-animevideov3" and s["serial_precision"] == "fp32"
    m = r["machine"]
    assert m["cpu_count"] >= 1 and m["torch_version"] and m["device_name"].startswith("cpu")
    assert r["pipeline_vs_model"] == pytest.approx(r["pipeline_fps"] / r["model_fps"], rel=1e-2)
    assert s["lanes"] == 3  # --lanes reaches the pipeline
    assert s["device_colour"] == "on"  # and the segment/pipeline stages convert in torch
    assert r["pipeline_vs_model_lanes"] == pytest.approx(
        r["pipeline_fps"] / r["model_lanes_fps"], rel=1e-2
    )
    assert r["pipeline_stages"]["infer"]["frames"] == 8
    # The chart: a real PNG with a bar per stage; the temporary folder is gone.
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.width >= 600
    assert list(scratch.iterdir()) == []
    assert "bench: pipeline..." in err


@pytest.mark.parametrize("size", ["abc", "64x", "63x36", "8x8", "64*36", ""])
def test_bad_size_is_one_line(capsys: pytest.CaptureFixture[str], size: str) -> None:
    code, out, err = run(capsys, "bench", "--device", "cpu", "--size", size)
    assert code == UsageError.exit_code
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "--size" in err and "Traceback" not in err


def test_plot_must_be_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _out, err = run(capsys, "bench", "--device", "cpu", "--plot", str(tmp_path / "a.jpg"))
    assert code == UsageError.exit_code and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.jpg").exists()


def test_bench_size_option() -> None:
    size = find("bench", "size")
    assert size is not None
    assert size.read("128x72", "cli") == (128, 72)
    assert size.read(" 1920X1080 ", "cli") == (1920, 1080)
    with pytest.raises(UsageError, match=r"size= must have an even width and height"):
        size.read("127x72", "cli")
    with pytest.raises(UsageError, match=r"size= must be WIDTHxHEIGHT"):
        size.read("big", "cli")


def _fake_result() -> dict:
    r = {
        f"{name}_fps": fps
        for name, fps in zip(
            STAGES, [900, 2400, 14, 16.5, 8.5, 21.0, 300, 800, 12, 11.5, 7], strict=True
        )
    }
    r.update(
        pipeline_vs_model=0.82,
        pipeline_vs_model_lanes=0.70,
        pipeline_vs_serial=1.64,
        pipeline_bound="infer",
        peak_rss_mb=420.0,
        peak_gpu_mb=None,
        settings={
            "model": "realesr-animevideov3",
            "size": "128x72",
            "output_size": "512x288",
            "frames": 48,
            "device": "cpu",
            "precision": "fp32",
            "batch_size": 1,
            "lanes": 2,
            "codec": "libx264",
            "compile": False,
        },
        machine={
            "device_name": "cpu: test",
            "cpu_usable": 2,
            "torch_version": "2.x",
            "torch_threads": 2,
        },
    )
    return r


def test_table_and_chart_from_figures(tmp_path: Path) -> None:
    r = _fake_result()
    table = format_table(r)
    assert "pipeline (run_job)" in table and "11.50" in table and "0.82" in table
    assert "lanes 2" in table and "pipeline / model lanes: 0.70" in table
    png = write_plot(r, tmp_path / "c.png")
    with Image.open(png) as im:
        assert im.format == "PNG"
        # The pipeline bar (red) is drawn.
        assert (200, 60, 60) in {c for _, c in im.getcolors(maxcolors=1 << 16)}
