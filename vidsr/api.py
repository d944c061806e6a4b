"""The Python API: ``vidsr.upscale(input, output=None, **options)``.

Its keyword arguments are the options of ``vidsr upscale``, by the same names, with the same
defaults and checks (generated from :mod:`vidsr.options`; ``help(vidsr.upscale)`` lists them).
``preset="anime"`` applies a preset below the options given explicitly, as on the command
line.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from vidsr.errors import InputError
from vidsr.options import options_for
from vidsr.run.events import EventSink, UpscaleResult
from vidsr.settings import Settings, make_settings

COMMAND = "upscale"


def api_options() -> list[Any]:
    """The options ``vidsr.upscale()`` takes as keyword arguments (besides ``output``)."""
    return [o for o in options_for(COMMAND) if o.api and o.name != "output"]


def settings_from_kwargs(command: str, kwargs: dict[str, Any]) -> Settings:
    """Settings from keyword arguments given explicitly (a preset among them fills in the
    others, below them). Options that only steer the command line's terminal (``json``,
    ``dry_run``) are not keyword arguments: ``UnknownOptionError`` like any unknown name."""
    from vidsr.options import find, unknown_option
    from vidsr.run.presets import with_preset

    for name in kwargs:
        option = find(command, name)
        if option is None or not option.api:
            raise unknown_option(command, name)
    return make_settings(command, with_preset(kwargs, command), "api")


def upscale(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    on_event: EventSink | None = None,
    **options: Any,
) -> UpscaleResult:
    """Upscale a video (or a single image) with the same options as ``vidsr upscale``.

    Returns an ``UpscaleResult``: ``frames``, ``output``, ``seconds``, ``fps``, ``stages``
    (decode / infer / encode figures) and ``bound`` (the stage that limited the run).
    ``on_event`` receives the run's typed events (``vidsr.run.events``: ``JobStarted``,
    ``Progress``, ``ChunkDone``, ``JobDone``; ``event.as_dict()`` is the ``--json`` line).
    Raises a ``VidsrError`` subclass on a bad option, bad input, a refused output, or a failed
    stage (an unknown keyword is an ``UnknownOptionError``, also a ``TypeError``).
    """
    from vidsr.media.image import is_image_path

    given = dict(options)
    if output is not None:
        given["output"] = output
    settings = settings_from_kwargs(COMMAND, given)
    src = Path(input)
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if is_image_path(src):
        return _image(settings, src)
    from vidsr.run.job import upscale_video

    return upscale_video(settings, src, on_event=on_event)


def _image(settings: Settings, src: Path) -> UpscaleResult:
    from vidsr.pipeline.stages import StageStats
    from vidsr.run.images import upscale_image

    run = upscale_image(settings, src)
    return UpscaleResult(
        src,
        run.output,
        1,
        run.seconds,
        {"infer": StageStats("infer", 1, run.seconds)},
        run.model,
        run.device,
        run.precision,
        1,
    )


def _signature() -> inspect.Signature:
    """``upscale``'s signature with every option as a keyword argument (for ``help()`` and
    editors), built from the option table."""
    P = inspect.Parameter
    params = [
        P("input", P.POSITIONAL_OR_KEYWORD, annotation="str | os.PathLike[str]"),
        P("output", P.POSITIONAL_OR_KEYWORD, default=None, annotation="str | os.PathLike | None"),
        P("on_event", P.KEYWORD_ONLY, default=None, annotation="EventSink | None"),
    ]
    for o in api_options():
        params.append(P(o.name, P.KEYWORD_ONLY, default=o.default, annotation=o.kind.annotation))
    return inspect.Signature(params, return_annotation="UpscaleResult")


def _options_doc() -> str:
    lines = ["", "Options (the same as ``vidsr upscale``'s; see ``vidsr upscale --help``):", ""]
    for o in api_options():
        choices = f" One of {', '.join(o.choices)}." if o.choices else ""
        lines.append(f"- ``{o.name}`` (default ``{o.default!r}``): {o.help}{choices}")
    return "\n".join(lines)


upscale.__signature__ = _signature()  # type: ignore[attr-defined]
upscale.__doc__ = (upscale.__doc__ or "") + _options_doc()
