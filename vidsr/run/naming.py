"""Output names: the one rule for default outputs and for batch name templates.

A default output sits beside its input and says what made it: ``STEM.MODEL.xSCALE.mkv`` for a
video, ``STEM.MODEL.xSCALE.EXT`` for an image, ``FOLDER.MODEL.xSCALE/`` for a folder. MODEL is
the model's label: a registry or imported name as it is, a weights file's stem (any suffix
the loader accepts: ``models/mine.ckpt`` -> ``mine``).
"""

from __future__ import annotations

from pathlib import Path

from vidsr.errors import UsageError, opt
from vidsr.models.weights import MODEL_SUFFIXES

#: A video's default container (it carries every stream vidsr keeps).
DEFAULT_VIDEO_SUFFIX = ".mkv"


def model_label(model: str) -> str:
    """How a model appears in file names: a path's last part without a weights suffix."""
    name = Path(model).name or model
    suffix = Path(name).suffix
    if suffix.lower() in MODEL_SUFFIXES:
        name = name[: -len(suffix)]
    return name or "model"


def scale_label(scale: float) -> str:
    """``4.0`` -> ``4``, ``1.5`` -> ``1.5``."""
    return str(int(scale)) if float(scale).is_integer() else f"{scale:g}"


def default_output(input_path: Path, model: str, scale: float, kind: str = "video") -> Path:
    """The default output beside ``input_path``; ``kind`` is ``video``, ``image`` or
    ``folder``."""
    label = f"{model_label(model)}.x{scale_label(scale)}"
    if kind == "folder":
        return input_path.with_name(f"{input_path.name}.{label}")
    suffix = input_path.suffix if kind == "image" else DEFAULT_VIDEO_SUFFIX
    return input_path.with_name(f"{input_path.stem}.{label}{suffix}")


def template_name(template: str, rel: Path, *, model: str, scale: float, codec: str) -> Path:
    """A batch output's path below the output folder: ``rel``'s folder joined with
    ``template`` filled in. Fields: ``{stem}`` ``{name}`` ``{ext}`` (no dot) ``{model}``
    ``{scale}`` ``{codec}``. ``UsageError`` for a name that leaves the folder or a container
    vidsr cannot write."""
    from vidsr.media.remux import SUPPORTED_SUFFIXES
    from vidsr.options import find

    option = find("batch", "name")
    assert option is not None
    option.read(template, "api")  # its fields: the option's own check
    fields = {
        "stem": rel.stem,
        "name": rel.name,
        "ext": rel.suffix.lstrip("."),
        "model": model_label(model),
        "scale": scale_label(scale),
        "codec": codec,
    }
    try:
        name = template.format_map(fields)
    except (KeyError, ValueError, IndexError, AttributeError) as exc:
        raise UsageError(f"{opt('name', template)}: {exc}") from None
    out = rel.parent / name
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise UsageError(
            f"{opt('name')} must give a relative file name inside the output folder, not {name!r}"
        )
    if out.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UsageError(
            f"{opt('name')} gives {out.name!r}: the output must end in one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    return out
