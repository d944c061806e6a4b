"""Every run option of ``upscale``, ``batch``, ``bench`` and ``preview``, declared once.

Each :class:`Option` says its name, kind (how a value is read and what it becomes), default,
allowed values, help text, its check, which commands take it, whether a preset may set it,
whether it belongs to the resume fingerprint, and whether ``vidsr.upscale()`` takes it. From
this table, and from nothing else:

- the CLI builds its click options (``vidsr.cli``);
- :mod:`vidsr.settings` builds the frozen settings of each command, which check every value
  on construction, and the resume fingerprint;
- ``vidsr.upscale()`` builds its keyword arguments (``vidsr.api``);
- presets check their keys and values (``vidsr.run.presets``).

Names: the Python name (``tile_pad``) is the keyword argument and the settings field; the flag
is ``--tile-pad``; the preset key is ``tile-pad``. A bad value gets the same one-line
``UsageError`` whoever gave it, with the option spelled the caller's way (see
:func:`vidsr.errors.opt`).

This module imports neither click nor torch: it is plain data and plain checks.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from vidsr.errors import UnknownOptionError, UsageError, opt

#: The commands whose options the table declares.
COMMANDS = (
    "upscale", "batch", "bench", "preview", "finetune_prepare", "finetune_train", "finetune_export",
)  # fmt: skip

#: The values of the auto/on/off switches (``--device-colour``, ``--hw-decode``).
SWITCH = ("auto", "on", "off")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
BACKENDS = ("local", "ray")
ORDERS = ("name", "size", "mtime")
DEINTERLACE = ("off", "auto", "bwdif", "yadif")
#: ``vidsr batch --name``: the default template and its fields.
DEFAULT_NAME_TEMPLATE = "{stem}.{model}.x{scale}.mkv"
NAME_FIELDS = ("stem", "name", "ext", "model", "scale", "codec")
DEFAULT_MODEL = "realesr-animevideov3"


class _Bad(Exception):
    """A value that does not fit its kind: ``expected`` says what would."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


# --- kinds: how a value is read ---------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How an option's value is read from command-line text (``from_text``) and from a Python
    or TOML value (``from_value``), and what it becomes (``annotation``). ``metavar`` is its
    placeholder in ``--help``; ``flag`` kinds take no value on the command line;
    ``multiple`` ones may be repeated there."""

    name: str
    annotation: str
    metavar: str
    from_text: Callable[[str], Any]
    from_value: Callable[[Any], Any]
    flag: bool = False
    multiple: bool = False


def _int_text(text: str) -> int:
    if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        raise _Bad("a whole number")
    return int(text)


def _int_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("a whole number")
    return value


def _float_text(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Bad("a number") from None
    return _float_value(value)


def _float_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("a number")
    if not math.isfinite(value):
        raise _Bad("a finite number")
    return float(value)


def _str_value(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("a string")
    return value


def _path_value(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise _Bad("a path")
    return Path(value)


def _bool_value(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def _names_value(value: Any) -> tuple[str, ...]:
    """A comma-separated string or a sequence of strings -> a tuple of stripped names."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = [part for v in value for part in v.split(",")]
    else:
        raise _Bad("a comma-separated string or a list of strings")
    return tuple(i.strip() for i in items if i.strip())


def _pair(item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise _Bad("KEY=VALUE")
        return key.strip(), val
    if (
        isinstance(item, list | tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and item[0].strip()
    ):
        return item[0].strip(), str(item[1])
    raise _Bad("KEY=VALUE")


def _pairs_value(value: Any) -> tuple[tuple[str, str], ...]:
    """``{"k": "v"}``, ``["k=v", ...]`` or ``[("k", "v"), ...]`` -> ``(("k", "v"), ...)``."""
    if isinstance(value, Mapping):
        items: Iterable[Any] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise _Bad("KEY=VALUE pairs (a table, or a list of KEY=VALUE strings)")
    try:
        return tuple(_pair(i) for i in items)
    except _Bad:
        raise _Bad("KEY=VALUE pairs (a table, or a list of KEY=VALUE strings)") from None


def _paths_value(value: Any) -> tuple[Path, ...]:
    if isinstance(value, str | os.PathLike):
        value = [value]
    if not isinstance(value, list | tuple):
        raise _Bad("a list of paths")
    return tuple(_path_value(v) for v in value)


def _size_value(value: Any) -> tuple[int, int]:
    """``"128x72"`` or ``(128, 72)`` -> ``(128, 72)``."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not m:
            raise _Bad("WIDTHxHEIGHT (e.g. 128x72)")
        return int(m.group(1)), int(m.group(2))
    if isinstance(value, list | tuple) and len(value) == 2:
        return _int_value(value[0]), _int_value(value[1])
    raise _Bad("WIDTHxHEIGHT (e.g. 128x72)")


_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")


def parse_time(text: str) -> Fraction:
    """``SS[.f]``, ``MM:SS[.f]`` or ``HH:MM:SS[.f]`` -> seconds (``ValueError`` otherwise)."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(text)
    h, mnt, s = m.groups()
    return Fraction(int(h or 0) * 3600 + int(mnt or 0) * 60) + Fraction(s)


def _time_value(value: Any) -> Fraction:
    """Seconds as a number, or ``SS``, ``MM:SS``, ``HH:MM:SS(.fff)`` text -> a Fraction."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            raise _Bad("SECONDS, MM:SS or HH:MM:SS(.fff)") from None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value < 0:
            raise _Bad("a time of 0 or more")
        return Fraction(value).limit_denominator(10**6)
    raise _Bad("SECONDS, MM:SS or HH:MM:SS(.fff)")


def _region_value(value: Any) -> tuple[int, int, int, int]:
    """``"WxH+X+Y"`` or ``(x, y, w, h)`` -> ``(x, y, w, h)`` in source pixels."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\+(\d+)\+(\d+)\s*", value)
        if not m:
            raise _Bad("WxH+X+Y (e.g. 320x180+100+50)")
        w, h, x, y = (int(g) for g in m.groups())
        return x, y, w, h
    if isinstance(value, list | tuple) and len(value) == 4:
        x, y, w, h = (_int_value(v) for v in value)
        return x, y, w, h
    raise _Bad("WxH+X+Y (e.g. 320x180+100+50)")


def _crop_value(value: Any) -> str | tuple[int, int, int, int]:
    """``"auto"``, ``"WxH+X+Y"`` or ``(x, y, w, h)``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _region_value(value)
    except _Bad:
        raise _Bad("auto or WxH+X+Y (e.g. 704x384+8+48)") from None


INT = Kind("int", "int", "INTEGER", _int_text, _int_value)
FLOAT = Kind("float", "float", "NUMBER", _float_text, _float_value)
STR = Kind("str", "str", "TEXT", str, _str_value)
PATH = Kind("path", "Path", "PATH", Path, _path_value)
FLAG = Kind("flag", "bool", "", _bool_value, _bool_value, flag=True)
NAMES = Kind("names", "tuple[str, ...]", "A,B,...", _names_value, _names_value)
PAIRS = Kind(
    "pairs", "tuple[tuple[str, str], ...]", "KEY=VALUE", _pair, _pairs_value, multiple=True
)
PATHS = Kind("paths", "tuple[Path, ...]", "PATH", Path, _paths_value, multiple=True)
SIZE = Kind("size", "tuple[int, int]", "WxH", _size_value, _size_value)
TIME = Kind("time", "Fraction", "TIME", _time_value, _time_value)
REGION = Kind("region", "tuple[int, int, int, int]", "WxH+X+Y", _region_value, _region_value)
CROP = Kind("crop", "str | tuple[int, int, int, int]", "auto|WxH+X+Y", _crop_value, _crop_value)


# --- checks -----------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def _at_least(low: float, what: str = "") -> Check:
    return lambda v: None if v >= low else f"must be at least {low:g}{what}"


def _zero_or_positive(meaning: str) -> Check:
    return lambda v: None if v >= 0 else f"must be 0 ({meaning}) or positive"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def _tile(v: int) -> str | None:
    return None if v == 0 or v >= 8 else "must be 0 (whole frames) or at least 8 pixels"


def _scale(v: float) -> str | None:
    return None if 0 < v <= 16 else "must be in (0, 16]"


def _unit(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be between 0 and 1"


#: The device spellings (``cuda:N`` captures N).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::(\d+))?|intel:gpu(?:\.\d+)?")


def _device(v: str) -> str | None:
    if DEVICE_PATTERN.fullmatch(v.strip().lower()):
        return None
    return "must be auto, cpu, cuda, cuda:N or intel:gpu (OpenVINO)"


def _devices(v: tuple[str, ...]) -> str | None:
    bad = [d for d in v if d.lower() != "all" and _device(d) is not None]
    if bad:
        return f"takes devices like cuda:0,cuda:1 or all or cpu,cpu ({bad[0]!r} is none)"
    if "all" in (d.lower() for d in v) and len(v) > 1:
        return "takes all alone, or a list of devices"
    return None


def _not_empty(v: Any) -> str | None:
    return None if v else "must not be empty"


def _name_template(v: str) -> str | None:
    fields = ", ".join("{" + f + "}" for f in NAME_FIELDS)
    try:
        parsed = list(string.Formatter().parse(v))
    except ValueError as exc:
        return f"is not a valid template ({exc})"
    for _text, field, _spec, _conv in parsed:
        if field is not None and field not in NAME_FIELDS:
            return f"has an unknown field {{{field}}}; use {fields}"
    return None


def _bench_size(v: tuple[int, int]) -> str | None:
    w, h = v
    if not (16 <= w <= 7680 and 16 <= h <= 4320) or w % 2 or h % 2:
        return "must have an even width and height, 16x16 to 7680x4320"
    return None


def _region(v: tuple[int, int, int, int]) -> str | None:
    return None if v[2] >= 1 and v[3] >= 1 else "needs a width and height of at least 1"


def _out_side(v: int) -> str | None:
    if not 16 <= v <= 16384 or v % 2:
        return "must be even (4:2:0 video), 16 to 16384 pixels"
    return None


def _out_size(v: tuple[int, int]) -> str | None:
    if _out_side(v[0]) or _out_side(v[1]):
        return "must have an even width and height (4:2:0 video), 16 to 16384 pixels"
    return None


def _crop(v: Any) -> str | None:
    if v == "auto":
        return None
    x, y, w, h = v
    if w < 16 or h < 16 or w % 2 or h % 2 or x % 2 or y % 2:
        return "needs an even width, height and offsets (4:2:0 chroma), at least 16x16"
    return None


def _ft_gt_size(v: int) -> str | None:
    return None if 32 <= v <= 1024 and v % 16 == 0 else "must be a multiple of 16, 32 to 1024"


def _png(v: Path) -> str | None:
    return None if v.suffix.lower() == ".png" else "writes a PNG: give a .png file"


# --- the table --------------------------------------------------------------------------------

_UP = frozenset({"upscale", "batch"})
_BATCH = frozenset({"batch"})
_BENCH = frozenset({"bench"})
_PREVIEW = frozenset({"preview"})
_FT_PREP = frozenset({"finetune_prepare"})
_FT_TRAIN = frozenset({"finetune_train"})
_FT_EXPORT = frozenset({"finetune_export"})
#: ``vidsr finetune train --degradation``: Real-ESRGAN's own, and vidsr's with H.264.
DEGRADATIONS = ("realesrgan", "video")


@dataclass(frozen=True)
class Option:
    """One option. See the module docstring.

    ``commands``: the commands that take it. ``required``: those where it must be given.
    ``preset``: a preset file may set it (upscale and batch read presets). ``fingerprint``: a
    job resumed with another value would mix outputs, so it is part of the resume
    fingerprint (its resolved value: ``auto`` resolved). ``api``: ``vidsr.upscale()`` takes
    it as a keyword argument (options that only steer the terminal, such as ``json``, do not).
    """

    name: str
    kind: Kind
    default: Any
    help: str
    commands: frozenset[str]
    choices: tuple[str, ...] = ()
    check: Check | None = None
    short: str | None = None
    metavar: str | None = None
    required: frozenset[str] = frozenset()
    preset: bool = True
    fingerprint: bool = False
    api: bool = True

    @property
    def flag(self) -> str:
        """The command-line flag: ``--tile-pad``."""
        return "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """The preset key: ``tile-pad``."""
        return self.name.replace("_", "-")

    def read(self, value: Any, source: str) -> Any:
        """``value`` as this option's value, checked: text from the command line (``cli``),
        a Python value (``api``) or a TOML value (``preset``). ``None`` stays ``None`` where
        the default is ``None`` (the option is unset). A ``UsageError`` naming the option
        (spelled at rendering, see :func:`vidsr.errors.opt`) for a value that does not fit."""
        if value is None and self.default is None:
            return None
        try:
            if source == "cli" and isinstance(value, str):
                parsed = self.kind.from_text(value)
            elif source == "cli" and self.kind.multiple and isinstance(value, tuple):
                parsed = self.kind.from_value(
                    tuple(self.kind.from_text(v) if isinstance(v, str) else v for v in value)
                )
            else:
                parsed = self.kind.from_value(value)
        except _Bad as bad:
            raise UsageError(
                f"{opt(self.name)} must be {bad.expected}, not {_shown(value, source)}"
            ) from None
        if self.choices and parsed not in self.choices:
            raise UsageError(
                f"{opt(self.name)} must be one of {', '.join(self.choices)}, "
                f"not {_shown(value, source)}"
            )
        problem = self.check(parsed) if self.check else None
        if problem:
            raise UsageError(f"{opt(self.name)} {problem}, not {_shown(value, source)}")
        return parsed


def _shown(value: Any, source: str) -> str:
    """A refused value as its caller wrote it: command-line text as typed (shell-quoted),
    a TOML value in TOML, a Python value as its repr."""
    if source == "cli" and isinstance(value, str):
        return shlex.quote(value)
    if source == "cli" and isinstance(value, tuple):
        return " ".join(shlex.quote(str(v)) for v in value)
    if source == "preset":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _opt(
    name: str, kind: Kind, default: Any, help: str, commands: Iterable[str], **kw: Any
) -> Option:
    return Option(name, kind, default, help, frozenset(commands), **kw)


OPTIONS: tuple[Option, ...] = (
    # --- the model, and how it runs
    _opt(
        "model",
        STR,
        DEFAULT_MODEL,
        "Registry name (see `vidsr models list`), imported name, or a "
        ".pth/.pt/.ckpt/.safetensors/.param file.",
        _UP | _BENCH,
        short="-m",
        check=_not_empty,
    ),  # the weights' hash is fingerprinted instead: the same weights by name or by file
    _opt(
        "models",
        NAMES,
        (DEFAULT_MODEL,),
        "Comma-separated models to compare.",
        _PREVIEW,
        check=lambda v: None if v else "needs at least one model",
    ),
    _opt(
        "device",
        STR,
        "auto",
        "auto | cpu | cuda | cuda:N | intel:gpu (an Intel GPU through OpenVINO).",
        _UP | _BENCH | _PREVIEW,
        check=_device,
    ),
    _opt(
        "runtime",
        STR,
        "auto",
        "What runs the model: torch, openvino (CPUs and Intel GPUs; pip install "
        "'vidsr[openvino]'), onnxruntime (.onnx files; pip install 'vidsr[onnx]'), or auto "
        "(OpenVINO on the CPU where installed, for frames of at least 320x240: see "
        "docs/BENCHMARKS.md; an .onnx file: OpenVINO, else ONNX Runtime, which also runs it "
        "on CUDA; torch otherwise).",
        _UP | _BENCH | _PREVIEW,
        choices=RUNTIMES,
        fingerprint=True,
    ),
    _opt(
        "precision",
        STR,
        "auto",
        "auto = fp16 on CUDA, fp32 on CPU. fp16 on CPU is refused.",
        _UP | _BENCH | _PREVIEW,
        choices=PRECISIONS,
        fingerprint=True,
    ),
    _opt(
        "tile",
        INT,
        0,
        "Tile edge in input pixels (0 = whole frame).",
        _UP | _PREVIEW,
        check=_tile,
        fingerprint=True,
    ),
    _opt(
        "tile_pad",
        INT,
        10,
        "Context pixels around each tile.",
        _UP | _PREVIEW,
        check=_zero_or_positive("none"),
        fingerprint=True,
    ),
    _opt(
        "scale",
        FLOAT,
        None,
        "Final scale factor (default: the model's own; preview: the largest of its models).",
        _UP | _PREVIEW,
        short="-s",
        check=_scale,
        fingerprint=True,
    ),
    _opt(
        "denoise_strength",
        FLOAT,
        None,
        "realesr-general-x4v3 only: 0 keeps noise, 1 removes it (default 0.5, as Real-ESRGAN).",
        _UP | _PREVIEW,
        check=_unit,
        fingerprint=True,
    ),
    _opt(
        "compile",
        FLAG,
        False,
        "torch.compile the model (compiles on the first frames; see docs/BENCHMARKS.md).",
        _UP | _BENCH,
        fingerprint=True,
    ),
    _opt(
        "batch_size",
        INT,
        0,
        "Frames per model call (0 = auto).",
        _UP | _BENCH,
        check=_zero_or_positive("auto"),
    ),
    _opt(
        "lanes",
        INT,
        0,
        "CPU only: batches run at once, each on a share of the threads (0 = auto).",
        _UP | _BENCH,
        check=_zero_or_positive("auto"),
    ),
    _opt(
        "device_colour",
        STR,
        "auto",
        "Where YUV<->RGB runs: auto = on the GPU with CUDA, numpy on the CPU otherwise.",
        _UP | _BENCH,
        choices=SWITCH,
        fingerprint=True,
    ),
    _opt(
        "hw_decode",
        STR,
        "off",
        "NVDEC decoding (auto = with CUDA); falls back to software where unusable. Off by "
        "default until a GPU benchmark shows it helps.",
        _UP,
        choices=SWITCH,
    ),
    # --- DVD and TV sources: field repair, time range, crop, output size
    _opt(
        "deinterlace",
        STR,
        "off",
        "Deinterlace before the model: bwdif, yadif, or auto (bwdif where idet finds the "
        "file interlaced).",
        _UP,
        choices=DEINTERLACE,
        fingerprint=True,
    ),
    _opt(
        "deinterlace_rate",
        STR,
        "frame",
        "frame = one frame per frame; field = one per field (double rate, smoother motion).",
        _UP,
        choices=("frame", "field"),
        fingerprint=True,
    ),
    _opt(
        "ivtc",
        FLAG,
        False,
        "Inverse telecine where the file is telecined (hard: field matching and decimation; "
        "soft: the coded film frames), 29.97 -> 23.976 progressive.",
        _UP,
        fingerprint=True,
    ),
    _opt(
        "start",
        TIME,
        None,
        "Process from here: the first frame at or after it (SECONDS or HH:MM:SS.mmm, from the "
        "file's start, as ffmpeg -ss).",
        _UP,
        fingerprint=True,
    ),
    _opt(
        "end",
        TIME,
        None,
        "Process up to here: frames before it (as ffmpeg -to).",
        _UP,
        fingerprint=True,
    ),
    _opt(
        "duration",
        TIME,
        None,
        "Process this long from --start (as ffmpeg -t).",
        _UP,
        check=lambda v: None if v > 0 else "must be positive",
        fingerprint=True,
    ),
    _opt(
        "crop",
        CROP,
        None,
        "Crop before the model: WxH+X+Y in source pixels, or auto (black borders found over "
        "a sample of frames).",
        _UP,
        check=_crop,
        fingerprint=True,
    ),
    _opt(
        "size",
        SIZE,
        None,
        "Output size WxH (the display aspect is kept through the sample aspect ratio).",
        _UP,
        check=_out_size,
        fingerprint=True,
    ),
    _opt(
        "width",
        INT,
        None,
        "Output width; the height follows the display aspect. Square pixels.",
        _UP,
        check=_out_side,
        fingerprint=True,
    ),
    _opt(
        "height",
        INT,
        None,
        "Output height; the width follows the display aspect. Square pixels.",
        _UP,
        check=_out_side,
        fingerprint=True,
    ),
    _opt(
        "square_pixels",
        FLAG,
        False,
        "Resample an anamorphic source to square pixels at its display aspect.",
        _UP,
        fingerprint=True,
    ),
    _opt(
        "reuse",
        STR,
        "off",
        "Reuse the model's output for held drawings: exact (tiles whose input is unchanged), "
        "auto (also within compression noise), off.",
        _UP,
        choices=("off", "exact", "auto"),
        fingerprint=True,
    ),
    # --- the output file and its encoding
    _opt(
        "output",
        PATH,
        None,
        "Output file, or folder for a folder input (batch: the folder for every output).",
        _UP,
        short="-o",
        required=_BATCH,
        preset=False,
    ),
    _opt(
        "output",
        PATH,
        None,
        "The PNG to write.",
        _PREVIEW,
        short="-o",
        check=_png,
        required=_PREVIEW,
        preset=False,
    ),
    _opt("overwrite", FLAG, False, "Replace an existing output.", _UP | _PREVIEW, preset=False),
    _opt(
        "codec",
        STR,
        "libx264",
        "libx264, libx265, libsvtav1, h264_nvenc, hevc_nvenc, ffv1 (lossless), or auto "
        "(h264_nvenc with CUDA where it opens, else libx264).",
        _UP | _BENCH,
        check=_not_empty,
        fingerprint=True,
    ),
    _opt(
        "crf",
        FLOAT,
        None,
        "Quality (lower is better); default per codec.",
        _UP,
        fingerprint=True,
    ),
    _opt("encoder_preset", STR, None, "Encoder speed preset.", _UP, fingerprint=True),
    _opt(
        "pix_fmt",
        STR,
        None,
        "Output pixel format (default: the source's bit depth, 4:2:0).",
        _UP,
        fingerprint=True,
    ),
    _opt(
        "encoder_opt",
        PAIRS,
        (),
        "Passed to the encoder; repeatable (Python: a dict).",
        _UP,
        fingerprint=True,
    ),
    _opt(
        "ignore_errors",
        FLAG,
        False,
        "Process what decodes from a damaged file and report the damage.",
        _UP,
    ),
    _opt(
        "drop_unsupported",
        FLAG,
        False,
        "Leave out every stream the output container cannot carry (listed in one warning) "
        "instead of refusing the run.",
        _UP,
    ),
    # --- what the command prints or does
    _opt(
        "dry_run",
        FLAG,
        False,
        "Probe and print the plan; do nothing else.",
        _UP,
        preset=False,
        api=False,
    ),
    _opt(
        "json",
        FLAG,
        False,
        "Print JSON instead of text (upscale and batch: one event per line - start, "
        "progress, chunk_done, done, error).",
        _UP | _BENCH,
        preset=False,
        api=False,
    ),
    _opt(
        "preset",
        STR,
        None,
        "Options from a preset (see `vidsr presets list`); explicit options win.",
        _UP,
        metavar="NAME|FILE",
        preset=False,
    ),
    # --- chunks, resume and placement
    _opt(
        "chunk_frames",
        INT,
        None,
        "Frames per chunk (the resumable unit; a resumed job keeps its chunks).",
        _UP,
        check=_at_least(1),
    ),
    _opt(
        "chunk_seconds",
        FLOAT,
        None,
        "Seconds of video per chunk (default 30; a resumed job keeps its chunks).",
        _UP,
        check=_positive,
    ),
    _opt(
        "work_dir",
        PATH,
        None,
        "Job state folder (default: OUTPUT.vidsr-work beside the output).",
        _UP,
        preset=False,
    ),
    _opt("restart", FLAG, False, "Discard an earlier job's state.", _UP, preset=False),
    _opt("keep_work", FLAG, False, "Keep the work folder (segments) after success.", _UP),
    _opt(
        "devices",
        NAMES,
        (),
        "Worker devices: cuda:0,cuda:1 | all | cpu,cpu.",
        _UP,
        metavar="DEVICES",
        check=_devices,
    ),
    _opt(
        "workers_per_device",
        INT,
        1,
        "Worker processes per device.",
        _UP,
        check=_at_least(1),
    ),
    _opt(
        "encode_workers",
        INT,
        0,
        "Chunks encoded at once in one process (0 = auto: more when the encoder bounds the "
        "run and cores are free).",
        _UP,
        check=_zero_or_positive("auto"),
    ),
    _opt(
        "backend",
        STR,
        "local",
        "Run chunks locally or as Ray tasks.",
        _UP,
        choices=BACKENDS,
    ),
    _opt("ray_address", STR, None, "Ray cluster address (default: start a local Ray).", _UP),
    # --- batch
    _opt(
        "recursive",
        FLAG,
        False,
        "Take videos in sub-folders of folder inputs.",
        _BATCH,
        short="-r",
        preset=False,
    ),
    _opt(
        "from_file",
        PATHS,
        (),
        "A text file of inputs, one per line (also: @FILE as an input); repeatable.",
        _BATCH,
        preset=False,
    ),
    _opt(
        "name",
        STR,
        DEFAULT_NAME_TEMPLATE,
        "Output name template: {stem} {name} {ext} {model} {scale} {codec}.",
        _BATCH,
        check=_name_template,
        preset=False,
    ),
    _opt(
        "order",
        STR,
        "name",
        "Processing order: name, size (smallest first) or mtime (oldest first).",
        _BATCH,
        choices=ORDERS,
        preset=False,
    ),
    _opt("reverse", FLAG, False, "Reverse --order.", _BATCH, preset=False),
    _opt(
        "report",
        PATH,
        None,
        "Write a JSON report: one entry per input (ok / skipped / failed, error).",
        _BATCH,
        preset=False,
    ),
    _opt(
        "max_hours",
        FLOAT,
        None,
        "Stop cleanly between chunks after H hours; the same command resumes.",
        _BATCH,
        check=_positive,
        preset=False,
    ),
    _opt(
        "no_disk_check",
        FLAG,
        False,
        "Skip the free-space check before each file.",
        _BATCH,
        preset=False,
    ),
    # --- bench
    _opt(
        "size",
        SIZE,
        (128, 72),
        "Input size WIDTHxHEIGHT of the generated clip.",
        _BENCH,
        check=_bench_size,
    ),
    _opt("frames", INT, 48, "Frames in the generated clip.", _BENCH, check=_at_least(1)),
    _opt("plot", PATH, None, "Also draw a bar chart PNG here.", _BENCH, check=_png),
    # --- preview
    _opt(
        "at",
        TIME,
        None,
        "Time of the frame: SECONDS, MM:SS or HH:MM:SS(.fff).",
        _PREVIEW,
        required=_PREVIEW,
    ),
    _opt(
        "crop",
        REGION,
        None,
        "Only this region of the frame (source pixels).",
        _PREVIEW,
        check=_region,
    ),
    _opt(
        "columns",
        INT,
        0,
        "Panels per row (0 = all in one row).",
        _PREVIEW,
        check=_zero_or_positive("one row"),
    ),
    # --- vidsr finetune prepare / train / export
    _opt(
        "output",
        PATH,
        None,
        "The dataset folder to write (prepare) or the run folder (train: continued if it "
        "holds this run).",
        _FT_PREP | _FT_TRAIN,
        short="-o",
        required=_FT_PREP | _FT_TRAIN,
        preset=False,
    ),
    _opt(
        "lr",
        PATH,
        None,
        "Paired form: the low-resolution frames (folder or video).",
        _FT_PREP,
        preset=False,
    ),
    _opt(
        "hr",
        PATH,
        None,
        "Paired form: the high-resolution frames that correspond.",
        _FT_PREP,
        preset=False,
    ),
    _opt(
        "frames",
        INT,
        200,
        "Frames to take from each source, spread evenly (black and held frames skipped).",
        _FT_PREP,
        check=_at_least(1),
        preset=False,
    ),
    _opt("overwrite", FLAG, False, "Replace an existing dataset folder.", _FT_PREP, preset=False),
    _opt(
        "model",
        STR,
        DEFAULT_MODEL,
        "The generator to fine-tune: a Real-ESRGAN model (SRVGGNetCompact or RRDBNet) by "
        "name, imported name or file.",
        _FT_TRAIN,
        short="-m",
        check=_not_empty,
        preset=False,
    ),
    _opt(
        "iters", INT, 1000, "Iterations to train to.", _FT_TRAIN, check=_at_least(1), preset=False
    ),
    _opt("batch_size", INT, 4, "Crops per iteration.", _FT_TRAIN, check=_at_least(1), preset=False),
    _opt(
        "gt_size",
        INT,
        128,
        "Ground-truth crop edge in pixels.",
        _FT_TRAIN,
        check=_ft_gt_size,
        preset=False,
    ),
    _opt("seed", INT, 0, "Seed of every random draw.", _FT_TRAIN, check=_at_least(0), preset=False),
    _opt(
        "save_every",
        INT,
        100,
        "Checkpoint every N iterations.",
        _FT_TRAIN,
        check=_at_least(1),
        preset=False,
    ),
    _opt(
        "val_every",
        INT,
        100,
        "Validate every N iterations.",
        _FT_TRAIN,
        check=_at_least(1),
        preset=False,
    ),
    _opt(
        "val_count",
        INT,
        4,
        "Frames held out for validation (fixed at the start).",
        _FT_TRAIN,
        check=_at_least(0),
        preset=False,
    ),
    _opt(
        "keep_checkpoints",
        INT,
        0,
        "Keep only the newest N checkpoints (0 = every one; each holds G, EMA, D, both "
        "optimisers and the pair pool).",
        _FT_TRAIN,
        check=_at_least(0),
        preset=False,
    ),
    _opt(
        "degradation",
        STR,
        "realesrgan",
        "Synthetic pairs: realesrgan (train_realesrgan_x4plus.yml) or video (vidsr's: plus "
        "H.264 round trips at crf 18-35). Paired datasets are not degraded.",
        _FT_TRAIN,
        choices=DEGRADATIONS,
        preset=False,
    ),
    _opt(
        "pixel_weight",
        FLOAT,
        1.0,
        "L1 loss weight (0 leaves it out).",
        _FT_TRAIN,
        check=_at_least(0),
        preset=False,
    ),
    _opt(
        "perceptual_weight",
        FLOAT,
        1.0,
        "VGG19 perceptual loss weight (0 leaves it out: no VGG weights needed).",
        _FT_TRAIN,
        check=_at_least(0),
        preset=False,
    ),
    _opt(
        "gan_weight",
        FLOAT,
        0.1,
        "GAN loss weight against UNetDiscriminatorSN (0 leaves the discriminator out).",
        _FT_TRAIN,
        check=_at_least(0),
        preset=False,
    ),
    _opt(
        "learning_rate",
        FLOAT,
        1e-4,
        "Adam's learning rate (generator and discriminator).",
        _FT_TRAIN,
        check=_positive,
        preset=False,
    ),
    _opt(
        "ema", FLOAT, 0.999, "Decay of the generator's EMA.", _FT_TRAIN, check=_unit, preset=False
    ),
    _opt(
        "device", STR, "auto", "auto | cpu | cuda | cuda:N.", _FT_TRAIN, check=_device, preset=False
    ),
    _opt(
        "precision",
        STR,
        "auto",
        "auto = fp32 on the CPU, bf16 autocast on CUDA (fp16 with a gradient scaler where "
        "the GPU has no bf16).",
        _FT_TRAIN,
        choices=PRECISIONS,
        preset=False,
    ),
    _opt(
        "json",
        FLAG,
        False,
        "One JSON line per event instead of the progress bar.",
        _FT_PREP | _FT_TRAIN | _FT_EXPORT,
        preset=False,
    ),
    _opt(
        "name",
        STR,
        None,
        "The model name to export as (then: vidsr upscale -m NAME).",
        _FT_EXPORT,
        required=_FT_EXPORT,
        preset=False,
    ),
    _opt(
        "iter",
        INT,
        None,
        "The checkpoint to export (default: the newest).",
        _FT_EXPORT,
        check=_at_least(0),
        preset=False,
    ),
    _opt(
        "output",
        PATH,
        None,
        "The .safetensors file to write beside the cache entry (default RUN/export/NAME.safetensors).",
        _FT_EXPORT,
        short="-o",
        preset=False,
    ),
)


def _validate_table(table: Iterable[Option]) -> None:
    seen: dict[tuple[str, str], Option] = {}
    for o in table:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", o.name):
            raise AssertionError(f"option name {o.name!r} is not a Python identifier")
        for c in o.commands:
            if c not in COMMANDS:
                raise AssertionError(f"option {o.name}: unknown command {c!r}")
            if (c, o.name) in seen:
                raise AssertionError(f"option {o.name} is declared twice for {c}")
            seen[(c, o.name)] = o
        if o.default is not None:
            o.read(o.default, "api")  # every default passes its own check


_validate_table(OPTIONS)


# --- lookups ----------------------------------------------------------------------------------


def options_for(command: str) -> tuple[Option, ...]:
    """The options ``command`` takes, in table order (read at call time: see the tests)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    return tuple(o for o in OPTIONS if command in o.commands)


def find(command: str, name: str) -> Option | None:
    """``command``'s option called ``name`` (Python name), or None."""
    return next((o for o in options_for(command) if o.name == name), None)


def unknown_option(command: str, name: str, source: str = "api") -> UnknownOptionError:
    """The one-line error for a name that ``command`` does not take from ``source`` (a
    keyword argument, or a preset key), with the nearest one it does take - or, for an option
    that exists but not there, where it belongs."""
    options = options_for(command)
    if source == "preset":
        usable = [o.key for o in options if o.preset]
        exists = any(o.key == name.replace("_", "-") for o in options)
        elsewhere = "it belongs to one run; give it on the command line"
        what = f"unknown key {name!r}"
    else:
        usable = [o.name for o in options if o.api]
        exists = find(command, name) is not None
        elsewhere = "it steers the command line's output only"
        what = f"{command} has no option {name}="
    dashed = name.replace("_", "-")
    if source == "preset" and dashed != name and dashed in usable:
        hint = f" (did you mean {dashed}?)"
    elif exists and name not in usable:
        hint = f" ({elsewhere})"
    else:
        close = difflib.get_close_matches(name, usable, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
    return UnknownOptionError(what + hint)


def read_values(command: str, values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Each of ``values`` (Python names) read and checked by its option; an unknown name is an
    ``UnknownOptionError``."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        option = find(command, name)
        if option is None:
            raise unknown_option(command, name, source)
        out[name] = option.read(value, source)
    return out


def check_together(command: str, values: Mapping[str, Any]) -> None:
    """Checks that involve more than one option (``UsageError``)."""
    if values.get("chunk_frames") is not None and values.get("chunk_seconds") is not None:
        raise UsageError(f"give {opt('chunk_frames')} or {opt('chunk_seconds')}, not both")
    if command in ("upscale", "batch"):
        _check_size_options(values)
        _check_range(values)
    for option in options_for(command):
        if command in option.required and values.get(option.name) is None:
            what = _REQUIRED.get((command, option.name), "")
            raise UsageError(f"{command} needs {opt(option.name)}" + (f" ({what})" if what else ""))


def _check_size_options(values: Mapping[str, Any]) -> None:
    """One way to say the output size: --size, or --width or --height, or --scale
    (``--square-pixels`` goes with any: ``--size`` gives both sides itself)."""
    given = [n for n in ("size", "width", "height", "scale") if values.get(n) is not None]
    if len(given) > 1:
        names = " and ".join(opt(n) for n in given)
        raise UsageError(
            f"{names} both set the output size: give one ({opt('size')} WxH for both sides, "
            f"{opt('width')} or {opt('height')} for one side at the display aspect)"
        )


def _check_range(values: Mapping[str, Any]) -> None:
    start, end, duration = values.get("start"), values.get("end"), values.get("duration")
    if end is not None and duration is not None:
        raise UsageError(f"give {opt('end')} or {opt('duration')}, not both")
    if end is not None and end <= (start or 0):
        raise UsageError(f"{opt('end')} must be after {opt('start')} ({float(start or 0):g} s)")


#: What a required option is for, in its refusal.
_REQUIRED = {
    ("batch", "output"): "the folder for every output",
    ("preview", "output"): "the PNG to write",
    ("preview", "at"): "the time of the frame to show",
}
