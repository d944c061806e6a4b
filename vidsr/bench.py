"""``vidsr bench``: how fast each stage runs on this machine, and the whole pipeline against a
serial baseline built the way Real-ESRGAN's ``inference_realesrgan_video.py`` works.

Everything runs on a clip generated here (ffmpeg ``testsrc2``, libx264) in a temporary folder:

- ``decode``: vidsr's frame-exact decoder, colour conversion to RGB included;
- ``model``: the ``Upscaler`` call the pipeline makes, in a bare loop on a pre-made batch already
  on the device (same batch size and precision; warm-up calls excluded; CUDA synchronised);
- ``model_lanes``: the same call in a bare loop run over the pipeline's CPU lanes (the run's
  ``lanes``, several batches at once, :mod:`vidsr.pipeline.lanes`); equal to ``model`` with one
  lane (on CUDA);
- ``model_nchw``: the same network, batch and precision with plain NCHW tensors and weights
  (no channels_last): what the memory format is worth;
- ``decode_planes``: the same decoder yielding the YUV planes unconverted (what the decode
  thread does when the conversion runs on the device, ``--device-colour``);
- ``encode``: ``VideoEncoder`` (RGB -> YUV included) on pre-made upscaled frames, in-process;
- ``encode_planes``: ``VideoEncoder.write_planes`` on the same frames already converted to the
  encoder's YUV planes (what the encoder process does with ``--device-colour``);
- ``segment``: ``upscale_segment`` (decode thread -> model -> encoder process);
- ``pipeline``: ``run_job``, i.e. what ``vidsr upscale`` does (plan, chunk, segment, join,
  remux), the model already loaded;
- ``serial``: one frame at a time in one thread, as Real-ESRGAN's video script: an ffmpeg
  process decodes to rgb24 on a pipe -> float32 numpy -> NCHW tensor (fp32 on the CPU,
  ``.half()`` on CUDA, no channels_last) -> model -> ``.cpu()`` per frame -> uint8 numpy -> raw
  pipe into an ffmpeg process encoding with vidsr's codec settings.

Peak memory: resident set of the whole process tree (the encoder process and ffmpeg children
included), sampled every 25 ms straight from /proc (psutil's tree walk costs ~1 ms a sample and
measurably slowed the stages; psutil is the fallback elsewhere, then ``getrusage`` maxima), and
``torch.cuda.max_memory_allocated`` on CUDA (None on the CPU). ``other_cpu_seconds`` says how
much CPU other processes took meanwhile: figures from a busy machine are not worth keeping.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vidsr.errors import PipelineError, UsageError, opt
from vidsr.run.resolve import resolve_switch
from vidsr.settings import Settings, make_settings

OnStage = Callable[[str], None]

#: Stages in the order they run, with the label the table and the chart use.
STAGES = {
    "decode": "decode (vidsr decoder + RGB)",
    "decode_planes": "decode, YUV planes only",
    "model": "model only (Upscaler call)",
    "model_lanes": "model only, over the lanes",
    "model_nchw": "model only, NCHW",
    "model_openvino": "model only, OpenVINO runtime",
    "encode": "encode (VideoEncoder)",
    "encode_planes": "encode from YUV planes",
    "segment": "upscale_segment",
    "pipeline": "pipeline (run_job)",
    "serial": "serial (Real-ESRGAN style)",
}
_RATE = 24
_SAMPLE_SECONDS = 0.025
_WARMUP_CALLS = 2
_QUIET = ("-hide_banner", "-loglevel", "error")


def make_clip(path: Path, width: int, height: int, frames: int, rate: int = _RATE) -> Path:
    """A ``frames``-frame ``testsrc2`` clip (libx264, yuv420p) at ``path``."""
    from vidsr.media.ffmpeg import run_ffmpeg

    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={width}x{height}:rate={rate}",
            "-frames:v",
            str(frames),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ]
    )
    return path


# --- memory -----------------------------------------------------------------------------------


def _procfs_tree_rss(pid: int) -> int | None:
    """RSS of ``pid`` and all its descendants from /proc (``task/*/children`` and ``statm``):
    about 40 us, against about 1 ms for psutil's ``children(recursive=True)``, which scans
    every process on the machine - a cost that would slow the stages being measured. None
    where the kernel does not offer ``children``."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo, seen = 0, [(pid, None)], set()
    while todo:
        p, parent_cmd = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            if cmd == parent_cmd:
                # Forked and not yet exec'd (subprocess, the resource tracker): its pages
                # are the parent's, shared copy-on-write. Counting them measured a
                # transient +255 MB that no process really used.
                continue
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend((int(c), cmd) for c in f.read().split())
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except FileNotFoundError:
            if p == pid:
                return None  # no /proc/PID/task/TID/children here
        except (OSError, ValueError, IndexError):
            continue  # a child that ended meanwhile
    return total


class MemorySampler:
    """Samples the resident set of this process and all its descendants in a thread; keeps
    the peak overall and per stage (``stage(name)``). Reads /proc directly where it can
    (``method`` "procfs"), else uses psutil ("psutil"), else ``getrusage`` maxima of this
    process plus its largest ended child ("getrusage")."""

    def __init__(self, interval: float = _SAMPLE_SECONDS) -> None:
        self.interval = interval
        self.peak = 0
        self.peaks: dict[str, int] = {}
        self.current: str | None = None
        self._proc: Any = None
        if _procfs_tree_rss(os.getpid()) is not None:
            self.method = "procfs"
        else:
            try:
                import psutil

                self._proc = psutil.Process()
                self.method = "psutil"
            except ImportError:
                self.method = "getrusage"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vidsr-bench-rss", daemon=True)

    def tree_rss(self) -> int:
        if self.method == "procfs":
            return _procfs_tree_rss(os.getpid()) or 0
        if self._proc is None:
            import resource

            # ru_maxrss is in KiB on Linux; children: the largest one that has ended.
            own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            return int(own + kids) * 1024
        total = 0
        procs = [self._proc]
        with contextlib.suppress(Exception):
            procs += self._proc.children(recursive=True)
        for p in procs:
            with contextlib.suppress(Exception):  # a child may end between the two calls
                total += p.memory_info().rss
        return total

    def sample(self) -> None:
        rss = self.tree_rss()
        self.peak = max(self.peak, rss)
        if self.current is not None:
            self.peaks[self.current] = max(self.peaks.get(self.current, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sample()
        self.current = name
        try:
            yield
        finally:
            self.sample()
            self.current = None

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sample()


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has spent working since boot (Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuAccount:
    """How much CPU other processes used while the benchmark ran: a busy machine makes the
    figures meaningless, and this says so (``other_cpu_seconds`` against ``wall_seconds``)."""

    def __enter__(self) -> CpuAccount:
        self.t0, self.busy0, self.own0 = (
            time.perf_counter(),
            _busy_cpu_seconds(),
            _own_cpu_seconds(),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        busy1, own1 = _busy_cpu_seconds(), _own_cpu_seconds()
        self.own = own1 - self.own0
        self.other = (
            None
            if busy1 is None or self.busy0 is None
            else max(0.0, (busy1 - self.busy0) - self.own)
        )


def _mb(n: float | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# --- machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), or ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: Any) -> dict[str, Any]:
    import av
    import numpy as np
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": cpu_model(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda,
        "pyav_version": av.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["gpu_memory_mb"] = _mb(torch.cuda.get_device_properties(device).total_memory)
    else:
        info["device_name"] = f"cpu: {info['cpu_model']}"
    return info


# --- stages -----------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bench_decode(
    clip: Path, info: Any, keep: int, planes: bool = False
) -> tuple[float, int, list[Any]]:
    """(seconds, frames, the first ``keep`` decoded frames)."""
    from vidsr.media.decode import decode_frames

    kept: list[Any] = []
    n = 0
    t0 = time.perf_counter()
    with decode_frames(clip, info=info, planes=planes) as frames:
        for f in frames:
            n += 1
            if len(kept) < keep:
                kept.append(f)
    return time.perf_counter() - t0, n, kept


def _batch_tensor(rgbs: list[Any], batch: int, device: Any) -> Any:
    from vidsr.media.colour import rgb_to_tensor

    chosen = [rgbs[i % len(rgbs)] for i in range(batch)]
    return rgb_to_tensor(chosen, device=device)


def _bench_forward(call: Callable[[Any], Any], x: Any, frames: int, device: Any) -> float:
    """Seconds for ceil(frames / batch) calls of ``call(x)`` after warm-up calls."""
    import torch

    calls = max(1, math.ceil(frames / x.shape[0]))
    with torch.inference_mode():
        for _ in range(_WARMUP_CALLS):
            call(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            call(x)
        _sync(device)
        return time.perf_counter() - t0


def _bench_forward_lanes(call: Callable[[Any], Any], x: Any, frames: int, lanes: int) -> float:
    """Seconds for ceil(frames / batch) calls of ``call(x)`` spread over ``lanes`` lanes (as
    the pipeline runs them on the CPU), after a warm-up call in every lane."""
    from vidsr.pipeline.lanes import Lanes, threads_per_lane

    calls = max(1, math.ceil(frames / x.shape[0]))
    with Lanes(lambda _i: call(x), lanes, threads_per_lane(lanes)) as pool:
        for _ in pool.map(range(lanes * _WARMUP_CALLS)):
            pass
        t0 = time.perf_counter()
        for _ in pool.map(range(calls)):
            pass
        return time.perf_counter() - t0


def _nchw_call(module: Any, dtype: Any, device: Any) -> Callable[[Any], Any]:
    """The network on plain NCHW tensors at the Upscaler's precision (bf16 on the CPU runs
    under autocast, as the Upscaler does)."""
    import torch

    autocast = device.type == "cpu" and dtype == torch.bfloat16

    def call(x: Any) -> Any:
        x = x.to(dtype=torch.float32 if autocast else dtype).contiguous()
        if autocast:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(x)
        return module(x)

    return call


def _contiguous_copy(module: Any, device: Any, dtype: Any) -> Any:
    """A copy of ``module`` on ``device`` at ``dtype`` with plain (NCHW) weights."""
    import torch

    m = copy.deepcopy(module).to(device=device, dtype=dtype)
    for p in m.parameters():
        p.data = p.data.contiguous(memory_format=torch.contiguous_format)
    return m.eval()


def _bench_encode(
    path: Path,
    info: Any,
    frames_up: list[Any],
    count: int,
    width: int,
    height: int,
    codec: str,
    planes: bool = False,
) -> float:
    from vidsr.media.encode import VideoEncoder

    pts = info.video.frame_pts
    t0 = time.perf_counter()
    enc = VideoEncoder.from_source(path, info, width=width, height=height, codec=codec)
    write = enc.write_planes if planes else enc.write
    try:
        for i in range(count):
            write(frames_up[i % len(frames_up)], pts[i])
    except BaseException:
        enc.abort()
        raise
    enc.close()
    return time.perf_counter() - t0


def _codec_args(codec: str) -> list[str]:
    from vidsr.media.encode import CODEC_DEFAULTS

    args = ["-c:v", codec]
    for key, value in CODEC_DEFAULTS.get(codec, {}).items():
        args += [f"-{key}", value]
    return args


def _serial_loop(
    src: Any, dst: Any, module: Any, device: Any, half: bool, width: int, height: int
) -> int:
    """Frames from ``src`` through ``module`` to ``dst``, one at a time, as Real-ESRGAN's
    script does it. Returns the frame count."""
    import numpy as np
    import torch

    frame_bytes = width * height * 3
    n = 0
    while True:
        buf = src.read(frame_bytes)
        if len(buf) < frame_bytes:
            return n
        img = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        img = img.astype(np.float32) / 255.0
        t = torch.from_numpy(np.transpose(img, (2, 0, 1))).float()
        t = t.unsqueeze(0).to(device)
        if half:
            t = t.half()
        with torch.no_grad():
            y = module(t)
        y = y.data.squeeze().float().cpu().clamp_(0, 1).numpy()
        y = np.transpose(y, (1, 2, 0))
        dst.write((y * 255.0).round().astype(np.uint8).tobytes())
        n += 1


def _bench_serial(
    clip: Path,
    out: Path,
    module: Any,
    *,
    device: Any,
    half: bool,
    width: int,
    height: int,
    scale: int,
    codec: str,
) -> tuple[float, int]:
    """Real-ESRGAN's ``inference_realesrgan_video.py`` loop (one process per GPU, its default):
    ffmpeg reader pipe -> per frame: numpy float32 -> tensor -> model -> cpu -> uint8 ->
    ffmpeg writer pipe. Returns (seconds, frames)."""
    from vidsr.media.ffmpeg import ffmpeg_exe

    exe = ffmpeg_exe()
    ow, oh = width * scale, height * scale
    raw_in = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{ow}x{oh}", "-framerate", str(_RATE)]
    raw_in += ["-i", "pipe:"]
    with tempfile.TemporaryFile() as r_err, tempfile.TemporaryFile() as w_err:
        t0 = time.perf_counter()
        reader = subprocess.Popen(
            [
                exe,
                *_QUIET,
                "-nostdin",
                "-i",
                str(clip),
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "pipe:",
            ],
            stdout=subprocess.PIPE,
            stderr=r_err,
        )
        writer = subprocess.Popen(
            [exe, *_QUIET, "-y", *raw_in, *_codec_args(codec), "-pix_fmt", "yuv420p", str(out)],
            stdin=subprocess.PIPE,
            stderr=w_err,
        )
        assert reader.stdout is not None and writer.stdin is not None
        try:
            n = _serial_loop(reader.stdout, writer.stdin, module, device, half, width, height)
            writer.stdin.close()
            w_code, r_code = writer.wait(), reader.wait()
        finally:
            for p in (reader, writer):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        seconds = time.perf_counter() - t0
        for code, err, what in ((r_code, r_err, "reader"), (w_code, w_err, "writer")):
            if code != 0:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines()
                raise PipelineError(
                    f"serial baseline: ffmpeg {what} failed: {lines[-1] if lines else code}"
                )
    return seconds, n


# --- the benchmark ----------------------------------------------------------------------------


def run_bench(
    settings: Settings,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    on_stage: OnStage | None = None,
) -> dict[str, Any]:
    """Measure every stage (see the module docstring) for the bench's ``settings`` and return
    one flat dict: ``*_fps`` per stage, ``pipeline_frames``, ``peak_rss_mb``, ``peak_gpu_mb``,
    ``stage_peak_rss_mb``, ``pipeline_stages`` (the run's own per-stage busy figures),
    ``settings`` and ``machine``. ``work_dir``: where the clip and outputs go (default: a
    temporary folder, removed)."""
    bench = _Bench(settings, on_stage or (lambda name: None))
    tmp_ctx: Any = (
        tempfile.TemporaryDirectory(prefix="vidsr-bench-")
        if work_dir is None
        else contextlib.nullcontext(str(work_dir))
    )
    with tmp_ctx as tmp_name, MemorySampler() as sampler, CpuAccount() as cpu:
        bench.sampler = sampler
        tmp = Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        bench.make_clip(tmp)
        bench.decode_stages()
        bench.model_stages()
        bench.encode_stages(tmp)
        bench.serial_stage(tmp)
        bench.segment_stage(tmp)
        bench.pipeline_stage(tmp)
    return bench.summary(cpu)


class _Bench:
    """The state of one ``run_bench``: the model in its forms, the clip, and the figures."""

    def __init__(self, settings: Settings, say: OnStage) -> None:
        import torch

        from vidsr.models.loader import load_network
        from vidsr.pipeline import openvino
        from vidsr.pipeline.infer import Upscaler, compiled, resolve_device, resolve_precision
        from vidsr.run.resolve import resolve_runtime

        self.settings = settings
        self.say = say
        self.width, self.height = settings.size
        self.dev = dev = resolve_device(settings.device)
        net = load_network(settings.model)
        if self.height % net.size_multiple or self.width % net.size_multiple:
            raise UsageError(
                f"{opt('size')} must be a multiple of {net.size_multiple} for {settings.model}"
            )
        if net.onnx is not None:  # an ONNX graph: its runtime's stages only
            self._onnx_init(settings)
            return
        dtype = resolve_precision(settings.precision, dev, net.precisions, net.name)
        # Copies with plain NCHW weights, made before the Upscaler turns the weights channels_last.
        weight_dtype = torch.float32 if (dev.type == "cpu" and dtype == torch.bfloat16) else dtype
        self.nchw_module: Any = _contiguous_copy(net.module, dev, weight_dtype)
        self.serial_half = (
            dev.type == "cuda" and "fp16" in net.precisions
        )  # Real-ESRGAN: fp16 on a GPU unless --fp32
        self.serial_module: Any = _contiguous_copy(
            net.module, dev, torch.float16 if self.serial_half else torch.float32
        )
        self.upscaler = Upscaler(net, device=dev, dtype=dtype)
        if settings.compile:
            self.upscaler.module = compiled(self.upscaler.module)
        # OpenVINO beside torch on the CPU where it is installed (the "model_openvino" stage);
        # --runtime decides which one the segment and pipeline stages run.
        self.ov_upscaler: Any = None
        target = openvino.target(settings.device)  # an Intel GPU (--device intel:gpu), or CPU
        if target != "CPU":
            openvino.check_device(settings.device)  # refused in one line where absent
        if dev.type == "cpu" and openvino.available() and not settings.compile:
            name = "bf16" if dtype == torch.bfloat16 else "fp32"
            if (
                target != "CPU"
                and settings.precision in ("auto", "fp16")
                and "fp16" in net.precisions
            ):
                name = "fp16"  # an Intel GPU's own precision
            self.ov_upscaler = Upscaler(net, device=dev, dtype=torch.float32)
            self.ov_upscaler.module = openvino.OpenVINOModule(
                net.module, device=target, precision=name, static=net.loader != "vidsr"
            )
            self.ov_upscaler.runtime = "openvino"
            self.ov_upscaler.runtime_precision = name
        self.runtime = resolve_runtime(settings, settings.size, dev.type)
        self.run_upscaler = self.ov_upscaler if self.runtime == "openvino" else self.upscaler
        self._common_init(net.scale)

    def _onnx_init(self, settings: Settings) -> None:
        """An ONNX model: the upscaler its runtime makes, and no torch module to time beside
        it (the nchw, openvino-beside and serial stages are left out)."""
        from vidsr.pipeline.infer import build_upscaler

        self.upscaler = build_upscaler(
            settings.model, device=settings.device, precision=settings.precision,
            runtime=settings.runtime,
        )  # fmt: skip
        self.nchw_module = self.serial_module = self.ov_upscaler = None
        self.serial_half = False
        self.runtime = self.upscaler.runtime
        self.run_upscaler = self.upscaler
        self._common_init(self.upscaler.net_scale)

    def _common_init(self, scale: int) -> None:
        import torch

        from vidsr.media.encode import resolve_codec
        from vidsr.pipeline.lanes import auto_lanes
        from vidsr.pipeline.memory import batch_size

        settings, dev = self.settings, self.dev
        self.scale = scale
        self.ow, self.oh = self.width * self.scale, self.height * self.scale
        self.codec = resolve_codec(settings.codec, dev.type, width=self.ow, height=self.oh)
        self.bs = settings.batch_size or batch_size(self.upscaler, self.height, self.width)
        self.lanes = (
            (settings.lanes or auto_lanes(dev, self.height, self.width, scale=self.scale))
            if dev.type == "cpu"
            else 1
        )
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        self.gpu_peaks: dict[str, float | None] = {}
        self.other_cpu: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.machine = machine_info(dev)
        self.sampler: Any = None
        self.clip: Path | None = None
        self.info: Any = None
        self.rgbs: list[Any] = []
        self.frames_up: list[Any] = []
        self.seg: Any = None
        self.result: Any = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        import torch

        dev = self.dev
        self.say(name)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        with self.sampler.stage(name), CpuAccount() as acct:
            yield
        if acct.other is not None:
            self.other_cpu[name] = round(acct.other, 2)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            self.gpu_peaks[name] = _mb(torch.cuda.max_memory_allocated(dev))

    def make_clip(self, tmp: Path) -> None:
        from vidsr.media.probe import probe

        frames = self.settings.frames
        self.say("clip")
        self.clip = make_clip(tmp / "clip.mkv", self.width, self.height, frames)
        self.info = probe(self.clip)
        if self.info.video.frame_count != frames:
            raise PipelineError(f"the generated clip has {self.info.video.frame_count} frames")

    def decode_stages(self) -> None:
        from vidsr.media.colour import planar_layout

        # Distinct frames for the model batch and the encoder (a repeated frame would make
        # x264's work trivial): up to 16, at most ~256 MB of upscaled pixels.
        frames = self.settings.frames
        keep = max(1, min(frames, 16, (256 << 20) // (self.oh * self.ow * 3)))
        with self.stage("decode"):
            self.seconds["decode"], self.counts["decode"], kept = _bench_decode(
                self.clip, self.info, keep
            )
        self.rgbs = [f.rgb for f in kept]
        if planar_layout(self.info.video.pix_fmt) is not None:
            with self.stage("decode_planes"):
                self.seconds["decode_planes"], self.counts["decode_planes"], _ = _bench_decode(
                    self.clip, self.info, 0, planes=True
                )

    def model_stages(self) -> None:
        import numpy as np

        from vidsr.media.colour import tensor_to_rgb

        frames, dev, up = self.settings.frames, self.dev, self.upscaler
        x = _batch_tensor(self.rgbs, self.bs, dev)
        self.counts["model"] = self.counts["model_nchw"] = math.ceil(frames / self.bs) * self.bs
        with self.stage("model"):
            self.seconds["model"] = _bench_forward(up, x, frames, dev)
        self.counts["model_lanes"] = self.counts["model"]
        with self.stage("model_lanes"):
            self.seconds["model_lanes"] = (
                _bench_forward_lanes(up, x, frames, self.lanes)
                if self.lanes > 1
                else _bench_forward(up, x, frames, dev)
            )
        if self.nchw_module is not None:
            with self.stage("model_nchw"):
                call = _nchw_call(self.nchw_module, up.dtype, dev)
                self.seconds["model_nchw"] = _bench_forward(call, x, frames, dev)
        self.nchw_module = None
        if self.ov_upscaler is not None:
            self.counts["model_openvino"] = self.counts["model"]
            with self.stage("model_openvino"):
                self.seconds["model_openvino"] = _bench_forward(self.ov_upscaler, x, frames, dev)
        # Upscaled frames for the encoder: the model's own output for the kept frames.
        self.frames_up = [
            tensor_to_rgb(up(_batch_tensor([rgb], 1, dev)), np.uint8)[0] for rgb in self.rgbs
        ]

    def encode_stages(self, tmp: Path) -> None:
        import numpy as np

        from vidsr.media.colour import planar_layout, rgb_to_planes, rgb_to_tensor
        from vidsr.media.encode import source_encoder_colour

        frames, codec, ow, oh = self.settings.frames, self.codec, self.ow, self.oh
        with self.stage("encode"):
            self.seconds["encode"] = _bench_encode(
                tmp / "encode.mkv", self.info, self.frames_up, frames, ow, oh, codec
            )
        self.counts["encode"] = frames
        out_fmt, out_colour = source_encoder_colour(self.info, width=ow, height=oh, codec=codec)
        out_layout = planar_layout(out_fmt)
        if out_layout is not None:  # the same frames as the encoder's planes, made on the device
            planes_up = []
            for rgb in self.frames_up:
                t = rgb_to_tensor(rgb, device=self.dev)
                p = rgb_to_planes(
                    t, out_layout, matrix=out_colour.matrix, colour_range=out_colour.range
                )[0]
                p = p.cpu().numpy()
                planes_up.append(p if p.dtype == np.uint8 else p.view(np.uint16))
            with self.stage("encode_planes"):
                self.seconds["encode_planes"] = _bench_encode(
                    tmp / "encode_planes.mkv", self.info, planes_up, frames, ow, oh, codec, True
                )
            self.counts["encode_planes"] = frames
        self.frames_up = []

    def serial_stage(self, tmp: Path) -> None:
        import torch

        module = self.serial_module
        if module is None:  # an ONNX model: no torch module for the serial loop
            return
        with torch.no_grad():  # warm the serial model up too: steady state on both sides
            dtype = next(module.parameters()).dtype
            module(torch.zeros((1, 3, self.height, self.width), device=self.dev, dtype=dtype))
        with self.stage("serial"):
            self.seconds["serial"], self.counts["serial"] = _bench_serial(
                self.clip,
                tmp / "serial.mkv",
                module,
                device=self.dev,
                half=self.serial_half,
                width=self.width,
                height=self.height,
                scale=self.scale,
                codec=self.codec,
            )
        self.serial_module = None

    def segment_stage(self, tmp: Path) -> None:
        import numpy as np

        from vidsr.jobs.chunk import encoder_kwargs
        from vidsr.media.decode import decode_frames
        from vidsr.pipeline.video import plan_device_colour, upscale_segment

        with self.stage("segment"):
            t0 = time.perf_counter()
            seg_kwargs = {
                "path": tmp / "segment.mkv",
                "info": self.info,
                "width": self.ow,
                "height": self.oh,
                **encoder_kwargs(self._run_settings(tmp)),
            }
            colour = plan_device_colour(
                self.info, seg_kwargs, self.dev, self.settings.device_colour
            )
            self.seg = upscale_segment(
                decode_frames(self.clip, info=self.info, planes=bool(colour and colour.source)),
                upscaler=self.run_upscaler,
                settings=self._run_settings(tmp),
                encoder_kwargs=seg_kwargs,
                out_shape=(self.oh, self.ow, 3),
                out_dtype=np.dtype(np.uint8),
                device_colour=colour,
            )
            self.seconds["segment"] = time.perf_counter() - t0
        self.counts["segment"] = self.seg.frames

    def _used(self) -> dict[str, Any]:
        """What every stage runs with (``auto`` resolved): the run's settings in the report."""
        s = self.settings
        return {
            "model": s.model,
            "device": str(self.dev),
            "precision": self.upscaler.precision_name,
            "runtime": self.runtime,
            "batch_size": self.bs,
            "lanes": 1 if self.runtime == "openvino" else self.lanes,
            "device_colour": resolve_switch(s.device_colour, self.dev.type),
            "codec": self.codec,
            "compile": s.compile,
        }

    def _run_settings(self, tmp: Path) -> Settings:
        """The settings of the ``vidsr upscale`` run the pipeline stage makes."""
        paths = {"output": tmp / "pipeline.mkv", "work_dir": tmp / "pipeline-work"}
        return make_settings("upscale", {**self._used(), **paths, "overwrite": True})

    def pipeline_stage(self, tmp: Path) -> None:
        from vidsr.jobs.local import InProcessExecutor
        from vidsr.pipeline.encoder_process import encoder_pool
        from vidsr.run.job import prepare, run_job

        # As `vidsr upscale` does, the encoder process is started before torch and the model
        # load (the load is not timed here): ready before the timer starts.
        executor = InProcessExecutor(str(self.dev), self.run_upscaler)
        with encoder_pool(prestart=True, wait=True), self.stage("pipeline"):
            t0 = time.perf_counter()
            plan = prepare(self._run_settings(tmp), self.clip, executor)
            self.result = run_job(plan, executor)
            self.seconds["pipeline"] = time.perf_counter() - t0
        self.counts["pipeline"] = self.result.frames

    def summary(self, cpu: CpuAccount) -> dict[str, Any]:
        counts, seconds, s = self.counts, self.seconds, self.settings
        out: dict[str, Any] = {}
        for name in STAGES:  # a stage that does not apply (RGB formats for *_planes) is None
            fps = counts[name] / seconds[name] if seconds.get(name) else None
            out[f"{name}_fps"] = None if fps is None else round(fps, 3)

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a and b else None

        pipeline_fps = out["pipeline_fps"]
        sampler, gpu_peaks = self.sampler, self.gpu_peaks
        out.update(
            {
                "pipeline_frames": counts["pipeline"],
                "segment_frames": counts["segment"],
                "serial_frames": counts.get("serial"),
                "decode_frames": counts["decode"],
                "pipeline_vs_model": ratio(pipeline_fps, out["model_fps"]),
                "pipeline_vs_model_lanes": ratio(pipeline_fps, out["model_lanes_fps"]),
                "openvino_vs_torch": ratio(out["model_openvino_fps"], out["model_lanes_fps"]),
                "pipeline_vs_serial": ratio(pipeline_fps, out["serial_fps"]),
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
                "pipeline_stages": {k: v.as_dict() for k, v in self.result.stages.items()},
                "segment_stages": {k: v.as_dict() for k, v in self.seg.stages.items()},
                "pipeline_bound": self.result.bound,
                "wall_seconds": round(cpu.wall, 2),
                "own_cpu_seconds": round(cpu.own, 2),
                "other_cpu_seconds": None if cpu.other is None else round(cpu.other, 2),
                "stage_other_cpu_seconds": self.other_cpu or None,
                "peak_rss_mb": _mb(sampler.peak),
                "stage_peak_rss_mb": {k: _mb(v) for k, v in sampler.peaks.items()},
                "rss_method": sampler.method,
                "peak_gpu_mb": max((v for v in gpu_peaks.values() if v is not None), default=None),
                "stage_peak_gpu_mb": gpu_peaks or None,
                "settings": {
                    **self._used(),
                    "size": f"{self.width}x{self.height}",
                    "output_size": f"{self.ow}x{self.oh}",
                    "frames": s.frames,
                    "serial_precision": "fp16" if self.serial_half else "fp32",
                },
                "machine": self.machine,
                "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "argv": sys.argv[1:],
            }
        )
        return out


# --- output -----------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the figures."""
    s, m = result["settings"], result["machine"]
    lines = [
        f"vidsr bench: {s['model']} {s['size']} -> {s['output_size']}, {s['frames']} frames, "
        f"{s['device']} {s['precision']} ({s.get('runtime', 'torch')}), batch {s['batch_size']}, "
        f"lanes {s.get('lanes', 1)}, "
        f"{s['codec']}"
        + (", torch.compile" if s.get("compile") else "")
        + (
            f", device colour {s['device_colour']}"
            if s.get("device_colour", "auto") != "auto"
            else ""
        ),
        f"machine: {m['device_name']}; {m['cpu_usable']} CPUs; torch {m['torch_version']} "
        f"({m['torch_threads']} threads)",
        "",
        f"{'stage':<30} {'fps':>9}",
    ]
    for name, label in STAGES.items():
        fps = result.get(f"{name}_fps")
        lines.append(f"{label:<30} {('-' if fps is None else f'{fps:.2f}'):>9}")
    lines.append("")
    ratio = result.get("pipeline_vs_model")
    if ratio is not None:
        lines.append(f"pipeline / model only:  {ratio:.2f}")
    ratio = result.get("pipeline_vs_model_lanes")
    if ratio is not None and result["settings"].get("lanes", 1) > 1:
        lines.append(f"pipeline / model lanes: {ratio:.2f}")
    ratio = result.get("pipeline_vs_serial")
    if ratio is not None:
        lines.append(f"pipeline / serial:      {ratio:.2f}")
    ratio = result.get("openvino_vs_torch")
    if ratio is not None:
        lines.append(f"openvino / torch model: {ratio:.2f}")
    lines.append(f"pipeline bound by:      {result.get('pipeline_bound')}")
    lines.append(f"peak RSS (process tree): {result['peak_rss_mb']} MB")
    gpu = result.get("peak_gpu_mb")
    lines.append(f"peak GPU memory:        {'-' if gpu is None else f'{gpu} MB'}")
    other, wall = result.get("other_cpu_seconds"), result.get("wall_seconds")
    if other is not None and wall:
        note = "  (busy machine: figures unreliable)" if other > 0.1 * wall else ""
        lines.append(f"other processes' CPU:   {other:.1f} s over {wall:.1f} s{note}")
    return "\n".join(lines)


_COLOURS = {
    "decode": (86, 140, 200),
    "model": (230, 140, 50),
    "model_lanes": (235, 160, 80),
    "decode_planes": (120, 170, 230),
    "encode_planes": (130, 200, 130),
    "model_nchw": (240, 185, 120),
    "model_openvino": (200, 110, 40),
    "encode": (110, 170, 100),
    "segment": (150, 120, 190),
    "pipeline": (200, 60, 60),
    "serial": (120, 120, 120),
}


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def write_plot(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """A horizontal bar chart (log scale, fps) of every stage as a PNG at ``path``."""
    from PIL import Image, ImageDraw

    path = Path(path)
    rows = [(n, lbl, result.get(f"{n}_fps")) for n, lbl in STAGES.items()]
    rows = [(n, lbl, v) for n, lbl, v in rows if v]
    if not rows:
        raise PipelineError("nothing to plot: no stage has a figure")
    lo = 10 ** math.floor(math.log10(min(v for _, _, v in rows)))
    hi = 10 ** math.ceil(math.log10(max(v for _, _, v in rows) * 1.0001))
    if hi <= lo:
        hi = lo * 10
    left, right, top, bar_h, gap = 250, 110, 70, 30, 14
    width = 1000
    height = top + len(rows) * (bar_h + gap) + 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    title, small = _font(16), _font(13)
    s, m = result["settings"], result["machine"]
    draw.text(
        (10, 10),
        f"vidsr bench: {s['model']} {s['size']} x{s['frames']} frames, {s['device']} "
        f"{s['precision']}, batch {s['batch_size']}",
        fill="black",
        font=title,
    )
    draw.text(
        (10, 34), f"{m['device_name']} - frames per second (log scale)", fill="black", font=small
    )
    span = width - left - right

    def xpos(v: float) -> float:
        return left + span * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    bottom = top + len(rows) * (bar_h + gap)
    decade = lo
    while decade <= hi * 1.0001:
        x = xpos(decade)
        draw.line([(x, top - 6), (x, bottom)], fill=(210, 210, 210))
        draw.text((x - 10, bottom + 6), f"{decade:g}", fill="black", font=small)
        decade *= 10
    for i, (name, label, value) in enumerate(rows):
        y = top + i * (bar_h + gap)
        draw.text((10, y + 7), label, fill="black", font=small)
        draw.rectangle([left, y, max(left + 1, xpos(value)), y + bar_h], fill=_COLOURS[name])
        draw.text((xpos(value) + 6, y + 7), f"{value:.1f}", fill="black", font=small)
    img.save(path, format="PNG")
    return path
