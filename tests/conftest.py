"""Shared fixtures: the vidsr home folder and tiny generated clips (tests/media_factory.py).

Every test runs with ``VIDSR_HOME`` set to one model cache for the whole session (the bundled
ncnn weights are converted into it once) and the weights' download address pointing at a
closed loopback port, so no test ever reaches the network. A test of the cache itself asks
for ``private_home``: a fresh, empty home of its own.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

UNREACHABLE = "http://127.0.0.1:9/unreachable/"


@pytest.fixture(scope="session", autouse=True)
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's ``VIDSR_HOME`` (set for every test, subprocesses included)."""
    home = tmp_path_factory.getbasetemp() / "vidsr-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDSR_HOME", str(home))
        mp.setenv("VIDSR_MODEL_BASE_URL", UNREACHABLE)
        mp.setenv("VIDSR_VGG_URL", UNREACHABLE + "vgg19-dcbb9e9d.pth")  # finetune's VGG19
        for name in ("VIDSR_TEST_PAUSE", "VIDSR_TEST_PAUSE_MARK", "VIDSR_DEBUG"):
            mp.delenv(name, raising=False)
        yield home


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``VIDSR_HOME`` for this test (not created until something writes)."""
    home = tmp_path / "vidsr-home"
    monkeypatch.setenv("VIDSR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def media_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{name: path}`` of every clip in ``media_factory.CLIPS`` (about 1 s to build)."""
    from media_factory import make_all

    return make_all(tmp_path_factory.mktemp("media"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A threaded HTTP server on 127.0.0.1 serving the folder ``www`` (laid out like the
    release URLs by the test): ``(base URL, folder)``. Downloads are tested against it."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
