"""Atomic file writes: the one place that owns the write-temp-then-rename policy.

Nothing partial ever sits under a final name: data goes to a temporary file in the same
folder (so the rename cannot cross file systems) and is ``os.replace``d into place only
when complete. On failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vidsr.errors import OutputError, opt

#: Temporary files beside a final output: ``.STEM.RANDOM.partSUFFIX`` (see temp_path_for).
_PART = ".part"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path_for(final: Path) -> Path:
    """The temp-file rule: a fresh, unused path ``.STEM.RANDOM.partSUFFIX`` beside ``final``
    (hidden, same folder so the rename cannot cross file systems, same suffix so writers that
    go by the suffix pick the right format)."""
    final = Path(final)
    fd, name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f"{_PART}{final.suffix}", dir=final.parent
    )
    os.close(fd)
    return Path(name)


def temps_for(final: Path) -> set[Path]:
    """The temporary files :func:`temp_path_for` made for ``final`` that exist now."""
    final = Path(final)
    pattern = re.compile(
        rf"^\.{re.escape(final.stem)}\.[^.]+{re.escape(_PART)}{re.escape(final.suffix)}$"
    )
    if not final.parent.is_dir():
        return set()
    return {p for p in final.parent.iterdir() if pattern.match(p.name)}


def remove_stale_temps(final: Path) -> None:
    """Remove the temporary files that an earlier, killed run left beside ``final``."""
    for p in temps_for(final):
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` on success.

    The temporary file exists (empty) when yielded; writers may replace it. On any
    exception it is removed and the exception propagates. ``OSError`` such as a full disk
    or a read-only folder becomes ``OutputError``.
    """
    final = Path(final)
    try:
        tmp = temp_path_for(final)
    except OSError as exc:
        raise OutputError(f"cannot write to {final.parent}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing {final}") from exc
            raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from exc
        raise


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically (fsynced before the rename)."""
    with atomic_output(final) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


def check_output_path(output: Path, *, overwrite: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output that exists (without ``overwrite``), equals an input, or whose folder
    is missing or unwritable. Raises ``OutputError``/``UsageError`` with one line."""
    from vidsr.errors import UsageError

    output = Path(output)
    for inp in inputs:
        try:
            same = output.exists() and os.path.samefile(output, inp)
        except OSError:
            same = False
        if same or output.resolve() == Path(inp).resolve():
            raise UsageError(f"output {output} is the input file; choose another output path")
    if output.exists() and not overwrite:
        raise OutputError(f"output {output} exists; pass {opt('overwrite', True)} to replace it")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable")


def testing_pause(phase: str) -> None:
    """Testing hook: with ``VIDSR_TEST_PAUSE=phase:seconds`` set, sleep at ``phase`` (one of
    ``chunk`` - inside a chunk's encoding, ``join`` - with the joined file half written,
    ``mux`` - with the final output's temp file open) so a test can kill -9 the process
    there. Does nothing otherwise."""
    spec = os.environ.get("VIDSR_TEST_PAUSE")
    if not spec:
        return
    name, _, seconds = spec.partition(":")
    if name == phase:
        import time

        mark = os.environ.get("VIDSR_TEST_PAUSE_MARK")
        if mark:  # one line per pause, so a test can wait for the Nth
            with open(mark, "a") as f:
                f.write(f"{phase} {os.getpid()}\n")
        time.sleep(float(seconds or 5))
