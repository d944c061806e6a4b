"""Finding and running the ffmpeg binary (used for stream-copy remuxing only).

Decoding and encoding happen in-process with PyAV; the binary is only for the jobs its CLI does
best (``-map``/``-c copy`` of every other stream, metadata, chapters, attachments). Commands are
argument lists, never shell strings, and are logged with ``shlex.join`` at debug level.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence

from vidsr.errors import OutputError, PipelineError

log = logging.getLogger(__name__)

ENV_VAR = "VIDSR_FFMPEG"


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``$VIDSR_FFMPEG``, else imageio-ffmpeg's, else ``ffmpeg`` on PATH.

    Raises ``PipelineError`` (one line) when none can be found.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        found = shutil.which(env)
        if found:
            return found
        raise PipelineError(f"{ENV_VAR}={env} is not an executable ffmpeg binary")
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.isfile(exe):
            return exe
    except Exception as exc:  # imageio-ffmpeg missing, or its binary missing for this platform
        log.debug("imageio-ffmpeg gave no binary: %s", exc)
    found = shutil.which("ffmpeg")
    if found:
        return found
    raise PipelineError(
        f"no ffmpeg binary found: install imageio-ffmpeg, put ffmpeg on PATH or set {ENV_VAR}"
    )


def run_ffmpeg(args: Sequence[str]) -> None:
    """Run ``ffmpeg`` with ``args`` (a list of arguments, without the program name).

    ``-hide_banner -nostdin -loglevel error`` are prepended. A non-zero exit raises
    ``PipelineError`` carrying the last non-empty line of ffmpeg's stderr.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *map(str, args)]
    log.debug("running %s", shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise PipelineError(f"cannot run ffmpeg ({cmd[0]}): {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if "No space left on device" in proc.stderr:
            raise OutputError(f"disk full while writing {args[-1]}")
        raise PipelineError(f"ffmpeg failed: {last}")
    if proc.stderr.strip():
        log.debug("ffmpeg stderr: %s", proc.stderr.strip())
