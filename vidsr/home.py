"""vidsr's data folder: the one rule for where models, presets and other state live.

``$VIDSR_HOME`` if set, else ``~/.cache/vidsr``. Nothing here creates the folders.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "VIDSR_HOME"


def home_dir() -> Path:
    """``$VIDSR_HOME``, else ``~/.cache/vidsr``."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vidsr"


def from_env() -> bool:
    """Whether the home folder was chosen by ``$VIDSR_HOME``."""
    return bool(os.environ.get(ENV_HOME))


def models_dir() -> Path:
    """Cached model weights: ``HOME/models``."""
    return home_dir() / "models"


def presets_dir() -> Path:
    """The user's own presets: ``HOME/presets``."""
    return home_dir() / "presets"
