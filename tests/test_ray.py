"""``--backend ray``: chunks as Ray tasks (vidsr/jobs/ray_executor.py).

Every Ray here stays on loopback: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use
127.0.0.1 as the node address (``_node_ip_address="127.0.0.1"`` alone is turned back into the
routable address by ``ray.init``), and every server then binds it; a watcher thread fails the
test if any process started here listens anywhere else. ``RAY_TMPDIR`` is a short private
folder (AF_UNIX path limits), the auth token comes from the environment (nothing under ~/.ray),
usage stats are off. Clips are 64x36, 48 frames, 10-frame chunks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
import pytest
from helpers import run_main as cli
from helpers import upscale_settings

from vidsr.errors import DeviceError, Interrupted, PipelineError, UsageError

ray = pytest.importorskip("ray")

from vidsr.jobs import ray_executor  # noqa: E402
from vidsr.jobs.ray_executor import (  # noqa: E402
    assigned_device,
    plan_resources,
    probe_storage,
    remote_task,
    worker_device,
)

MODEL = "realesr-animevideov3"
CHUNK = 10
CLI_ARGS = ("--device", "cpu", "--codec", "ffv1", "--chunk-frames", str(CHUNK))


# --- environment -------------------------------------------------------------------------------


def _token_auth_from_env(mp: pytest.MonkeyPatch) -> None:
    """Token auth with a random token in the environment (not ~/.ray/auth_token). Ray read
    its auth settings when it was imported (at collection), so they are re-read here."""
    mp.setenv("RAY_AUTH_MODE", "token")
    mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray: loopback alone, no token
        mp.setenv("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="module", autouse=True)
def ray_env(shared_home: Path) -> Iterator[Path]:
    """Loopback-only Ray settings, and the session's model cache converted here, before any
    Ray worker starts, so workers find it."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # short: AF_UNIX paths
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(ray_tmp))
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        _token_auth_from_env(mp)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        from vidsr.models.loader import load_network

        load_network(MODEL)
        yield ray_tmp
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_ray_left() -> Iterator[None]:
    yield
    if ray.is_initialized():
        ray.shutdown()


def _is_loopback(ip: str) -> bool:
    ip = ip.split("%")[0]
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class ListenWatch:
    """Samples the listening sockets of this process and its descendants in a thread;
    ``outside`` collects every (process, address) not on loopback."""

    def __init__(self) -> None:
        self.outside: set[tuple[str, str]] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ours(self) -> set[int]:
        me = psutil.Process()
        pids = {me.pid}
        with contextlib.suppress(psutil.Error):
            pids |= {p.pid for p in me.children(recursive=True)}
        return pids

    def _sample(self) -> None:
        pids = self._ours()
        for c in psutil.net_connections("inet"):
            if c.status == psutil.CONN_LISTEN and c.pid in pids and not _is_loopback(c.laddr.ip):
                name = "?"
                with contextlib.suppress(psutil.Error):
                    name = psutil.Process(c.pid).name()
                self.outside.add((name, f"{c.laddr.ip}:{c.laddr.port}"))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self._sample()

    def __enter__(self) -> ListenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@pytest.fixture
def watch() -> Iterator[ListenWatch]:
    with ListenWatch() as w:
        yield w
    assert w.samples > 1
    assert not w.outside, f"listening outside loopback: {sorted(w.outside)}"


# --- helpers -----------------------------------------------------------------------------------


def frames_of(path: Path) -> list[tuple[int, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def assert_same_frames(a: Path, b: Path) -> None:
    fa, fb = frames_of(a), frames_of(b)
    assert len(fa) == len(fb) == 48
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (_, x), (_, y) in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def local_output(media_clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local backend's result for the cfr clip (the reference for every Ray run)."""
    out = tmp_path_factory.mktemp("local") / "local.mkv"
    assert cli("upscale", media_clips["cfr"], "-o", out, *CLI_ARGS) == 0
    return out


def job(clip: Path, out: Path, on_event: Any = None, **options: Any) -> Any:
    """A ``--backend ray`` run of ``clip`` into ``out`` (lossless), through the run layer;
    ``on_event`` gets each event as its ``--json`` dict."""
    from vidsr.run.job import open_executor, prepare, run_job

    sink = (lambda e: on_event(e.as_dict())) if on_event else None
    settings = upscale_settings(
        model=MODEL, codec="ffv1", chunk_frames=CHUNK, backend="ray", output=out, **options
    )
    with open_executor(settings) as executor:
        return run_job(prepare(settings, clip, executor), executor, on_event=sink)


def ray_children() -> list[psutil.Process]:
    """Ray's own processes among this process's descendants."""
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE and (
                "ray" in p.name().lower() or "ray" in " ".join(p.cmdline()[:3]).lower()
            ):
                out.append(p)
    return out


def wait_no_ray_children(timeout: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := ray_children()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# --- no Ray, and the pure parts ----------------------------------------------------------------


def test_without_ray_one_line_usage_error(
    media_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UsageError, match=r"install vidsr\[ray\]"):
        ray_executor.RayExecutor(upscale_settings(backend="ray"))
    out = tmp_path / "o.mkv"
    code = cli("upscale", media_clips["cfr"], "-o", out, *CLI_ARGS, "--backend", "ray", "--json")
    err = capsys.readouterr().err.strip()  # --json: no progress bar on stderr
    assert code == 2
    assert len(err.splitlines()) == 1 and "install vidsr[ray]" in err, err


def test_plan_resources() -> None:
    cpu_nodes = [{"CPU": 4.0}, {"CPU": 2.0}, {"CPU": 0.0}]  # a 0-CPU head runs no chunks
    r = plan_resources("cpu", 1, cpu_nodes)
    assert (r.num_cpus, r.num_gpus, r.cpu_threads, r.gpu) == (2, 0, 2, False)
    r = plan_resources("auto", 2, cpu_nodes)
    assert (r.num_cpus, r.num_gpus, r.cpu_threads) == (1, 0, 1)
    gpu_nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 4.0}]
    for device in ("cuda", "cuda:1", "auto"):
        r = plan_resources(device, 1, gpu_nodes)
        assert r.gpu and r.num_gpus == 1
    assert plan_resources("cuda", 2, gpu_nodes).num_gpus == 0.5
    assert not plan_resources("cpu", 1, gpu_nodes).gpu
    with pytest.raises(DeviceError, match="no GPU"):
        plan_resources("cuda", 1, cpu_nodes)
    with pytest.raises(UsageError, match=r"device= must be auto, cpu, cuda, cuda:N or intel:gpu"):
        upscale_settings(device="tpu", backend="ray")  # refused before any placement
    assert worker_device([]) == "cpu" and worker_device(["3"]) == "cuda:0"


def test_probe_storage_reports_what_a_node_sees(tmp_path: Path) -> None:
    token_file, reply = tmp_path / "token", tmp_path / "reply"
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 10)
    token_file.write_text("abc")
    assert probe_storage(str(token_file), "abc", str(reply), str(source), 10) == ""
    assert reply.read_text() == "abc"
    assert "different file" in probe_storage(str(token_file), "xyz", str(reply), str(source), 10)
    missing = tmp_path / "elsewhere" / "token"
    assert "cannot read" in probe_storage(str(missing), "abc", str(reply), str(source), 10)
    assert "different" in probe_storage(str(token_file), "abc", str(reply), str(source), 11)
    no_dir = str(tmp_path / "no" / "reply")
    assert "cannot write" in probe_storage(str(token_file), "abc", no_dir, str(source), 10)


# --- with Ray ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_ray_backend_matches_local(
    media_clips: dict[str, Path], local_output: Path, tmp_path: Path, watch: ListenWatch, capsys
) -> None:
    """No address: the executor starts a local Ray, runs the chunks and shuts it down."""
    import json

    out = tmp_path / "ray.mkv"
    code = cli("upscale", media_clips["cfr"], "-o", out, *CLI_ARGS, "--backend", "ray", "--json")
    stdout, err = capsys.readouterr()
    assert code == 0, err
    events = [json.loads(line) for line in stdout.splitlines()]  # stdout: JSON lines only
    assert sum(e["event"] == "chunk_done" for e in events) == 5
    progress = [e["frames"] for e in events if e["event"] == "progress"]
    assert progress[-1] == 48
    assert events[-1]["event"] == "done" and "@127.0.0.1/" in events[-1]["device"]
    assert_same_frames(out, local_output)
    assert not ray.is_initialized()
    assert not wait_no_ray_children(), "the executor's Ray is still running"
    assert not out.with_name(out.name + ".vidsr-work").exists()


@pytest.mark.slow
def test_gpu_tasks_get_their_own_gpu_as_cuda0(
    media_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU-only machine Ray can still hand out 2 (fake) GPUs. GPU tasks, built by
    ``remote_task`` as RayExecutor builds the chunk task, each run in a fresh worker process
    (CUDA reads ``CUDA_VISIBLE_DEVICES`` once per process: a reused worker would stay on its
    first GPU while Ray books the task on another) and see only their own GPU, as cuda:0.
    CPU tasks take the same path with no GPU."""
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    res = plan_resources("auto", 1, nodes)
    assert res.gpu and res.num_gpus == 1

    def probe() -> tuple[int, list[Any], str | None, str]:
        time.sleep(0.2)  # both GPUs busy at once
        ids = ray.get_gpu_ids()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # as Ray set it
        return os.getpid(), ids, visible, assigned_device(ids)

    gpu = remote_task(ray, probe, res, max_retries=0)
    got = ray.get([gpu.options(name=f"probe-{i}").remote() for i in range(4)])
    pids = [pid for pid, *_ in got]
    assert len(set(pids)) == len(pids), f"a GPU task reused a worker process: {got}"
    for _, ids, visible, device in got:
        assert len(ids) == 1 and visible == str(ids[0]) and device == "cuda:0", got
    assert {visible for _, _, visible, _ in got} == {"0", "1"}

    cpu = remote_task(ray, probe, plan_resources("cpu", 2, nodes))  # may reuse workers
    for _, ids, _, device in ray.get([cpu.remote() for _ in range(3)]):
        assert ids == [] and device == "cpu"

    # The real chunk task takes the same path: it asks for cuda:0, which CPU torch lacks.
    built: list[tuple[Any, Any]] = []
    real_remote_task = ray_executor.remote_task

    def spy(ray_: Any, fn: Any, resources: Any, **options: Any) -> Any:
        built.append((fn, resources))
        return real_remote_task(ray_, fn, resources, **options)

    monkeypatch.setattr(ray_executor, "remote_task", spy)
    with pytest.raises(DeviceError, match=r"cuda:0 requested but CUDA is not available"):
        job(media_clips["cfr"], tmp_path / "gpu.mkv", device="cuda")
    assert [(fn, r.gpu) for fn, r in built] == [(ray_executor._chunk_task, True)]
    assert ray.is_initialized()  # the caller's Ray is left alone


@pytest.mark.slow
def test_node_lost_mid_job(
    media_clips: dict[str, Path], local_output: Path, tmp_path: Path, watch: ListenWatch
) -> None:
    """Head (no CPUs: runs no chunk) + node A. At the first progress, A is removed and node B
    joins: A's chunk runs again on B, its frames are taken back from the progress first, and
    the output is identical."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        node_a = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        events: list[dict[str, Any]] = []
        moved: list[str] = []

        def on_event(e: dict[str, Any]) -> None:
            events.append(e)
            if e["event"] == "progress" and e["frames"] > 0 and not moved:
                cluster.remove_node(node_a)  # while its chunk runs: it reported frames
                moved.append(cluster.add_node(num_cpus=1).node_id)

        out = tmp_path / "moved.mkv"
        result = job(media_clips["cfr"], out, on_event)
        assert moved and result.frames == 48
        assert_same_frames(out, local_output)
        frames = [e["frames"] for e in events if e["event"] == "progress"]
        assert any(b < a for a, b in itertools.pairwise(frames)), (
            "the lost chunk's frames were never taken back"
        )
        assert frames[-1] == 48
        workers = {e["worker"] for e in events if e["event"] == "chunk_done"}
        assert any(moved[0][:8] in w for w in workers)
    finally:
        ray.shutdown()
        cluster.shutdown()


_HIDDEN_NODE = textwrap.dedent(
    """
    import signal, sys
    import ray._private.node, ray._private.parameter
    params = ray._private.parameter.RayParams(
        gcs_address=sys.argv[1], num_cpus=1, num_gpus=0,
        object_store_memory=150 * 1024 * 1024, min_worker_port=0, max_worker_port=0,
        include_log_monitor=False, node_manager_port=0,
    )
    params.dashboard_agent_listen_port = None
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("up", flush=True)
    sys.stdin.read()
    """
)


def _unshare_prefix() -> list[str] | None:
    """A command prefix running its command in a private mount namespace (root, or a user
    namespace), or None where neither is allowed."""
    exe = shutil.which("unshare")
    if not exe or not sys.platform.startswith("linux"):
        return None
    for extra in ([], ["--map-root-user"]):
        cmd = [exe, "--mount", "--propagation", "private", *extra]
        probe = subprocess.run([*cmd, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return cmd
    return None


def _read_line(proc: subprocess.Popen, timeout: float) -> bytes:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else b""


@pytest.mark.slow
def test_storage_check_fails_when_a_node_cannot_see_the_work_dir(
    media_clips: dict[str, Path], tmp_path: Path, watch: ListenWatch
) -> None:
    """A real node that does not see the work folder: its processes run in their own mount
    namespace where the output's folder is an empty tmpfs (as a node without the shared
    mount would have it)."""
    from ray.cluster_utils import Cluster

    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("needs `unshare --mount` (root or user namespaces)")
    hidden = tmp_path / "shared"
    hidden.mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    script = tmp_path / "node.py"
    script.write_text(_HIDDEN_NODE)
    shell = 'mount -t tmpfs none "$1" && exec "$2" "$3" "$4"'
    proc = subprocess.Popen(
        [*prefix, "sh", "-c", shell, "sh", hidden, sys.executable, script, cluster.address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert _read_line(proc, 60) == b"up", "the hidden node did not start"
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.monotonic() + 30
        while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        out = hidden / "out.mkv"
        with pytest.raises(PipelineError) as info:
            job(media_clips["cfr"], out)
        msg = str(info.value)
        assert len(msg.splitlines()) == 1
        assert "storage every Ray node sees" in msg and "127.0.0.1" in msg
        assert "cannot read" in msg and str(hidden) in msg and "work_dir=" in msg  # Python spelling
        segments = out.with_name(out.name + ".vidsr-work") / "segments"
        assert not segments.exists() or not any(segments.iterdir())  # nothing ran
    finally:
        ray.shutdown()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        cluster.shutdown()


@pytest.mark.slow
def test_ctrl_c_cancels_and_shuts_down_its_ray(
    media_clips: dict[str, Path], tmp_path: Path, watch: ListenWatch
) -> None:
    """Ctrl-C in the driver (here: in a progress callback) cancels the tasks and shuts down
    the Ray the executor started: no Ray process is left."""
    out = tmp_path / "stopped.mkv"

    def on_event(e: dict[str, Any]) -> None:
        if e["event"] == "progress" and e["frames"] > 0:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="resume"):
        job(media_clips["cfr"], out, on_event)
    assert not ray.is_initialized()
    assert not wait_no_ray_children(), "Ray processes left after Ctrl-C"
    assert not out.exists()
