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

Precedence is applied by :func:`vidsr.config.merge_preset`: an option given on the command line
beats the preset, which beats the option's default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from vidsr.errors import UsageError

SUFFIX = ".toml"
META_KEYS = frozenset({"description"})
#: Options that belong to one run, not to a way of running.
NOT_PRESETTABLE = frozenset(
    {"output", "overwrite", "dry-run", "json", "work-dir", "restart", "preset", "help"}
)


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
    return Path(__file__).with_name("presets_data")


def user_dir() -> Path:
    """``$VIDSR_HOME/presets`` (the same home as the model cache)."""
    env = os.environ.get("VIDSR_HOME")
    home = Path(env).expanduser() if env else Path.home() / ".cache" / "vidsr"
    return home / "presets"


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


def preset_options() -> dict[str, click.Option]:
    """The options a preset may set: key (long name without dashes) -> click option of
    ``vidsr upscale`` (``vidsr batch`` takes the same ones)."""
    from vidsr.cli import upscale

    out: dict[str, click.Option] = {}
    for param in upscale.params:
        if not isinstance(param, click.Option):
            continue
        longs = [o for o in param.opts if o.startswith("--")]
        if not longs:
            continue
        key = longs[0][2:]
        if key not in NOT_PRESETTABLE:
            out[key] = param
    return out


def _check_type(preset: Preset, key: str, option: click.Option, value: Any) -> Any:
    """TOML value -> what click would have produced from the command line, strictly typed
    (``tile = 1.5`` or ``crf = "high"`` are refused, not truncated or guessed)."""

    def bad(expected: str) -> UsageError:
        return UsageError(f"preset {preset.name}: {key} must be {expected}, not {value!r}")

    if option.multiple:
        if key == "encoder-opt" and isinstance(value, dict):
            value = [f"{k}={v}" for k, v in value.items()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if option.is_flag:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    kind = option.type
    if isinstance(kind, click.types.IntParamType):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
    elif isinstance(kind, click.types.FloatParamType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
    elif not isinstance(value, str):
        raise bad("a string")
    try:
        return option.type_cast_value(click.Context(click.Command("preset")), value)
    except click.BadParameter as exc:
        raise UsageError(f"preset {preset.name}: {key}: {exc.message}") from None


def preset_values(preset: Preset) -> dict[str, Any]:
    """The preset as parameter name -> value (``pix_fmt``), every key checked: an unknown key
    or a value of the wrong type is a one-line ``UsageError`` naming the key."""
    options = preset_options()
    out: dict[str, Any] = {}
    for key, value in preset.values.items():
        option = options.get(key)
        if option is None:
            hint = ""
            dashed = key.replace("_", "-")
            if dashed in options:
                hint = f" (did you mean {dashed}?)"
            elif key in NOT_PRESETTABLE:
                hint = " (it belongs to one run; give it on the command line)"
            raise UsageError(f"preset {preset.name}: unknown key {key!r}{hint}")
        assert option.name is not None
        out[option.name] = _check_type(preset, key, option, value)
    return out


def apply_preset(opts: dict[str, Any], ctx: click.Context | None = None) -> dict[str, Any]:
    """Pop ``opts["preset"]`` and merge that preset into ``opts``: an option the user gave
    explicitly (``ctx.get_parameter_source``) keeps its value, the preset fills in the rest."""
    from click.core import ParameterSource

    from vidsr.config import merge_preset

    spec = opts.pop("preset", None)
    if not spec:
        return opts
    ctx = ctx or click.get_current_context()
    values = preset_values(find_preset(spec))
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    explicit = {name for name in values if ctx.get_parameter_source(name) not in defaults}
    return merge_preset(opts, values, explicit)


def preset_option(func: Any) -> Any:
    """The ``--preset NAME|FILE`` option (for ``upscale`` and ``batch``)."""
    return click.option(
        "--preset",
        default=None,
        metavar="NAME|FILE",
        help="Options from a preset (see `vidsr presets list`); explicit options win.",
    )(func)


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
