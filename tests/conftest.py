"""Shared fixtures. Media: tiny generated clips (tests/media_factory.py), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def media_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{name: path}`` of every clip in ``media_factory.CLIPS`` (about 1 s to build)."""
    from media_factory import make_all

    return make_all(tmp_path_factory.mktemp("media"))
