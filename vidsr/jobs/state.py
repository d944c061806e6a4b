"""On-disk job state: the work folder that makes a run resumable.

Layout of ``<output>.vidsr-work/`` (or ``--work-dir``)::

    job.json          plan, source fingerprint, settings, finished chunks (frames, bytes)
    segments/00000.mkv ...   one video-only segment per finished chunk

``job.json`` is only ever replaced whole (write temp, then rename), and only by the driver
process. A segment counts as finished only once its encoder closed and renamed it *and*
``job.json`` records it; anything else in ``segments/`` is a leftover and is redone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidsr.errors import JobStateError, opt
from vidsr.files import atomic_write_text
from vidsr.jobs.plan import Chunk
from vidsr.options import find

#: 2: settings fingerprinted from the option table's resolved values (vidsr 0.1, issue 10).
STATE_VERSION = 2
_EDGE = 1 << 20  # bytes hashed at each end of the source


def fingerprint_source(path: Path) -> dict[str, Any]:
    """Size, mtime and sha256 of the first and last MiB: cheap, and changes with any edit
    that matters (a re-encode, a truncation, a replaced file)."""
    st = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(_EDGE)).hexdigest()
        f.seek(max(0, st.st_size - _EDGE))
        tail = hashlib.sha256(f.read(_EDGE)).hexdigest()
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "head_sha256": head,
        "tail_sha256": tail,
    }


def _setting_name(key: str) -> str:
    """A fingerprint key as the reader knows it: an option (spelled their way), else its
    own words (``weights``: the model's weights' hash)."""
    if find("upscale", key) is not None:
        return opt(key)
    return {"weights": "the model's weights (sha256)", "out_size": "the output size"}.get(key, key)


@dataclass
class JobState:
    """The work folder of one job. Create or resume with :meth:`open`."""

    work_dir: Path
    source: dict[str, Any]
    settings: dict[str, Any]
    chunks: list[Chunk]
    done: dict[int, dict[str, int]]
    suffix: str = ".mkv"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "job.json"

    @property
    def segments_dir(self) -> Path:
        return self.work_dir / "segments"

    def segment_path(self, chunk: Chunk) -> Path:
        return self.segments_dir / f"{chunk.name}{self.suffix}"

    @classmethod
    def open(
        cls,
        work_dir: Path,
        *,
        source_path: Path,
        settings: Mapping[str, Any],
        chunks: Sequence[Chunk],
        restart: bool = False,
        suffix: str = ".mkv",
    ) -> JobState:
        """Resume the job in ``work_dir`` or start a new one there, its segments written as
        ``suffix`` files (a resumed job keeps the suffix it began with).

        Refuses (``JobStateError``) when the folder holds a job for a different source or
        different settings, unless ``restart`` (which clears it)."""
        work_dir = Path(work_dir)
        source = fingerprint_source(source_path)
        settings = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        state_file = work_dir / "job.json"
        if restart and work_dir.exists():
            shutil.rmtree(work_dir)
        if state_file.exists():
            try:
                saved = json.loads(state_file.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise JobStateError(
                    f"{state_file} is unreadable ({exc}); pass {opt('restart', True)} to start over"
                ) from exc
            if saved.get("version") != STATE_VERSION:
                raise JobStateError(
                    f"{work_dir} was made by another vidsr version; pass {opt('restart', True)} "
                    "to start over"
                )
            if saved["source"] != source:
                raise JobStateError(
                    f"the source changed since this job started ({work_dir}); "
                    f"pass {opt('restart', True)} to start over"
                )
            if saved["settings"] != settings:
                changed = sorted(
                    k
                    for k in set(saved["settings"]) | set(settings)
                    if saved["settings"].get(k) != settings.get(k)
                )
                named = ", ".join(
                    f"{_setting_name(k)} was {saved['settings'].get(k)!r}, now {settings.get(k)!r}"
                    for k in changed
                )
                raise JobStateError(
                    f"the settings differ from the job in {work_dir}: {named}; use the same "
                    f"options, or pass {opt('restart', True)} to start over"
                )
            state = cls(
                work_dir,
                source,
                settings,
                [Chunk(*c) for c in saved["chunks"]],
                {int(k): v for k, v in saved["done"].items()},
                saved.get("suffix", ".mkv"),
            )
        else:
            state = cls(work_dir, source, settings, list(chunks), {}, suffix)
            state.segments_dir.mkdir(parents=True, exist_ok=True)
            state.save()
        state.segments_dir.mkdir(parents=True, exist_ok=True)
        return state

    def save(self) -> None:
        data = {
            "version": STATE_VERSION,
            "source": self.source,
            "settings": self.settings,
            "chunks": [c.as_list() for c in self.chunks],
            "done": {str(k): v for k, v in sorted(self.done.items())},
            "suffix": self.suffix,
        }
        atomic_write_text(self.state_path, json.dumps(data, indent=1) + "\n")

    def mark_done(self, chunk: Chunk, frames: int, segment: Path) -> None:
        """Record a finished, renamed segment (the driver calls this, one at a time)."""
        self.done[chunk.index] = {"frames": frames, "bytes": segment.stat().st_size}
        self.save()

    def verify(self, count_frames: Any) -> list[Chunk]:
        """Check every recorded segment (exists, same size, same frame count by
        ``count_frames(path)``); forget bad ones; delete unrecorded leftovers. Returns the
        chunks still to do."""
        changed = False
        for chunk in self.chunks:
            rec = self.done.get(chunk.index)
            if rec is None:
                continue
            seg = self.segment_path(chunk)
            ok = seg.exists() and seg.stat().st_size == rec["bytes"]
            if ok:
                try:
                    ok = count_frames(seg) == rec["frames"]
                except Exception:
                    ok = False
            if not ok:
                del self.done[chunk.index]
                changed = True
        if changed:
            self.save()
        keep = {self.segment_path(c).name for c in self.chunks if c.index in self.done}
        for leftover in self.segments_dir.iterdir():
            if leftover.name not in keep:
                leftover.unlink()
        return [c for c in self.chunks if c.index not in self.done]

    def finished_segments(self) -> list[Path]:
        return [self.segment_path(c) for c in self.chunks if c.index in self.done]

    @property
    def frames_done(self) -> int:
        return sum(v["frames"] for v in self.done.values())

    def remove(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)
