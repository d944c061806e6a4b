"""The error hierarchy, the exit codes, and how a message names an option.

Every error a user can cause or meet is a ``VidsrError``. Each class derives from the builtin
exception that fits it (as PyAV does), so library callers can catch either; the CLI maps each
class to a one-line message and its ``exit_code``, with no traceback.

Library messages never spell an option the command line's way: they write ``opt("tile")``
(or ``opt("restart", True)``), and the text is rendered for whoever reads it - ``--tile`` /
``--restart`` on the command line, ``tile=`` / ``restart=True`` in Python, ``tile`` in a preset
file. ``str(exc)`` renders in the current :func:`spelling` (Python's unless the CLI chose its
own); ``exc.template`` keeps the unrendered text, for passing a message between processes.
"""

from __future__ import annotations

import ast
import contextlib
import re
import shlex
from collections.abc import Iterator
from typing import Any

# --- exit codes: the one table (the CLI exits with these) ----------------------------------

#: ``vidsr doctor``: this install cannot run vidsr (its report says what to do).
EXIT_NOT_USABLE = 1
#: ``vidsr batch``: at least one file failed.
EXIT_FILES_FAILED = 3
#: A bug: one line, the traceback with VIDSR_DEBUG=1 (BSD's EX_SOFTWARE).
EXIT_INTERNAL = 70
#: ``vidsr batch --max-hours`` stopped between chunks; the same command resumes (EX_TEMPFAIL).
EXIT_STOPPED = 75
#: Ctrl-C (128 + SIGINT) and SIGTERM (128 + SIGTERM).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


# --- option names in messages ----------------------------------------------------------------

STYLES = ("api", "cli", "preset")
_UNSET: Any = object()
_TOKEN = re.compile(r"@\{([a-z][a-z0-9_]*)(?:=([^{}]*))?\}")
_style = "api"


def opt(name: str, value: Any = _UNSET) -> str:
    """A placeholder for option ``name`` (its Python name: ``tile_pad``) in a message,
    optionally with a value: ``opt("precision", "fp32")`` renders as ``--precision fp32``,
    ``precision='fp32'`` or ``precision = "fp32"``."""
    if value is _UNSET:
        return f"@{{{name}}}"
    return f"@{{{name}={value!r}}}"


def _spell(name: str, value: str | None, style: str) -> str:
    dashed = name.replace("_", "-")
    parsed: Any = _UNSET
    if value is not None:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
    if style == "cli":
        if parsed is _UNSET or parsed is True:
            return f"--{dashed}"
        return f"--{dashed} {shlex.quote(str(parsed))}"
    if style == "preset":
        if parsed is _UNSET:
            return dashed
        text = ("true" if parsed else "false") if isinstance(parsed, bool) else None
        if text is None:
            text = f'"{parsed}"' if isinstance(parsed, str) else repr(parsed)
        return f"{dashed} = {text}"
    return f"{name}=" if parsed is _UNSET else f"{name}={parsed!r}"


def render(text: str, style: str | None = None) -> str:
    """``text`` with every :func:`opt` placeholder spelled for ``style`` (default: the current
    :func:`spelling`)."""
    chosen = style or _style
    if chosen not in STYLES:
        raise ValueError(f"unknown spelling style {chosen!r}")
    return _TOKEN.sub(lambda m: _spell(m.group(1), m.group(2), chosen), text)


@contextlib.contextmanager
def spelling(style: str) -> Iterator[None]:
    """Render option names in ``style`` (``cli`` while the command line runs) inside the
    block; restored afterwards."""
    global _style
    if style not in STYLES:
        raise ValueError(f"unknown spelling style {style!r}")
    before, _style = _style, style
    try:
        yield
    finally:
        _style = before


# --- the hierarchy ----------------------------------------------------------------------------


class VidsrError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    @property
    def template(self) -> str:
        """The message with its option placeholders unrendered."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return render(self.template)


class UsageError(VidsrError, ValueError):
    """A bad option or combination of options."""

    exit_code = 2


class UnknownOptionError(UsageError, TypeError):
    """An option name that the command does not have (a ``TypeError`` too, as Python raises
    for an unexpected keyword argument)."""


class InputError(VidsrError, ValueError):
    """The input is missing, unreadable, not the expected kind of file, or corrupt."""

    exit_code = 3


class ModelError(VidsrError, LookupError):
    """Unknown model, weights that cannot be had, or a model file that cannot be loaded."""

    exit_code = 4


class UnsafeModelFileError(ModelError):
    """A model file that would run code when unpickled."""


class OutputError(VidsrError, OSError):
    """The output exists (without overwriting), cannot be written, or the disk is full."""

    exit_code = 5


class DeviceError(VidsrError, RuntimeError):
    """The requested device or precision cannot be used."""

    exit_code = 6


class PipelineError(VidsrError, RuntimeError):
    """A stage of the decode -> infer -> encode pipeline failed."""

    exit_code = 7


class GpuMemoryError(PipelineError):
    """Out of GPU memory even after the pipeline's own smaller-batch and tile fallbacks."""


class JobStateError(VidsrError, RuntimeError):
    """The on-disk job state does not match the job (changed source or settings)."""

    exit_code = 8


class Interrupted(VidsrError, KeyboardInterrupt):
    """Stopped by Ctrl-C; the work done so far is kept."""

    exit_code = EXIT_INTERRUPTED

    def again(self, message: str) -> Interrupted:
        """The same kind of stop (Ctrl-C or SIGTERM) with another message."""
        return type(self)(message)


class Terminated(Interrupted):
    """Stopped by SIGTERM; the work done so far is kept."""

    exit_code = EXIT_TERMINATED
