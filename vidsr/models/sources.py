"""Where model weights come from: the local cache, the bundled ncnn files, the release URL.

The cache is ``$VIDSR_HOME/models/NAME.safetensors`` (``VIDSR_HOME`` defaults to
``~/.cache/vidsr``): fp32 tensors with BasicSR key names, and in the safetensors header the
architecture (``arch``), its constructor arguments (``kwargs``, JSON), the parameter count and
where the weights came from (``source``). A community architecture (spandrel's) records
``loader = spandrel``, spandrel's architecture id, its hyperparameters and its descriptor
(scale, size needs, precisions). An ONNX model is cached as its own file, ``NAME.onnx``,
beside a ``NAME.onnx.json`` with the same facts. Cache entries are written atomically, so a
crash or a concurrent writer never leaves a partial file under a final name.

``VIDSR_MODEL_BASE_URL`` replaces the official release URL prefix
(``https://github.com/xinntao/Real-ESRGAN/releases/download/``), e.g. for a mirror.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vidsr.errors import ModelError, OutputError, UsageError
from vidsr.files import atomic_output
from vidsr.home import home_dir, models_dir
from vidsr.models.detect import ArchSpec, check_state_dict, count_params, detect_architecture
from vidsr.models.ncnn import convert_ncnn, ncnn_files
from vidsr.models.registry import MODELS, OFFICIAL_BASE_URL, ModelRecord, find_record
from vidsr.models.weights import read_safetensors, read_safetensors_metadata, read_weights_file

ENV_BASE_URL = "VIDSR_MODEL_BASE_URL"
CACHE_SUFFIX = ".safetensors"
ONNX_SUFFIX = ".onnx"
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK = 1 << 20

#: ``progress(done_bytes, total_bytes)``; total is None when the server does not say.
Progress = Callable[[int, "int | None"], None]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class NetworkError(Exception):
    """A download failed for a reason outside this machine's disk."""


def check_model_name(name: str) -> str:
    """``name`` if it can name a cache entry (letters, digits, ``._+-``; no path separators),
    else ``UsageError``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '+' and '-' only"
        )
    return name


def cache_path(name: str) -> Path:
    """``HOME/models/NAME.safetensors`` (``UsageError`` for a name that is not a plain name)."""
    return models_dir() / f"{check_model_name(name)}{CACHE_SUFFIX}"


def onnx_cache_path(name: str) -> Path:
    """``HOME/models/NAME.onnx``: an imported ONNX model (facts in ``NAME.onnx.json``)."""
    return models_dir() / f"{check_model_name(name)}{ONNX_SUFFIX}"


def is_cached(name: str) -> bool:
    """Whether a cache entry named ``name`` exists (False for names that cannot be one)."""
    try:
        return cache_path(name).is_file() or onnx_cache_path(name).is_file()
    except UsageError:
        return False


def cached_onnx(name: str) -> Path | None:
    """The cached ONNX file of the entry ``name``, or None when it is not an ONNX entry."""
    try:
        path = onnx_cache_path(name)
    except UsageError:
        return None
    return path if path.is_file() else None


def is_offline_ready(record: ModelRecord) -> bool:
    """Whether ``record``'s weights can be had without a network: cached or bundled ncnn."""
    return is_cached(record.name) or (
        record.ncnn is not None and ncnn_files(record.ncnn) is not None
    )


def download_url(record: ModelRecord) -> str | None:
    """``record.url`` with the official prefix replaced by ``$VIDSR_MODEL_BASE_URL`` if set."""
    if record.url is None:
        return None
    base = os.environ.get(ENV_BASE_URL)
    if base and record.url.startswith(OFFICIAL_BASE_URL):
        return base.rstrip("/") + "/" + record.url[len(OFFICIAL_BASE_URL) :]
    return record.url


def record_spec(record: ModelRecord) -> ArchSpec:
    """The architecture a registry record declares."""
    return ArchSpec(record.arch, dict(record.kwargs))


def write_cache(
    name: str,
    state_dict: Mapping[str, torch.Tensor],
    spec: ArchSpec,
    source: str,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state_dict`` as the cache entry ``name`` (atomically) and return its path.
    ``extra``: more header strings (a community model's loader and descriptor)."""
    from safetensors.torch import save_file

    final = cache_path(name)
    tensors = {
        k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu())
        .clone()
        .contiguous()
        for k, v in state_dict.items()
    }
    metadata = {
        "format": "pt",
        "vidsr_cache": "1",
        "name": name,
        "arch": spec.arch,
        "kwargs": json.dumps(spec.kwargs, sort_keys=True),
        "params": str(count_params(tensors)),
        "source": source,
        **(extra or {}),
    }
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {final.parent}: {exc.strerror or exc}") from exc
    with atomic_output(final) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return final


def _spec_from_metadata(metadata: Mapping[str, str], path: Path) -> ArchSpec:
    try:
        return ArchSpec(metadata["arch"], dict(json.loads(metadata["kwargs"])))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path} is not a vidsr cache entry (no arch/kwargs metadata)") from exc


def read_cache(name: str) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    """The state dict and architecture of the cache entry ``name``; ``ModelError`` if it is
    missing, corrupt, or its tensors do not fit its recorded architecture."""
    path = cache_path(name)
    if not path.is_file():
        raise ModelError(f"model {name} is not in the cache ({path})")
    state_dict, metadata = read_safetensors(path)
    spec = _spec_from_metadata(metadata, path)
    if metadata.get("loader") == "spandrel":  # checked when spandrel builds it
        return state_dict, spec
    problem = check_state_dict(spec, state_dict)
    if problem is not None:
        raise ModelError(f"cache entry {path} is damaged ({problem}); delete it and retry")
    return state_dict, spec


def _row(name: str, metadata: Mapping[str, str], spec: ArchSpec) -> dict[str, Any]:
    scale = metadata.get("scale")
    if scale is None:
        try:
            scale = spec.scale
        except KeyError:
            scale = 0
    return {
        "name": name,
        "arch": spec.arch,
        "kwargs": spec.kwargs,
        "params": int(metadata.get("params", "0") or 0),
        "source": metadata.get("source", ""),
        "scale": int(scale),
        "loader": metadata.get("loader", "vidsr"),
        "precisions": tuple(p for p in metadata.get("precisions", "fp16,bf16").split(",") if p),
    }


def cached_models() -> list[dict[str, Any]]:
    """Every readable cache entry: ``name``, ``arch``, ``kwargs``, ``params``, ``source``,
    ``scale``, ``loader`` (``vidsr``, ``spandrel`` or ``onnx``) and ``precisions`` (the
    reduced ones it runs)."""
    folder = models_dir()
    rows: list[dict[str, Any]] = []
    if not folder.is_dir():
        return rows
    for path in sorted(folder.glob(f"*{CACHE_SUFFIX}")):
        name = path.name[: -len(CACHE_SUFFIX)]
        if name.startswith(".") or not _NAME.match(name):
            continue  # a temporary file of an atomic write
        try:
            metadata = read_safetensors_metadata(path)
            spec = _spec_from_metadata(metadata, path)
        except ModelError:
            continue
        rows.append(_row(name, metadata, spec))
    for path in sorted(folder.glob(f"*{ONNX_SUFFIX}")):
        name = path.name[: -len(ONNX_SUFFIX)]
        if name.startswith(".") or not _NAME.match(name):
            continue
        try:
            metadata = json.loads(Path(f"{path}.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append(_row(name, metadata, ArchSpec("ONNX", {})))
    return rows


def offline_message(record: ModelRecord, url: str | None = None) -> str:
    """The one line that tells a user how to get ``record`` without a network."""
    url = url or download_url(record) or "its official release page"
    filename = url.rsplit("/", 1)[-1] if "/" in url else f"{record.name}.pth"
    return (
        f"model {record.name} is not available offline; download it from {url} "
        f"and run: vidsr models import {filename} --name {record.name}"
    )


def _fetch(url: str, dest: Path, progress: Progress | None) -> str:
    """Download ``url`` into ``dest``; returns the sha256 hex digest. Network failures raise
    ``NetworkError``; local disk failures raise ``OSError``."""
    request = urllib.request.Request(url, headers={"User-Agent": "vidsr"})
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise NetworkError(str(getattr(exc, "reason", exc))) from exc
    with response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        if progress is not None:
            progress(0, total)
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as exc:
                raise NetworkError(f"connection lost after {done} bytes ({exc})") from exc
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        if total is not None and done != total:
            raise NetworkError(f"got {done} of {total} bytes")
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _verify_against_record(
    record: ModelRecord, state_dict: Mapping[str, torch.Tensor], source: str
) -> ArchSpec:
    act = record.kwargs.get("act_type") if record.arch == "SRVGGNetCompact" else None
    spec = detect_architecture(state_dict, act_type=act, source=source)
    if spec.arch != record.arch or spec.kwargs != dict(record.kwargs):
        raise ModelError(
            f"{source} is a {spec.arch} {spec.kwargs}, not {record.name} "
            f"({record.arch} {dict(record.kwargs)})"
        )
    return spec


def _cache_quietly(name: str, sd: Mapping[str, torch.Tensor], spec: ArchSpec, source: str) -> None:
    """Cache if possible; an unwritable cache folder only costs a later re-conversion."""
    with contextlib.suppress(OutputError):
        write_cache(name, sd, spec, source)


def download(
    url: str, progress: Progress | None, sha256: str | None, what: str, *, prefix: bool = False
) -> Path:
    """Fetch ``url`` into ``HOME/downloads`` (atomically, size-checked) and return the file;
    ``sha256``: its expected digest (``prefix``: only its start, as torchvision publishes
    them), ``ModelError`` naming ``what`` on a mismatch (nothing is kept). ``NetworkError``
    when it cannot be fetched; the caller says what to do offline."""
    folder = home_dir() / "downloads"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    final = folder / (url.rsplit("/", 1)[-1] or "download.pth")
    with atomic_output(final) as tmp:
        digest = _fetch(url, tmp, progress)
        want = sha256.lower() if sha256 else None
        if want is not None and not (digest.startswith(want) if prefix else digest == want):
            raise ModelError(
                f"download of {what} from {url} is corrupt or not the official file "
                f"(sha256 {digest}, expected {sha256}{'...' if prefix else ''}); nothing was cached"
            )
    return final


def _download(record: ModelRecord, progress: Progress | None) -> dict[str, torch.Tensor]:
    url = download_url(record)
    if url is None:
        raise ModelError(f"model {record.name} has no download URL and is not in the cache")
    try:
        final = download(url, progress, record.sha256, record.name)
    except NetworkError as exc:
        raise ModelError(offline_message(record, url)) from exc
    try:
        state_dict = read_weights_file(final)
        spec = _verify_against_record(record, state_dict, url)
        _cache_quietly(record.name, state_dict, spec, f"url:{url}")
    finally:
        final.unlink(missing_ok=True)
    return state_dict


def resolve_state_dict(
    record: ModelRecord, progress: Progress | None = None, allow_download: bool = True
) -> dict[str, torch.Tensor]:
    """The fp32 state dict of ``record``, from (a) the cache, (b) the bundled ncnn files
    (converted once, then cached), (c) the official URL (sha256-checked where known, then
    cached). ``progress(done_bytes, total_bytes)`` follows a download.

    Raises ``ModelError``; offline, its one line says where to download the file and how to
    import it.
    """
    if is_cached(record.name):
        try:
            state_dict, _spec = read_cache(record.name)
            if check_state_dict(record_spec(record), state_dict) is None:
                return state_dict
        except ModelError:
            pass  # a damaged entry: rebuild it from the sources below
    files = ncnn_files(record.ncnn) if record.ncnn else None
    if files is not None:
        model = convert_ncnn(*files)
        spec = record_spec(record)
        if model.post_resize is not None or model.spec != spec:
            raise ModelError(
                f"{files[0]} does not hold {record.name}; reinstall {files[0].parents[1].name}"
            )
        _cache_quietly(record.name, model.state_dict, spec, f"ncnn:{record.ncnn}")
        return model.state_dict
    if not allow_download:
        raise ModelError(offline_message(record))
    return _download(record, progress)


def _default_import_name(path: Path) -> str:
    stem = path.stem
    for record in MODELS.values():
        if record.ncnn is not None and record.ncnn.lower() == stem.lower():
            return record.name
    record = find_record(stem)
    return record.name if record is not None else stem


def _import_onnx(path: Path, name: str) -> str:
    """Copy an ONNX file into the cache as ``name`` with its facts beside it."""
    import shutil

    from vidsr.models.onnx import inspect_onnx, uses_external_data

    graph = inspect_onnx(path)
    if uses_external_data(path):
        raise ModelError(
            f"{path} keeps its weights in files beside it (ONNX external data); import a "
            "single-file export, or run it in place with -m FILE.onnx"
        )
    final = onnx_cache_path(name)
    facts = {
        "name": name,
        "arch": "ONNX",
        "loader": "onnx",
        "scale": str(graph.scale),
        "params": str(graph.params),
        "dtype": graph.dtype,
        "size": "x".join(map(str, graph.size)) if graph.size else "dynamic",
        "sha256": graph.digest,
        "source": f"import:{path.name}",
    }
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(final) as tmp:
            shutil.copyfile(path, tmp)
        with atomic_output(Path(f"{final}.json")) as tmp:
            tmp.write_text(json.dumps(facts, indent=1, sort_keys=True))
    except OSError as exc:
        raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from exc
    cache_path(name).unlink(missing_ok=True)  # an entry of the same name is replaced
    return name


def _import_community(path: Path, name: str, found: Any) -> str:
    module, described, tensors = found
    spec = ArchSpec(described.arch, described.hyperparameters)
    params = sum(p.numel() for p in module.parameters())  # buffers are not parameters
    extra = {"loader": "spandrel", "params": str(params), **described.to_metadata()}
    write_cache(name, tensors, spec, f"import:{path.name}", extra)
    _drop_onnx(name)
    return name


def _drop_onnx(name: str) -> None:
    """Remove an ONNX entry ``name`` (a weights import of the same name replaces it)."""
    onnx_cache_path(name).unlink(missing_ok=True)
    Path(f"{onnx_cache_path(name)}.json").unlink(missing_ok=True)


def import_model_file(path: str | Path, name: str | None = None) -> str:
    """Read a ``.pth``/``.pt``/``.safetensors``/ncnn ``.param``/``.onnx`` file, recognise its
    architecture (vidsr's own, else spandrel's; an ONNX graph's scale and channels) and write
    it to the cache as ``name`` (default: the file's stem, or the registry name of a bundled
    ncnn file). For a registry name the architecture must match the record. Returns the name
    it was cached under.
    """
    path = Path(path)
    if name is None:
        name = _default_import_name(path)
    record = find_record(name)
    if record is not None:
        name = record.name
    check_model_name(name)
    if path.suffix.lower() == ONNX_SUFFIX:
        if record is not None:
            raise UsageError(f"{name} is a built-in model; import the ONNX file under another name")
        return _import_onnx(path, name)
    state_dict = read_weights_file(path)
    if record is not None:
        spec = _verify_against_record(record, state_dict, str(path))
    else:
        from vidsr.models.community import recognise

        own, community = recognise(state_dict, str(path))
        if community is not None:
            return _import_community(path, name, community)
        assert own is not None
        spec = own
    write_cache(name, state_dict, spec, f"import:{path.name}")
    _drop_onnx(name)
    return name
