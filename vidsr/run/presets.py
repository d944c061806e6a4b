"""Presets: named sets of command-line options in TOML files.

A preset's keys are the long option names of ``vidsr upscale`` without the dashes
(``model = "realesr-animevideov3"``, ``pix-fmt = "yuv420p10le"``, ``crf = 20``,
``encoder-opt = ["x265-params=aq-mode=3"]``), plus an optional ``description``. Options that
name one run's files or modes (``output``, ``overwrite``, ``dry-run``, ``json``, ``work-dir``,
``restart``) cannot be preset. Any other key is refused with one line naming it.

Where presets come from, first match wins:

1. ``--preset FILE``: a path (anything ending in ``.toml`` or containing a slash);
2. ``$VIDSR_HOME/presets/NAME.toml`` (``VIDSR_HOME`` defaults to ``~/.cache/vidsr``): the user's
   own, which override bundled ones of the same name;
3. the bundled presets, installed with the package in ``vidsr/presets_data/``.

Which keys a preset may have, and how their values are checked, is the option table's word
(:mod:`vidsr.options`: each option says whether a preset may set it). Precedence is applied by
:func:`with_preset`: an option given explicitly (on the command line, or as a keyword argument)
beats the preset, which beats the option's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidsr.errors import UsageError, render
from vidsr.home import presets_dir
from vidsr.options import Option, options_for, unknown_option

SUFFIX = ".toml"


@dataclass(frozen=True)
class Preset:
    """A preset file. ``values`` maps the option key (``pix-fmt``) to the raw TOML value;
    ``source`` is ``user``, ``bundled`` or ``file``; ``shadows`` is the bundled file a user
    preset of the same name overrides."""

    name: str
    path: Path
    source: str
    description: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    shadows: Path | None = None


def bundled_dir() -> Path:
    """The presets shipped inside the package (package data)."""
    return Path(__file__).resolve().parents[1] / "presets_data"


def user_dir() -> Path:
    """``$VIDSR_HOME/presets`` (the same home as the model cache)."""
    return presets_dir()


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError("presets need Python 3.11+ (or `pip install tomli`)") from None
    return tomllib.loads(text)


def read_preset(path: Path, *, name: str | None = None, source: str = "file") -> Preset:
    """Parse one preset file (keys are checked by :func:`preset_values`)."""
    path = Path(path)
    label = name or path.stem
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"preset {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = _toml_loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise UsageError(f"preset {path}: not valid TOML ({exc})") from None
    description = data.pop("description", "")
    if not isinstance(description, str):
        raise UsageError(f"preset {label}: description must be a string")
    return Preset(label, path, source, description, data)


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob(f"*{SUFFIX}")) if p.is_file()}


def available() -> list[Preset]:
    """Every preset by name: user presets (overriding bundled ones of the same name) and the
    bundled ones, sorted by name."""
    bundled = _files(bundled_dir())
    user = _files(user_dir())
    out = []
    for name, path in user.items():
        p = read_preset(path, name=name, source="user")
        out.append(Preset(p.name, p.path, p.source, p.description, p.values, bundled.get(name)))
    out += [
        read_preset(path, name=n, source="bundled") for n, path in bundled.items() if n not in user
    ]
    return sorted(out, key=lambda p: p.name)


def _is_path(spec: str) -> bool:
    return spec.endswith(SUFFIX) or "/" in spec or (os.sep != "/" and os.sep in spec)


def find_preset(spec: str) -> Preset:
    """``spec`` is a preset name or a path to a TOML file; ``UsageError`` if neither."""
    if _is_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UsageError(f"preset file {spec} does not exist")
        return read_preset(path, source="file")
    user = user_dir() / f"{spec}{SUFFIX}"
    bundled = bundled_dir() / f"{spec}{SUFFIX}"
    if user.is_file():
        p = read_preset(user, name=spec, source="user")
        shadows = bundled if bundled.is_file() else None
        return Preset(p.name, p.path, p.source, p.description, p.values, shadows)
    if bundled.is_file():
        return read_preset(bundled, name=spec, source="bundled")
    names = ", ".join(p.name for p in available()) or "none"
    raise UsageError(f"unknown preset {spec!r} (available: {names}; or pass a .toml file)")


def _presettable(command: str) -> dict[str, Option]:
    """Preset key (``pix-fmt``) -> option, for the options a preset may set."""
    return {o.key: o for o in options_for(command) if o.preset}


def preset_values(preset: Preset, command: str = "upscale") -> dict[str, Any]:
    """The preset as option name -> checked value (``pix_fmt``): an unknown key or a value that
    does not fit is a one-line ``UsageError`` naming the key as the file spells it."""
    options = _presettable(command)
    out: dict[str, Any] = {}
    for key, value in preset.values.items():
        option = options.get(key)
        if option is None:
            problem = unknown_option(command, key, "preset")
            raise UsageError(f"preset {preset.name}: {problem.template}")
        try:
            out[option.name] = option.read(value, "preset")
        except UsageError as exc:
            raise UsageError(f"preset {preset.name}: {render(exc.template, 'preset')}") from None
    return out


def with_preset(values: Mapping[str, Any], command: str = "upscale") -> dict[str, Any]:
    """``values`` (the options a caller gave explicitly, by Python name) with the preset named
    by ``values["preset"]`` filled in below them: an explicit option beats the preset, which
    beats the option's default. Without a preset, ``values`` as they are."""
    out = dict(values)
    spec = out.get("preset")
    if not spec:
        return out
    preset = preset_values(find_preset(str(spec)), command)
    if any(out.get(n) is not None for n in SIZE_OPTIONS):
        # one explicit way to say the output size replaces the preset's, whichever it is
        preset = {k: v for k, v in preset.items() if k not in SIZE_OPTIONS}
    return {**preset, **out}


#: The options that each set the output size (one of them per run: the option table).
SIZE_OPTIONS = ("size", "width", "height", "scale")


def format_value(value: Any) -> str:
    """A value in TOML syntax, for ``vidsr presets show``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def describe(preset: Preset) -> dict[str, Any]:
    """A preset as plain data (``vidsr presets list/show --json``)."""
    return {
        "name": preset.name,
        "source": preset.source,
        "path": str(preset.path),
        "overrides": str(preset.shadows) if preset.shadows else None,
        "description": preset.description,
        "options": preset.values,
    }
