"""Reading weight files safely, the cache, and downloads from a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import shlex
import socket
from pathlib import Path

import pytest
import torch

from vidsr.errors import ModelError, UnsafeModelFileError
from vidsr.home import home_dir
from vidsr.models import sources
from vidsr.models.arch import SRVGGNetCompact
from vidsr.models.loader import load_network
from vidsr.models.registry import MODELS
from vidsr.models.sources import (
    cache_path,
    is_cached,
    is_offline_ready,
    read_cache,
    resolve_state_dict,
)
from vidsr.models.weights import read_weights_file

GENERAL = MODELS["realesr-general-x4v3"]


@pytest.fixture(autouse=True)
def home(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("VIDSR_MODEL_BASE_URL", raising=False)
    return private_home


# --- reading files ---------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this runs ``os.system`` (a shell command that creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _OpensFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.pth"
    torch.save({"params": {"body.0.weight": torch.zeros(1)}, "x": _RunsCode(marker)}, zipped)
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps({"params": _OpensFile(marker)}, protocol=4))
    legacy2 = tmp_path / "evil_legacy2.pt"
    legacy2.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    for path in (zipped, legacy, legacy2):
        with pytest.raises(
            UnsafeModelFileError, match=r"^refusing .*: it contains pickled code"
        ) as info:
            read_weights_file(path)
        assert "\n" not in str(info.value)
        assert isinstance(info.value, ModelError)
        with pytest.raises(UnsafeModelFileError):
            load_network(path)
    assert not marker.exists()


def test_bad_files_give_one_line_model_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    truncated = tmp_path / "truncated.pth"
    torch.save({"params": SRVGGNetCompact(num_feat=4, num_conv=1).state_dict()}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_dict)
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"x")
    for path in (garbage, truncated, bad_st, not_dict, other, tmp_path / "missing.pth"):
        with pytest.raises(ModelError) as info:
            read_weights_file(path)
        assert not isinstance(info.value, UnsafeModelFileError), path
        assert str(path.name) in str(info.value) and "\n" not in str(info.value)


def test_state_dict_key_preference_and_prefix(tmp_path: Path) -> None:
    sd = SRVGGNetCompact(num_feat=4, num_conv=1).state_dict()
    path = tmp_path / "m.pth"
    torch.save({"params": sd}, path)
    assert read_weights_file(path).keys() == sd.keys()
    torch.save({f"module.{k}": v.half() for k, v in sd.items()}, path)
    got = read_weights_file(path)
    assert got.keys() == sd.keys() and all(v.dtype == torch.float32 for v in got.values())


def test_home_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDSR_HOME")
    assert home_dir() == Path.home() / ".cache" / "vidsr"


# --- downloads -------------------------------------------------------------------------------


def _publish_general(root: Path) -> tuple[dict[str, torch.Tensor], bytes]:
    torch.manual_seed(5)
    sd = SRVGGNetCompact(**GENERAL.kwargs).state_dict()
    path = root / "v0.2.5.0" / "realesr-general-x4v3.pth"
    path.parent.mkdir(parents=True)
    torch.save({"params": sd}, path)
    return sd, path.read_bytes()


def test_download_fetches_verifies_and_caches(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    base, root = server
    sd, data = _publish_general(root)
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", base)
    assert not is_offline_ready(GENERAL)
    calls: list[tuple[int, int | None]] = []
    record = dataclasses.replace(GENERAL, sha256=hashlib.sha256(data).hexdigest())
    got = resolve_state_dict(record, progress=lambda done, total: calls.append((done, total)))
    assert all(torch.equal(got[k], v) for k, v in sd.items())
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
    assert is_cached(GENERAL.name) and is_offline_ready(GENERAL)
    cached, spec = read_cache(GENERAL.name)
    assert spec.kwargs == GENERAL.kwargs and all(torch.equal(cached[k], v) for k, v in sd.items())
    assert list((home / "downloads").iterdir()) == []  # the .pth is not kept beside the cache
    net = load_network(GENERAL.name, denoise_strength=1.0)
    assert all(torch.equal(net.module.state_dict()[k], v) for k, v in sd.items())


def test_sha256_mismatch_is_refused_and_nothing_cached(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    base, root = server
    _publish_general(root)
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", base)
    record = dataclasses.replace(GENERAL, sha256="0" * 64)
    with pytest.raises(ModelError, match="sha256") as info:
        resolve_state_dict(record)
    assert "\n" not in str(info.value)
    assert not is_cached(GENERAL.name) and not cache_path(GENERAL.name).exists()
    assert list((home / "downloads").iterdir()) == []


def test_server_down_gives_one_line_offline_error(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _root = server
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", base)  # serves nothing: 404
    with pytest.raises(ModelError) as info:
        resolve_state_dict(GENERAL)
    message = str(info.value)
    assert message == (
        f"model realesr-general-x4v3 is not available offline; download it from "
        f"{base}v0.2.5.0/realesr-general-x4v3.pth and run: vidsr models import "
        "realesr-general-x4v3.pth --name realesr-general-x4v3"
    )
    assert not is_cached(GENERAL.name)


def test_closed_port_and_no_download_give_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that was free; nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", f"http://127.0.0.1:{port}")
    for kwargs in ({}, {"allow_download": False}):
        with pytest.raises(
            ModelError,
            match=r"^model RealESRNet_x4plus is not available offline; download it from http://127\.0\.0\.1",
        ) as info:
            resolve_state_dict(MODELS["RealESRNet_x4plus"], **kwargs)
        assert "\n" not in str(info.value)
        assert "vidsr models import RealESRNet_x4plus.pth --name RealESRNet_x4plus" in str(
            info.value
        )
    monkeypatch.delenv("VIDSR_MODEL_BASE_URL")
    with pytest.raises(
        ModelError,
        match=re.escape(
            "download it from https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"
        ),
    ):
        resolve_state_dict(MODELS["RealESRGAN_x2plus"], allow_download=False)


def test_malicious_download_is_refused(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base, root = server
    marker = tmp_path / "pwned"
    path = root / "v0.1.1" / "RealESRNet_x4plus.pth"
    path.parent.mkdir(parents=True)
    torch.save({"params_ema": _RunsCode(marker)}, path)
    monkeypatch.setenv("VIDSR_MODEL_BASE_URL", base)
    with pytest.raises(UnsafeModelFileError):
        resolve_state_dict(MODELS["RealESRNet_x4plus"])
    assert not marker.exists() and not is_cached("RealESRNet_x4plus")


def test_download_uses_official_url_by_default() -> None:
    assert sources.download_url(GENERAL) == GENERAL.url
