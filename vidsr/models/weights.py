"""Read model weight files (.pth/.pt, .safetensors, ncnn .param + .bin) into fp32 state dicts.

PyTorch checkpoints are loaded with ``weights_only=True``: a pickle that would build anything
other than tensors and plain containers (code, arbitrary classes) is refused with
``UnsafeModelFileError`` and nothing in it runs. Every other failure is a one-line
``ModelError``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vidsr.errors import ModelError, UnsafeModelFileError

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
NCNN_SUFFIXES = (".param",)
WEIGHT_SUFFIXES = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES + NCNN_SUFFIXES
#: Every model file vidsr takes: weights, and ONNX graphs (vidsr.models.onnx).
MODEL_SUFFIXES = (*WEIGHT_SUFFIXES, ".onnx")

#: Where release checkpoints keep the generator, in order of preference (BasicSR's, then the
#: wrappers spandrel also unwraps: traiNNer, neosr and other trainers' checkpoints).
STATE_DICT_KEYS = (
    "params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net",
)  # fmt: skip

# Globals a plain tensor checkpoint may name (what torch's weights-only unpickler allows).
_SAFE_GLOBALS = {
    "collections.OrderedDict",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.complex",
    "builtins.slice",
}
_SAFE_PREFIXES = ("torch.",)

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING"}


def _pickle_globals(data: bytes) -> list[str] | None:
    """The globals named by the pickle stream(s) in ``data`` (read with ``pickletools``, which
    runs nothing), or None when ``data`` does not start with a valid pickle."""
    found: list[str] = []
    stream = io.BytesIO(data)
    for n in range(8):  # legacy torch files are several pickles in a row, then raw storage
        start = stream.tell()
        strings: list[str] = []
        memo: dict[int, Any] = {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    strings.append(str(arg))
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(arg), str):
                    strings.append(memo[arg])
                elif op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
        except Exception:
            if n == 0:
                return None
            break
        if stream.tell() == start or stream.tell() >= len(data):
            break
    return found


def _unsafe_globals(path: Path) -> list[str] | None:
    """Globals in ``path``'s pickle that a weights-only load refuses; None if unreadable."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not members:
                    return None
                data = zf.read(members[0])
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return None
    found = _pickle_globals(data)
    if found is None:
        return None
    return [g for g in found if g not in _SAFE_GLOBALS and not g.startswith(_SAFE_PREFIXES)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        message = str(exc)
        refused = re.search(r"GLOBAL (\S+) was not an allowed global", message)
        if refused or unsafe:
            names = ", ".join(
                dict.fromkeys(([refused.group(1)] if refused else []) + (unsafe or []))
            )
            raise UnsafeModelFileError(
                f"refusing {path}: it contains pickled code or objects other than tensors "
                f"({names}); only plain weight files are loaded - re-save the state dict with "
                "torch.save or convert it to .safetensors where you trust the file"
            ) from None
        raise ModelError(f"cannot load {path}: not a valid PyTorch weights file") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise ModelError(f"model file {path} does not exist") from None
        raise ModelError(
            f"cannot load {path}: corrupt or not a PyTorch file ({_first_line(exc)})"
        ) from None


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The generator's state dict inside a loaded checkpoint: under ``params_ema``, else
    ``params``, then the other trainers' wrappers in :data:`STATE_DICT_KEYS` (or the one entry
    of a one-key wrapper), else the object itself; a ``module.`` prefix (DataParallel) and a
    ``netG.`` prefix common to every key are dropped, and floating tensors become fp32."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            if len(obj) == 1 and isinstance(next(iter(obj.values())), Mapping):
                obj = next(iter(obj.values()))  # one wrapper of another name
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{source} holds no state dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{source}: entry {key!r} is not a tensor; not a state dict")
        name = str(key).removeprefix("module.")
        out[name] = value.float() if value.is_floating_point() else value
    if out and all(k.startswith("netG.") for k in out):  # old ESRGAN trainers
        out = {k[len("netG.") :]: v for k, v in out.items()}
    return out


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (fp32) and header metadata of a ``.safetensors`` file; ``ModelError`` if bad."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"cannot load {path}: corrupt safetensors file ({_first_line(exc)})"
        ) from None
    return extract_state_dict(tensors, str(path)), metadata


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """Only the header metadata of a ``.safetensors`` file (no tensors are read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"cannot read {path}: corrupt safetensors file ({_first_line(exc)})"
        ) from None


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a CPU fp32 state dict with BasicSR key names.

    ``.pth``/``.pt``/``.ckpt``: ``torch.load(weights_only=True)``; the state dict under
    ``params_ema``, else ``params``, else the bare dict. ``.safetensors``: the tensors.
    ``.param``: an ncnn model, with its ``.bin`` beside it.

    Raises ``UnsafeModelFileError`` for a pickle with code in it, ``ModelError`` (one line)
    for a missing, unreadable or corrupt file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelError(f"model file {path} is a folder")
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)[0]
    if suffix in NCNN_SUFFIXES:
        from vidsr.models.ncnn import convert_ncnn

        model = convert_ncnn(path)
        if model.post_resize is not None:
            raise ModelError(
                f"{path} resizes the network's output by {model.post_resize:g} after it; "
                "vidsr does not model that - use the matching UP4X .param (same weights)"
            )
        return model.state_dict
    if suffix in TORCH_SUFFIXES:
        return extract_state_dict(_load_torch(path), str(path))
    raise ModelError(f"unsupported model file {path}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
