"""Chunks as Ray tasks (the ``ray`` backend, with an optional cluster address).

Each chunk is one Ray task running :func:`vidsr.jobs.chunk.run_chunk` on whatever node Ray
picks. The driver (this process) alone writes the job state: it waits on the tasks, gathers
per-frame progress from a small actor, and calls ``on_done`` for every finished chunk.

* Placement: a GPU task (``num_gpus=1``, or ``1/workers_per_device``) when the device is
  ``cuda``/``cuda:N``, or ``auto`` and the cluster has GPUs; a CPU task otherwise, with
  ``num_cpus`` the smallest node's cores over ``workers_per_device`` and torch limited to
  that many threads. A GPU task uses the GPU Ray gave it (``CUDA_VISIBLE_DEVICES``), which
  torch sees as ``cuda:0``.
* Worker processes: each GPU task runs in a fresh process (``max_calls=1``, see
  :func:`remote_task`). CUDA reads ``CUDA_VISIBLE_DEVICES`` once per process, so a reused
  worker would stay on the GPU it first used (with its cached model there) while Ray books
  the task on another one: two chunks on one GPU, one GPU idle. A GPU task therefore loads
  the model each time. CPU tasks reuse workers, and with them the cached model.
* Retries: a task whose worker or node dies is run again (``max_retries``); so is one that ran
  out of GPU memory (``retry_exceptions``). Any other error fails the job at once.
* Storage: every node must see the work folder (and the source) at the same path. Before any
  chunk runs, a probe pinned to each node that can run the tasks reads a random token the
  driver wrote there and writes a reply the driver reads back.
* Ray itself: an already connected Ray (``ray.init`` by the caller) is used and left alone;
  otherwise the executor connects to the settings' ``ray_address``, or starts a private local
  Ray, and shuts it down when closed (Ctrl-C included: the tasks are cancelled first). One
  executor serves every file of a batch.
* Ray is optional: it is imported only here, when this backend is used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vidsr.errors import DeviceError, GpuMemoryError, PipelineError, UsageError, VidsrError, opt
from vidsr.jobs.chunk import ChunkResult, ChunkTask, network_key, run_chunk, upscaler_for
from vidsr.settings import Settings

OnFrames = Callable[[int, int], None]
OnDone = Callable[[ChunkResult], None]

#: How often a task runs again after its worker/node died or it ran out of GPU memory.
MAX_RETRIES = 3
#: Driver poll interval (seconds): task completion and progress.
POLL_S = 0.25
#: A task sends its progress at most this often (seconds).
REPORT_EVERY_S = 0.2
#: How long the storage probes may take (seconds) before the check fails.
PROBE_TIMEOUT_S = 120.0
#: After Ctrl-C: how long cancelled tasks get to stop before they are killed (seconds).
CANCEL_GRACE_S = 5.0

INSTALL_HINT = (
    f"{opt('backend', 'ray')} needs Ray, which is not installed: install vidsr[ray] "
    "(pip install 'vidsr[ray]')"
)


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ``UsageError`` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    return ray


# --- placement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResources:
    """What one chunk task asks Ray for, and the torch threads a CPU task uses."""

    num_cpus: float
    num_gpus: float
    cpu_threads: int

    @property
    def gpu(self) -> bool:
        return self.num_gpus > 0

    def satisfied_by(self, node_resources: Mapping[str, float]) -> bool:
        """Whether a node with these total resources can ever run the task."""
        return node_resources.get("CPU", 0) >= self.num_cpus and (
            node_resources.get("GPU", 0) >= self.num_gpus
        )


def plan_resources(
    device: str, workers_per_device: int, nodes: Sequence[Mapping[str, float]]
) -> TaskResources:
    """The resources of a chunk task for ``device`` on a cluster whose alive nodes have
    ``nodes`` (each node's total resources, as in ``ray.nodes()[i]["Resources"]``)."""
    spec = device.strip().lower()  # checked by the option table: auto | cpu | cuda | cuda:N
    has_gpu = any(n.get("GPU", 0) > 0 for n in nodes)
    if spec == "cpu" or (spec == "auto" and not has_gpu):
        cores = [int(n["CPU"]) for n in nodes if n.get("CPU", 0) >= 1]
        if not cores:
            raise PipelineError("the Ray cluster has no node with a CPU to run the chunks on")
        per_task = max(1, min(cores) // workers_per_device)
        return TaskResources(num_cpus=per_task, num_gpus=0, cpu_threads=per_task)
    if not has_gpu:
        raise DeviceError(f"device {device} requested but the Ray cluster has no GPU")
    # Ray picks the GPU: a cuda:N index only says "a GPU" here.
    return TaskResources(num_cpus=1, num_gpus=1 / workers_per_device, cpu_threads=0)


def worker_device(gpu_ids: Sequence[Any]) -> str:
    """The torch device for a task Ray gave ``gpu_ids``: Ray sets ``CUDA_VISIBLE_DEVICES`` to
    just those GPUs, so the task's GPU is always ``cuda:0``; no GPU means the CPU."""
    return "cuda:0" if len(gpu_ids) > 0 else "cpu"


def assigned_device(gpu_ids: Sequence[Any]) -> str:
    """Inside a task, before anything touches CUDA: the torch device for the GPUs Ray gave
    it (``ray.get_gpu_ids()``), with ``CUDA_VISIBLE_DEVICES`` made exactly those GPUs (Ray
    sets it unless told not to), so ``cuda:0`` is the task's own GPU."""
    if len(gpu_ids) > 0:
        visible = ",".join(str(i) for i in gpu_ids)
        if os.environ.get("CUDA_VISIBLE_DEVICES") != visible:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    return worker_device(gpu_ids)


def remote_task(ray: Any, fn: Callable[..., Any], res: TaskResources, **options: Any) -> Any:
    """``fn`` as a Ray remote function asking for ``res`` (plus Ray task ``options``).

    A GPU task gets a fresh worker process each run (``max_calls=1``): CUDA reads
    ``CUDA_VISIBLE_DEVICES`` once per process, so a reused worker would keep its first GPU
    while Ray books the task on another. Ray sets this itself only when ``num_gpus`` is
    given here, never through ``.options()`` (which cannot set ``max_calls`` either), so the
    resources go in this call. CPU tasks reuse workers (``max_calls=0``) and their cached model.
    """
    return ray.remote(
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        max_calls=1 if res.gpu else 0,
        **options,
    )(fn)


# --- inside a task ---------------------------------------------------------------------------

# One built upscaler per worker process: consecutive chunks on a worker skip the model load.
_UPSCALER_CACHE: dict[tuple[Any, ...], Any] = {}


def cached_upscaler(settings: Settings, device: str) -> Any:
    """The upscaler for ``settings`` on ``device``, built once per process. Only the latest
    one is kept, so a worker never holds two models on a GPU."""
    key = network_key(settings, device)
    upscaler = _UPSCALER_CACHE.get(key)
    if upscaler is None:
        _UPSCALER_CACHE.clear()
        upscaler = upscaler_for(settings, device)
        _UPSCALER_CACHE[key] = upscaler
    return upscaler


def _drop_cached_upscaler() -> None:
    _UPSCALER_CACHE.clear()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _Reporter:
    """``on_frames(n)`` for run_chunk: adds up frames and sends them to the progress actor
    at most every ``REPORT_EVERY_S`` (fire and forget: progress never slows a chunk)."""

    def __init__(self, board: Any, index: int, attempt: str) -> None:
        self.board, self.index, self.attempt = board, index, attempt
        self.pending = 0
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.pending += n
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY_S:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.board is not None and self.pending:
            with contextlib.suppress(Exception):
                self.board.add.remote(self.index, self.attempt, self.pending)
        self.pending = 0


def _chunk_task(task: ChunkTask, cpu_threads: int, board: Any) -> ChunkResult:
    """The body of one chunk's Ray task (runs on a worker; a GPU task in a fresh process)."""
    import ray

    device = assigned_device(ray.get_gpu_ids())  # first: before torch or PyAV touch CUDA
    import torch

    from vidsr.pipeline.memory import is_out_of_memory

    index = task.chunk.index
    attempt = uuid.uuid4().hex  # a retried task reports afresh: the driver resets its count
    if board is not None:
        with contextlib.suppress(Exception):
            board.start.remote(index, attempt)
    if device == "cpu" and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    upscaler = cached_upscaler(task.settings, device)
    reporter = _Reporter(board, index, attempt)
    try:
        result = run_chunk(task, upscaler, reporter)
    except Exception as exc:  # out of GPU memory: Ray runs the task again (retry_exceptions)
        if not is_out_of_memory(exc):
            raise
        _drop_cached_upscaler()
        if isinstance(exc, torch.cuda.OutOfMemoryError | GpuMemoryError):
            raise
        raise GpuMemoryError(f"out of GPU memory: {exc}") from exc
    finally:
        reporter.flush()
    node = ray.get_runtime_context().get_node_id()
    where = f"{ray.util.get_node_ip_address()}/{node[:8]}"
    return replace(result, worker=f"{upscaler.device}@{where}")


class _ProgressBoard:
    """A Ray actor (created in :meth:`RayExecutor.run`): frames done so far by the current
    attempt of each chunk. A new attempt (a retry) starts again from 0."""

    def __init__(self) -> None:
        self.current: dict[int, list[Any]] = {}

    def start(self, index: int, attempt: str) -> None:
        self.current[index] = [attempt, 0]

    def add(self, index: int, attempt: str, n: int) -> None:
        entry = self.current.get(index)
        if entry is not None and entry[0] == attempt:  # late news from a dead attempt: ignored
            entry[1] += n

    def snapshot(self) -> dict[int, tuple[str, int]]:
        return {i: (e[0], e[1]) for i, e in self.current.items()}


# --- the shared-storage check ----------------------------------------------------------------


def probe_storage(token_file: str, token: str, reply_file: str, source: str, size: int) -> str:
    """Run on a node: '' when it reads ``token`` in ``token_file``, can write ``reply_file``
    and sees ``source`` with ``size`` bytes; else what is wrong (one short clause)."""
    try:
        seen = Path(token_file).read_text("utf-8")
    except OSError as exc:
        return f"cannot read {token_file} ({exc.strerror or exc})"
    if seen != token:
        return f"sees a different file at {token_file} (node-local storage?)"
    try:
        Path(reply_file).write_text(token, "utf-8")
    except OSError as exc:
        return f"cannot write in {Path(reply_file).parent} ({exc.strerror or exc})"
    try:
        if os.stat(source).st_size != size:
            return f"sees a different {source}"
    except OSError as exc:
        return f"cannot read {source} ({exc.strerror or exc})"
    return ""


def _probe_task(token_file: str, token: str, reply_dir: str, source: str, size: int) -> str:
    import ray

    node = ray.get_runtime_context().get_node_id()
    return probe_storage(token_file, token, os.path.join(reply_dir, f".{node}.reply"), source, size)


def _node_name(node: Mapping[str, Any]) -> str:
    return f"{node.get('NodeManagerAddress', '?')} ({node['NodeID'][:8]})"


def check_shared_storage(
    ray: Any, folder: Path, source: Path, nodes: Sequence[Mapping[str, Any]]
) -> None:
    """Fail with a one-line ``PipelineError`` unless every node in ``nodes`` sees ``folder``
    (read and write) and ``source`` as this process does."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    token_file = folder / f".vidsr-probe-{token[:12]}"
    reply_dir = folder / f".vidsr-probe-{token[:12]}.d"
    reply_dir.mkdir(parents=True)
    token_file.write_text(token, "utf-8")
    try:
        probe = ray.remote(_probe_task)
        refs = {
            probe.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(str(token_file), token, str(reply_dir), str(source), source.stat().st_size): n
            for n in nodes
        }
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
        for ref in late:
            ray.cancel(ref, force=True)
            raise PipelineError(
                f"Ray node {_node_name(refs[ref])} did not answer the shared-storage check "
                f"within {PROBE_TIMEOUT_S:.0f} s"
            )
        for ref in ready:
            node = refs[ref]
            try:
                problem = ray.get(ref)
            except Exception as exc:
                problem = f"the check failed ({type(exc).__name__})"
            if not problem:
                reply = reply_dir / f".{node['NodeID']}.reply"
                if not (reply.is_file() and reply.read_text("utf-8") == token):
                    problem = f"writes to {folder} do not reach this machine"
            if problem:
                raise PipelineError(
                    f"the work folder must be on storage every Ray node sees at the same path: "
                    f"node {_node_name(node)} {problem}; pass {opt('work_dir')} on shared storage"
                )
    finally:
        token_file.unlink(missing_ok=True)
        for p in reply_dir.glob("*"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            reply_dir.rmdir()


@contextlib.contextmanager
def _ray_notices_to_stderr() -> Iterator[None]:
    """Ray's driver prints cluster notices ("task failed ... will be retried", infeasible
    tasks) on stdout from a thread, whatever ``log_to_driver`` says; stdout may carry
    ``--json`` events, so they go to stderr while the executor runs."""
    try:
        from ray._private import worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):
        yield
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> Any:
        return original({**data, "is_err": True}, ignore_prefix)

    ray_worker.print_to_stdstream = to_stderr
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


# --- the executor ----------------------------------------------------------------------------


class RayExecutor:
    """Runs chunk tasks on a Ray cluster. See the module docstring.

    From the run's settings it uses ``device`` (what the tasks ask Ray for), ``ray_address``
    and ``workers_per_device`` (tasks per GPU, or the split of each node's cores between CPU
    tasks). :meth:`open` connects; :attr:`device_type` is then the cluster's answer for the
    device (``auto``: ``cuda`` when it has GPUs); :meth:`close` disconnects a Ray it started.
    """

    def __init__(self, settings: Settings) -> None:
        self.ray = import_ray()
        self.device: str = settings.device
        self.address: str | None = settings.ray_address
        self.workers_per_device: int = settings.workers_per_device
        self.owns_ray = False
        self._resources: TaskResources | None = None

    # Ray's lifetime ---------------------------------------------------------------------

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return  # the caller's Ray: used as is, never shut down here
        kwargs: dict[str, Any] = {"log_to_driver": False}  # keep stdout for --json
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs.update(address="local", include_dashboard=False)
        try:
            ray.init(**kwargs)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                ray.shutdown()  # whatever a half-done start left running
            if not isinstance(exc, ConnectionError | RuntimeError | ValueError):
                raise
            where = self.address or "a local Ray"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PipelineError(f"cannot start or reach {where}: {first}") from exc
        self.owns_ray = True

    def _disconnect(self) -> None:
        if self.owns_ray:
            self.owns_ray = False
            with contextlib.suppress(Exception):
                self.ray.shutdown()

    def open(self) -> None:
        """Connect (or start a local Ray) and plan the tasks' resources; idempotent."""
        if self._resources is None:
            self._connect()
            try:
                self._resources = plan_resources(
                    self.device,
                    self.workers_per_device,
                    [n.get("Resources", {}) for n in self._nodes()],
                )
            except BaseException:
                self._disconnect()
                raise

    def close(self) -> None:
        """Disconnect from (or shut down) a Ray this executor started."""
        self._resources = None
        self._disconnect()

    @property
    def device_type(self) -> str:
        """``cuda`` when the chunk tasks run on GPUs, else ``cpu`` (connects first)."""
        self.open()
        assert self._resources is not None
        return "cuda" if self._resources.gpu else "cpu"

    @property
    def name(self) -> str:
        """Where the chunks run, for the reader."""
        return f"Ray ({'GPU' if self.device_type == 'cuda' else 'CPU'} tasks)"

    def _nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    # the run ----------------------------------------------------------------------------

    def run(self, tasks: Sequence[ChunkTask], on_frames: OnFrames, on_done: OnDone) -> None:
        if not tasks:
            return
        # Workers do not share this process's working directory: absolute paths only.
        tasks = [
            replace(t, source=Path(t.source).resolve(), segment=Path(t.segment).resolve())
            for t in tasks
        ]
        self.open()
        with _ray_notices_to_stderr():
            self._run(tasks, on_frames, on_done)

    def _run(self, tasks: Sequence[ChunkTask], on_frames: OnFrames, on_done: OnDone) -> None:
        ray = self.ray
        import torch

        nodes = self._nodes()
        res = self._resources
        assert res is not None
        usable = [n for n in nodes if res.satisfied_by(n.get("Resources", {}))]
        if not usable:
            raise PipelineError(
                f"no Ray node can run a chunk task (needs {res.num_cpus:g} CPU, "
                f"{res.num_gpus:g} GPU)"
            )
        check_shared_storage(ray, tasks[0].segment.parent, tasks[0].source, usable)

        board = self._start_board()
        remote = remote_task(
            ray,
            _chunk_task,
            res,
            max_retries=MAX_RETRIES,
            retry_exceptions=[torch.cuda.OutOfMemoryError, GpuMemoryError],
        )
        pending = {
            remote.options(name=f"vidsr-chunk-{t.chunk.index}").remote(
                t, res.cpu_threads, board
            ): t.chunk.index
            for t in tasks
        }
        reported: dict[int, tuple[str, int]] = {t.chunk.index: ("", 0) for t in tasks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
                if board is not None:
                    board = self._pump_progress(board, reported, on_frames)
                for ref in ready:
                    index = pending.pop(ref)
                    result = self._result(ref, index)
                    delta = result.frames - reported.pop(index)[1]
                    if delta:
                        on_frames(index, delta)
                    on_done(result)
        except BaseException:
            self._cancel(list(pending))
            raise
        finally:
            if board is not None:
                with contextlib.suppress(Exception):
                    ray.kill(board)

    def _start_board(self) -> Any:
        """The progress actor, on the driver's node when there is one (never lost with a
        worker node); None if it cannot be made (progress then comes per finished chunk)."""
        ray = self.ray
        opts: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
        with contextlib.suppress(Exception):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            node = ray.get_runtime_context().get_node_id()
            # Hard affinity: Ray 2.60 placed a soft-pinned actor on a worker node at times.
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        try:
            return ray.remote(_ProgressBoard).options(**opts).remote()
        except Exception:
            return None

    def _pump_progress(
        self, board: Any, reported: dict[int, tuple[str, int]], on_frames: OnFrames
    ) -> Any:
        """Report the frames each running chunk's current attempt has done since last time;
        a new attempt (a retry) first takes back what the lost one had reported. Returns the
        board, or None once it is gone (progress then comes per finished chunk)."""
        try:
            snapshot = self.ray.get(board.snapshot.remote(), timeout=10)
        except Exception:
            return None
        for index, (attempt, frames) in snapshot.items():
            if index not in reported:
                continue  # finished already
            seen_attempt, seen = reported[index]
            if attempt != seen_attempt and seen:
                on_frames(index, -seen)
                seen = 0
            if frames != seen:
                on_frames(index, frames - seen)
            reported[index] = (attempt, frames)
        return board

    def _result(self, ref: Any, index: int) -> ChunkResult:
        """A finished task's ChunkResult, or its error as a one-line VidsrError."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, VidsrError):
                raise cause from exc
            if cause is not None:
                text = str(cause).strip().splitlines()
                what = f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__
            else:
                what = str(exc).strip().splitlines()[0]
            raise PipelineError(f"chunk {index} failed on Ray: {what}") from exc
        except ray.exceptions.RayError as exc:
            # WorkerCrashedError, NodeDiedError, ObjectLostError ...: retries exhausted
            raise PipelineError(
                f"chunk {index} failed on Ray after {MAX_RETRIES} retries: {type(exc).__name__}"
            ) from exc

    def _cancel(self, refs: list[Any]) -> None:
        """Cancel unfinished tasks: politely first (KeyboardInterrupt in the task, so its
        encoder stops cleanly), then by killing the workers still busy."""
        ray = self.ray
        if not refs:
            return
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)
        with contextlib.suppress(Exception):
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
