"""``vidsr finetune export``: a run's EMA generator as a named model (``-m NAME``) and a
``.safetensors`` file to share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidsr.errors import InputError, UsageError


def checkpoint_folder(run: Path, iteration: int | None = None) -> Path:
    """The checkpoint of ``iteration`` (default: the newest complete one) in ``run``."""
    from vidsr.training.train import newest_checkpoint

    folder = run / "checkpoints"
    if iteration is None:
        newest = newest_checkpoint(run)
        if newest is None:
            raise InputError(f"{run}: no checkpoint yet (train it with vidsr finetune train)")
        return newest
    found = folder / f"iter_{iteration:07d}"
    if not found.is_dir():
        have = sorted(
            p.name.removeprefix("iter_").lstrip("0") or "0" for p in folder.glob("iter_*")
        )
        raise InputError(
            f"{run} has no checkpoint at iteration {iteration} (it has {', '.join(have) or 'none'})"
        )
    return found


def export_model(
    run: Path, name: str, *, iteration: int | None = None, output: Path | None = None
) -> dict[str, Any]:
    """Save the EMA generator of ``run`` (at ``iteration``, default the newest) into the model
    cache as ``name`` (its architecture and scale recorded: ``vidsr upscale -m NAME``) and as
    a shareable ``.safetensors`` (default ``RUN/export/NAME.safetensors``)."""
    from safetensors.torch import save_file

    from vidsr.files import atomic_output
    from vidsr.models.detect import ArchSpec, detect_architecture
    from vidsr.models.registry import find_record
    from vidsr.models.sources import check_model_name, write_cache
    from vidsr.training.train import load_tensors

    check_model_name(name)
    if find_record(name) is not None:
        raise UsageError(f"{name} is a built-in model's name; export under another name")
    config = (
        json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else None
    )
    if config is None:
        raise InputError(f"{run}: not a training run (no config.json)")
    folder = checkpoint_folder(run, iteration)
    state_dict, _ = load_tensors(folder / "net_g_ema.safetensors")
    spec: ArchSpec = detect_architecture(state_dict, source=str(folder))
    base = config["config"]["model"]
    source = f"finetune:{run.name}@{folder.name} from {base}"
    cached = write_cache(name, state_dict, spec, source)
    share = output or run / "export" / f"{name}.safetensors"
    share.parent.mkdir(parents=True, exist_ok=True)
    meta = {"arch": spec.arch, "kwargs": json.dumps(spec.kwargs, sort_keys=True), "source": source}
    with atomic_output(share) as tmp:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=meta)
    return {
        "name": name,
        "arch": spec.arch,
        "scale": spec.scale,
        "iteration": int(folder.name.removeprefix("iter_")),
        "cache": str(cached),
        "file": str(share),
    }
