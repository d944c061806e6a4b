"""One frozen settings object per run, generated from the option table, and the resume
fingerprint.

``UpscaleSettings``, ``BatchSettings``, ``BenchSettings`` and ``PreviewSettings`` have one field
per option of their command (:mod:`vidsr.options`), named as the option, defaulting to its
default. Every construction - ``make_settings(...)``, the class itself, ``replace(...)`` -
reads and checks every value through the table, so a settings object is always valid, and
the same value gives the same object whoever gave it (``scale=2`` and ``--scale 2`` both hold
``2.0``).

One settings object travels plan -> job -> chunk -> segment. Resolution (``auto`` values ->
what this run will really use) makes a new one with ``replace``; see
:mod:`vidsr.run.resolve`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vidsr import options as _options


class Settings:
    """Base of the generated settings classes (for ``isinstance`` and annotations)."""

    command: ClassVar[str] = ""

    if TYPE_CHECKING:  # fields are generated from the option table

        def __getattr__(self, name: str) -> Any: ...

    def __post_init__(self) -> None:
        values = {}
        for option in _options.options_for(self.command):
            value = option.read(getattr(self, option.name), "api")
            object.__setattr__(self, option.name, value)
            values[option.name] = value
        _options.check_together(self.command, values)

    def as_dict(self) -> dict[str, Any]:
        """Every field: option name -> value."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (checked as in construction)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _settings_class(command: str) -> type[Settings]:
    fields = [
        (o.name, o.kind.annotation, dataclasses.field(default=o.default))
        for o in _options.options_for(command)
    ]
    cls = dataclasses.make_dataclass(
        f"{command.title().replace('_', '')}Settings",
        fields,
        bases=(Settings,),
        frozen=True,
        namespace={"command": command, "__module__": __name__},
    )
    cls.__doc__ = f"The settings of ``vidsr {command}``: one field per option (frozen, checked)."
    return cls


UpscaleSettings = _settings_class("upscale")
BatchSettings = _settings_class("batch")
BenchSettings = _settings_class("bench")
PreviewSettings = _settings_class("preview")
FinetunePrepareSettings = _settings_class("finetune_prepare")
FinetuneTrainSettings = _settings_class("finetune_train")
FinetuneExportSettings = _settings_class("finetune_export")
_CLASSES: dict[str, type[Settings]] = {
    "upscale": UpscaleSettings,
    "batch": BatchSettings,
    "bench": BenchSettings,
    "preview": PreviewSettings,
    "finetune_prepare": FinetunePrepareSettings,
    "finetune_train": FinetuneTrainSettings,
    "finetune_export": FinetuneExportSettings,
}


def settings_class(command: str) -> type[Settings]:
    """The settings class of ``command``."""
    return _CLASSES[command]


def make_settings(command: str, values: Mapping[str, Any], source: str = "api") -> Settings:
    """``command``'s settings from ``values`` (Python names; the others keep their defaults),
    read as ``source`` gave them (``cli`` text, ``api`` or ``preset`` values)."""
    read = _options.read_values(command, values, source)
    return settings_class(command)(**read)


# --- the resume fingerprint -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON data for a settings value (paths, tuples, fractions)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def fingerprint(settings: Settings, **resolved: Any) -> dict[str, Any]:
    """What decides the output's bytes, as plain JSON data: every option marked
    ``fingerprint`` in the table, with the value in ``settings`` (which must be resolved:
    ``auto`` already replaced by what the run uses), plus ``resolved`` facts that are not
    options (the weights' hash, the output size). Batch size, lanes, devices, workers and the
    executor are not in it: they change how fast, not what."""
    out = {
        o.name: _plain(getattr(settings, o.name))
        for o in _options.options_for(settings.command)
        if o.fingerprint
    }
    out.update({k: _plain(v) for k, v in resolved.items()})
    return out
