"""The error hierarchy. Every error a user can cause or meet is a ``VidsrError``.

The CLI maps each class to a one-line message and an exit code; no traceback is shown for
these. Each class also derives from the builtin exception that fits it (as PyAV does), so
library callers can catch either.
"""

from __future__ import annotations


class VidsrError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class UsageError(VidsrError, ValueError):
    """A bad option or combination of options."""

    exit_code = 2


class InputError(VidsrError, ValueError):
    """The input is missing, unreadable, not the expected kind of file, or corrupt."""

    exit_code = 3


class ModelError(VidsrError, LookupError):
    """Unknown model, weights that cannot be had, or a model file that cannot be loaded."""

    exit_code = 4


class UnsafeModelFileError(ModelError):
    """A model file that would run code when unpickled."""


class OutputError(VidsrError, OSError):
    """The output exists (without --overwrite), cannot be written, or the disk is full."""

    exit_code = 5


class DeviceError(VidsrError, RuntimeError):
    """The requested device or precision cannot be used."""

    exit_code = 6


class PipelineError(VidsrError, RuntimeError):
    """A stage of the decode -> infer -> encode pipeline failed."""

    exit_code = 7


class JobStateError(VidsrError, RuntimeError):
    """The on-disk job state does not match the job (changed source or settings)."""

    exit_code = 8


class Interrupted(VidsrError, KeyboardInterrupt):
    """Stopped by Ctrl-C or SIGTERM; the work done so far is kept."""

    exit_code = 130
