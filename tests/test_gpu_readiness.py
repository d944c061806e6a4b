"""The CUDA path, tested on the CPU as far as it goes (issue 12): what a first real GPU run
would hit. Only what cannot exist here is faked - a GPU's NVENC capabilities (a table standing
in for opening the encoder), CUDA out-of-memory errors, a /dev/shm size - everything else is
the real code path: the plan, the encoder process, the colour packing, the model."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import run_cli, run_video, upscale_settings

from vidsr.errors import UsageError
from vidsr.media import colour as C
from vidsr.media import encode

MODEL = "realesr-animevideov3"


# --- --codec auto: by output size and bit depth, probed at the real size and format ----------


def fake_gpu(h264_side: int, h264_10bit: bool, hevc: bool = True):
    """An encoder probe for a GPU whose H.264 NVENC takes ``h264_side`` pixels a side (0: no
    NVENC at all, as on an H100) and 10-bit input or not, and whose HEVC NVENC takes 8192."""
    tried: list[tuple[str, int, int, str]] = []

    def problem(codec: str, w: int, h: int, fmt: str, gpu: int | None = None) -> str | None:
        tried.append((codec, w, h, fmt))
        if not h264_side or (codec == "hevc_nvenc" and not hevc):
            return "Operation not permitted"
        deep = C.bit_depth(fmt) > 8
        if codec == "h264_nvenc":
            ok = max(w, h) <= h264_side and (h264_10bit or not deep)
        elif codec in ("hevc_nvenc", "av1_nvenc"):
            ok = max(w, h) <= 8192
        else:
            ok = True
        return None if ok else "InitializeEncoder failed: invalid param (8)"

    problem.tried = tried  # type: ignore[attr-defined]
    return problem


ADA = fake_gpu(4096, h264_10bit=False)
BLACKWELL = fake_gpu(4096, h264_10bit=True)
H100 = fake_gpu(0, h264_10bit=False)  # no NVENC on the chip


@pytest.mark.parametrize(
    ("gpu", "size", "pix_fmt", "bits", "want"),
    [
        (ADA, (1920, 1080), "yuv420p", 8, "h264_nvenc"),
        (ADA, (7680, 4320), "yuv420p", 8, "hevc_nvenc"),  # 1080p x4: past H.264's 4096
        (ADA, (3840, 2160), "yuv420p10le", 10, "hevc_nvenc"),  # 10-bit: not H.264 NVENC
        (BLACKWELL, (3840, 2160), "yuv420p10le", 10, "hevc_nvenc"),
        (H100, (1920, 1080), "yuv420p", 8, "libx264"),
        (H100, (7680, 4320), "yuv420p", 8, "libx265"),
        (H100, (3840, 2160), "yuv420p10le", 10, "libx265"),
        (ADA, (16384, 8640), "yuv420p", 8, "libx265"),  # past HEVC NVENC's 8192 too
    ],
)
def test_codec_auto_by_size_and_bit_depth(gpu, size, pix_fmt, bits, want) -> None:
    w, h = size
    got = encode.auto_codec(
        "cuda", width=w, height=h, source_pix_fmt=pix_fmt, bit_depth=bits, problem=gpu
    )
    assert got == want
    # probed at the real size, in the pixel format it would really get
    codec, pw, ph, fmt = gpu.tried[-1]
    assert (pw, ph) == (w, h)
    assert fmt == encode.choose_pix_fmt(codec, pix_fmt, bits)
    assert fmt == ("p010le" if bits > 8 else "yuv420p")
    assert encode.auto_codec("cpu", width=w, height=h, problem=gpu) == "libx264"


def test_an_nvenc_choice_that_cannot_work_is_refused_in_one_line() -> None:
    refuse = encode.nvenc_refusal
    assert refuse("h264_nvenc", 1920, 1080, "yuv420p", problem=ADA) is None
    assert refuse("libx264", 7680, 4320, "yuv420p", problem=H100) is None  # not NVENC
    big = refuse("h264_nvenc", 7680, 4320, "yuv420p", problem=ADA)
    assert big == (
        "h264_nvenc cannot encode 7680x4320 yuv420p here: H.264 NVENC is limited to 4096x4096; "
        "choose @{codec='auto'} (by size and bit depth) or hevc_nvenc (to 8192x8192) or libx265"
    )
    deep = refuse("h264_nvenc", 1920, 1080, "p010le", problem=ADA)
    assert deep is not None and "takes no 10-bit input on this GPU (10-bit H.264 needs a " in deep
    assert refuse("h264_nvenc", 1920, 1080, "p010le", problem=BLACKWELL) is None
    none = refuse("hevc_nvenc", 1920, 1080, "yuv420p", problem=H100)
    assert none is not None and "NVENC needs an NVIDIA GPU that has it" in none


def _wide_clip(tmp_path: Path, width: int = 1040) -> Path:
    """Two frames 1040x16: x4 gives 4160 pixels a side, past H.264 NVENC's limit."""
    import subprocess

    from media_factory import ffmpeg_exe

    out = tmp_path / "wide.mkv"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
         f"testsrc2=size={width}x16:rate=24", "-frames:v", "2", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def test_the_plan_decides_codec_auto_per_file(
    tmp_path: Path, media_clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA the plan (not the run-wide settings) decides: each file by its own output."""
    from vidsr.run.plan import plan_video
    from vidsr.run.resolve import resolve
    from vidsr.settings import fingerprint

    monkeypatch.setattr(encode, "encoder_problem", ADA)
    settings = resolve(upscale_settings(device="cuda", codec="auto"), "cuda")
    assert settings.codec == "auto"  # still open: it depends on the file
    small = plan_video(media_clips["cfr"], settings, output=tmp_path / "a.mkv", device_type="cuda")
    wide = plan_video(_wide_clip(tmp_path), settings, output=tmp_path / "b.mkv", device_type="cuda")
    deep = plan_video(
        media_clips["hevc10"], settings, output=tmp_path / "c.mkv", device_type="cuda"
    )
    assert (small.settings.codec, wide.settings.codec, deep.settings.codec) == (
        "h264_nvenc",
        "hevc_nvenc",
        "hevc_nvenc",
    )
    assert (small.settings.crf, wide.settings.crf) == (19.0, 21.0)  # each codec's default cq
    assert "auto" not in str(fingerprint(wide.settings, weights="w", out_size=[1, 1]))
    # an explicit H.264 NVENC for the wide file: refused by the plan, before any work
    explicit = settings.replace(codec="h264_nvenc")
    with pytest.raises(UsageError, match=r"H\.264 NVENC is limited to 4096x4096"):
        plan_video(_wide_clip(tmp_path), explicit, output=tmp_path / "d.mkv", device_type="cuda")


def test_an_explicit_nvenc_codec_is_refused_here_before_any_work(
    media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    if encode.encoder_available("h264_nvenc"):
        pytest.skip("this machine's NVENC opens")
    out = tmp_path / "o.mkv"
    code, _, err = run_cli(capsys, "upscale", media_clips["cfr"], "-o", out, "--device", "cpu",
                           "--codec", "h264_nvenc")  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("vidsr: error: h264_nvenc cannot encode 256x144 yuv420p here: it does ")
    assert "choose --codec auto (by size and bit depth) or libx264 or libx265" in err
    assert not out.exists() and not list(tmp_path.iterdir())


# --- NVENC's own formats packed on the device (device colour stays on) -----------------------


@pytest.mark.parametrize(("semi", "planar"), [("nv12", "yuv420p"), ("p010le", "yuv420p10le")])
def test_semi_planar_packing_holds_the_planar_codes(semi: str, planar: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand((2, 3, 36, 64), generator=g)
    lay_s, lay_p = C.output_layout(semi), C.output_layout(planar)
    assert lay_s is not None and lay_s.interleaved and lay_p is not None
    assert C.planar_layout(semi) is None  # decoders do not take it
    assert lay_s.frame_elements(36, 64) == lay_p.frame_elements(36, 64)
    kw = {"matrix": C.MATRIX_BT709, "colour_range": C.RANGE_LIMITED}
    for k in range(2):
        a = C.rgb_to_planes(x, lay_s, **kw)[k].numpy()
        b = C.rgb_to_planes(x, lay_p, **kw)[k].numpy()
        frame = C.frame_from_planes(a, lay_s, 64, 36)
        assert frame.format.name == semi
        unpacked = frame.reformat(format=planar)  # swscale: a lossless re-layout
        dtype = lay_p.dtype
        got = np.concatenate([C._plane(p, dtype).ravel() for p in unpacked.planes[:3]])
        assert np.array_equal(got, b.view(dtype))


def test_nv12_output_keeps_device_colour_on(media_clips: dict[str, Path], tmp_path: Path) -> None:
    """libx264 takes nv12 as NVENC does: device colour stays on and, lossless (qp 0), the
    frames equal the planar path's."""
    from vidsr.media.probe import probe
    from vidsr.pipeline.video import plan_device_colour

    info = probe(media_clips["cfr"])
    kwargs = {"width": 256, "height": 144, "codec": "libx264", "pix_fmt": "nv12"}
    dc = plan_device_colour(info, kwargs, torch.device("cuda"), "auto")
    assert dc is not None and dc.output == C.output_layout("nv12")
    outs = {}
    for fmt in ("nv12", "yuv420p"):
        out = tmp_path / f"{fmt}.mkv"
        run_video(media_clips["cfr"], out, model=MODEL, codec="libx264", pix_fmt=fmt,
                  device_colour="on", encoder_opt=(("qp", "0"),))  # fmt: skip
        with av.open(str(out)) as c:
            outs[fmt] = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    assert len(outs["nv12"]) == len(outs["yuv420p"]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(outs["nv12"], outs["yuv420p"], strict=True))


# --- the batch size: measured for the network in use, kept, shared ----------------------------


class FakeMemory:
    """A device's memory as the sizer sees it: ``free`` bytes, and what one probe frame
    costs (``frame``); counts the probes."""

    def __init__(self, free: int, frame: int) -> None:
        self.free_bytes, self.frame, self.probes = free, frame, 0

    def free(self) -> int:
        return self.free_bytes

    def measure(self, run) -> int:
        self.probes += 1
        run()  # the real probe forward (on the CPU here): its layers are measured too
        return self.frame


def test_batch_size_is_measured_kept_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidsr.models.loader import load_network
    from vidsr.pipeline import memory
    from vidsr.pipeline.infer import Upscaler

    up = Upscaler(load_network(MODEL), device=torch.device("cpu"), dtype=torch.float32)
    assert memory.batch_size(up, 16, 16) == 1  # on the CPU without a stand-in: always 1
    temps = memory.step_temporaries(16, 16, 4)
    assert temps == 4 * 8 * (16 * 16 + 64 * 64)
    per = 1000 + temps
    mem = FakeMemory(free=int(10 * per / memory.HEADROOM) + 1, frame=1000)
    assert memory.batch_size(up, 16, 16, memory=mem) == 10
    assert up.memory.largest[(16, 16)] == 64 * 16 * 16  # SRVGGNetCompact: 64 features
    assert memory.batch_size(up, 16, 16, memory=mem, sharers=2) == 5  # two users of one GPU
    assert mem.probes == 1  # measured once for this network and size, then kept
    mem.free_bytes *= 4
    assert memory.batch_size(up, 16, 16, memory=mem) == memory.MAX_BATCH
    # no batch whose largest activation passes 32-bit indexing
    monkeypatch.setattr(memory, "INT32_ELEMENTS", 3 * 64 * 16 * 16 + 5)
    assert memory.batch_size(up, 16, 16, memory=mem) == 3
    # what an out-of-memory retry learned caps it from then on
    up.memory.max_batch[(16, 16)] = 2
    assert memory.batch_size(up, 16, 16, memory=mem) == 2
    # a probe frame that does not fit: 1 (the step then finds its tile size)
    other = Upscaler(load_network(MODEL), device=torch.device("cpu"), dtype=torch.float32)

    class Full(FakeMemory):
        def measure(self, run) -> int:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    assert memory.batch_size(other, 16, 16, memory=Full(1 << 40, 0)) == 1
    assert other.memory.max_batch[(16, 16)] == 1


def test_rrdbnet_costs_more_per_frame_than_it_was_assumed(tmp_path: Path) -> None:
    """The largest activation of RRDBNet x4 is 64 features at the output size (16x the input
    pixels): a whole 1080p frame comes within 1% of 2^31 elements."""
    from vidsr.models.arch.rrdbnet import RRDBNet
    from vidsr.pipeline.memory import INT32_ELEMENTS, largest_activation

    net = RRDBNet(num_block=1).eval()
    x = torch.zeros((1, 3, 12, 20))
    with torch.inference_mode():
        largest = largest_activation(net, lambda: net(x))
    assert largest == 64 * (12 * 4) * (20 * 4)
    assert 0.98 < 64 * (1080 * 4) * (1920 * 4) / INT32_ELEMENTS < 1


# --- out of memory at every step of a batch, and large tensors ---------------------------------

OOM_TEXTS = [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("CUDA driver error: out of memory"),
]


def test_every_cuda_out_of_memory_message_is_recognised() -> None:
    from vidsr.pipeline.memory import needs_smaller

    assert [needs_smaller(e) for e in OOM_TEXTS] == ["memory"] * 4
    wrapped = RuntimeError("chunk failed")
    wrapped.__cause__ = OOM_TEXTS[1]
    assert needs_smaller(wrapped) == "memory"
    large = RuntimeError("Expected canUse32BitIndexMath(input) && canUse32BitIndexMath(output)")
    assert needs_smaller(large) == "size"
    assert needs_smaller(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")) == "size"
    assert needs_smaller(RuntimeError("CUDA error: an illegal memory access")) is None
    assert needs_smaller(ValueError("out of memory")) is None


@pytest.mark.parametrize("where", ["upload", "colour", "network", "packing", "download"])
def test_out_of_memory_anywhere_in_the_step_retries_with_every_frame_once(
    media_clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Batches of 4 with the colour conversion on the device: whichever part of the step
    runs out of memory for more than one frame, the batch is run again in smaller parts and
    the video is the same, every frame once."""
    from standins import fake_upscaler

    from vidsr.media import colour
    from vidsr.pipeline import video

    src = media_clips["cfr"]
    opts = {"codec": "ffv1", "device_colour": "on", "batch_size": 4, "lanes": 1}
    want = run_video(src, tmp_path / "want.mkv", upscaler=fake_upscaler(4), **opts)
    seen: list[int] = []

    def failing(n: int, error: BaseException) -> None:
        seen.append(n)
        if n > 1:
            raise error

    error = OOM_TEXTS[len(where) % len(OOM_TEXTS)]
    hook = None
    if where == "upload":
        real = video._DeviceStep.upload

        def upload(self, host):
            failing(host.shape[0], error)
            return real(self, host)

        monkeypatch.setattr(video._DeviceStep, "upload", upload)
    elif where in ("colour", "packing"):
        name = "planes_to_rgb" if where == "colour" else "rgb_to_planes"
        real_fn = getattr(colour, name)

        def wrapped(*args, **kwargs):
            failing(args[0].shape[0], error)
            return real_fn(*args, **kwargs)

        monkeypatch.setattr(colour, name, wrapped)
    elif where == "network":

        def hook(x):
            failing(x.shape[0], error)

    else:  # the copy back to the host
        real_download = video._DeviceStep.download

        def download(self, out):
            failing(out.shape[0], error)
            return real_download(self, out)

        monkeypatch.setattr(video._DeviceStep, "download", download)
    got = run_video(src, tmp_path / "got.mkv", upscaler=fake_upscaler(4, hook), **opts)
    assert got.frames == want.frames == 48
    assert seen and max(seen) == 4 and seen.count(1) >= 48  # retried, each frame alone
    with av.open(str(want.output)) as a, av.open(str(got.output)) as b:
        pa = [f.to_ndarray() for f in a.decode(video=0)]
        pb = [f.to_ndarray() for f in b.decode(video=0)]
    assert len(pa) == len(pb) and all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_a_tensor_too_large_for_32_bit_indexing_takes_the_tile_path() -> None:
    from standins import fake_upscaler

    from vidsr.pipeline.step import ResilientStep

    def hook(x):
        if x.shape[-1] * x.shape[-2] > 25_000:
            raise RuntimeError("Expected canUse32BitIndexMath(input) to be true")

    net = fake_upscaler(2, hook)
    x = torch.rand((2, 3, 150, 320), generator=torch.Generator().manual_seed(3))
    parts = ResilientStep(net, lambda b, n: n(b), (150, 320))(x)
    assert torch.equal(torch.cat(parts), fake_upscaler(2)(x))
    assert net.memory.tile[(150, 320)] == 128 and net.memory.max_batch[(150, 320)] == 1


# --- NaN/Inf from a low precision, bf16 where the GPU lacks it ---------------------------------


def test_nan_in_the_first_batch_falls_back_to_fp32(
    media_clips: dict[str, Path], tmp_path: Path, caplog
) -> None:
    """bf16 (on the CPU here; fp16 on a GPU) whose network overflows: the first batch is
    found non-finite, the run goes on in fp32 with a warning, and the frames equal fp32's."""
    from standins import fake_upscaler

    fp32_net = fake_upscaler(4, None)
    base = fake_upscaler(4, None)
    low = type(base)(base.net, device=torch.device("cpu"), dtype=torch.bfloat16)
    module = low.module

    real_forward = module.forward

    def forward(x):
        y = real_forward(x)
        if torch.is_autocast_enabled("cpu"):
            y = y.clone()
            y[..., 0, 0] = float("nan")
        return y

    module.forward = forward
    opts = {"codec": "ffv1", "batch_size": 2, "lanes": 1}
    want = run_video(media_clips["cfr"], tmp_path / "want.mkv", upscaler=fp32_net, **opts)
    with caplog.at_level("WARNING"):
        got = run_video(media_clips["cfr"], tmp_path / "got.mkv", upscaler=low, **opts)
    assert low.dtype == torch.float32 and low.precision_name == "fp32"
    assert sum("NaN or Inf" in r.getMessage() for r in caplog.records) == 1
    assert got.frames == want.frames
    with av.open(str(want.output)) as a, av.open(str(got.output)) as b:
        pa = [f.to_ndarray() for f in a.decode(video=0)]
        pb = [f.to_ndarray() for f in b.decode(video=0)]
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_bf16_is_refused_on_a_gpu_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidsr.errors import DeviceError
    from vidsr.pipeline import infer

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(infer, "bf16_supported", lambda device: False)  # a Turing card
    with pytest.raises(DeviceError, match="bf16 is refused on cuda:0: this GPU has no bfloat16"):
        infer.resolve_precision("bf16", cuda)
    assert infer.resolve_precision("fp16", cuda) == torch.float16
    monkeypatch.setattr(infer, "bf16_supported", lambda device: True)
    assert infer.resolve_precision("bf16", cuda) == torch.bfloat16


# --- pinned buffers safe by construction; the tiled output is dense -------------------------


class FakeEvent:
    def __init__(self) -> None:
        self.done = False
        self.waited = 0

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited += 1
        self.done = True


def test_a_pinned_buffer_is_reused_only_after_its_copy_and_its_reader() -> None:
    from vidsr.pipeline.step import PinnedPool

    events: list[FakeEvent] = []

    def event() -> FakeEvent:
        events.append(FakeEvent())
        return events[-1]

    pool = PinnedPool(event, pin=False)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    up1 = pool.upload(a, torch.device("cpu"))
    up2 = pool.upload(a + 1, torch.device("cpu"))  # the first upload is not done: a new one
    assert pool.allocated == 2 and torch.equal(up1, torch.from_numpy(a))
    events[0].done = True
    pool.upload(a, torch.device("cpu"))  # reuses the first, whose copy is done
    assert pool.allocated == 2 and torch.equal(up2, torch.from_numpy(a + 1))
    # downloads: the buffer waits for its reader, whatever the events say
    t = torch.arange(6, dtype=torch.int16).reshape(2, 3)
    d1 = pool.download(t, view=np.dtype(np.uint16))
    events[-1].done = True
    d2 = pool.download(t * 2)
    assert d1.buf is not d2.buf  # d1 not released yet: never handed out again
    assert d1.array().dtype == np.uint16 and d1.array().tolist() == [[0, 1, 2], [3, 4, 5]]
    d1.release()
    d3 = pool.download(t * 3)
    assert d3.buf is d1.buf  # released and its copy done: reused
    with pytest.raises(Exception, match="released download"):
        d1.array()


def test_tiled_output_is_channels_last_like_a_whole_frame() -> None:
    from vidsr.models.loader import load_network
    from vidsr.pipeline.infer import Upscaler

    net = load_network(MODEL)
    x = torch.rand((1, 3, 40, 56), generator=torch.Generator().manual_seed(2))
    cpu = torch.device("cpu")
    whole = Upscaler(net, device=cpu, dtype=torch.float32)(x)
    tiled = Upscaler(net, device=cpu, dtype=torch.float32, tile=24)(x)
    assert torch.allclose(whole, tiled, atol=0.05)
    nhwc = torch.channels_last
    assert whole.is_contiguous(memory_format=nhwc) and tiled.is_contiguous(memory_format=nhwc)
    assert tiled.permute(0, 2, 3, 1).is_contiguous()  # the host copy is dense, not strided


# --- /dev/shm ---------------------------------------------------------------------------------


def test_the_frame_ring_fits_in_dev_shm(tmp_path: Path) -> None:
    from fractions import Fraction

    from vidsr.errors import OutputError
    from vidsr.pipeline.encoder_process import EncoderProcess

    kwargs = {"path": tmp_path / "o.mkv", "width": 64, "height": 36, "codec": "ffv1",
              "time_base": Fraction(1, 24)}  # fmt: skip
    frame = 64 * 36 * 3
    with EncoderProcess(kwargs, shape=(36, 64, 3), slots=8, free_shm=lambda: 5 * frame) as enc:
        assert enc.slots == 4  # 80% of 5 frames: 4 of the 8 asked for
        for i in range(6):
            slot, view = enc.acquire()
            view[...] = i
            enc.submit(slot, i)
        assert enc.finish().frames == 6
    with pytest.raises(OutputError) as info:
        EncoderProcess(kwargs, shape=(36, 64, 3), slots=8, free_shm=lambda: frame)
    message = str(info.value)
    assert "\n" not in message and message.startswith("/dev/shm has 0 MiB free; the encoder's")
    assert "--shm-size=8g" in message


# --- local workers pinned to their GPU -------------------------------------------------------


def test_a_local_worker_sees_only_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker for cuda:N starts with CUDA_VISIBLE_DEVICES=N (before torch or PyAV could
    open a context): torch's cuda:0, NVDEC's device 0 and the NVENC gpu option 0 there - and
    in the encoder process it starts - are GPU N. The driver's own environment is untouched."""
    import multiprocessing as mp
    import os

    from standins import report_environment

    from vidsr.jobs.chunk import encoder_kwargs
    from vidsr.jobs.local import pinned_env, start_worker

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        start_worker(ctx, report_environment, dev, (results,), f"probe-{dev}")
        for dev in ("cuda:1", "cuda:0", "cpu")
    ]
    got = sorted((results.get(timeout=60) for _ in procs), key=lambda r: str(r[0]))
    for p in procs:
        p.join(timeout=30)
    assert [(r[0], r[1], r[2]) for r in got] == [
        ("0", "0", "cuda:0"),
        ("1", "1", "cuda:0"),
        (None, None, "cuda:0"),  # a CPU worker is not narrowed
    ]
    assert len({r[3] for r in got}) == 3 and "CUDA_VISIBLE_DEVICES" not in os.environ
    # a driver already narrowed to GPUs 4 and 5: its cuda:1 is GPU 5
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert pinned_env("cuda:1") == {"CUDA_VISIBLE_DEVICES": "5"}
    # NVENC beside the model encodes on the model's GPU; an explicit gpu= wins
    s = upscale_settings(device="cpu", codec="h264_nvenc")
    assert encoder_kwargs(s, torch.device("cuda", 0))["options"] == {"gpu": "0"}
    assert encoder_kwargs(s, torch.device("cuda", 2))["options"] == {"gpu": "2"}
    assert encoder_kwargs(s, torch.device("cpu"))["options"] == {}
    s2 = upscale_settings(device="cpu", codec="hevc_nvenc", encoder_opt=(("gpu", "1"),))
    assert encoder_kwargs(s2, torch.device("cuda", 0))["options"] == {"gpu": "1"}


# --- benchmarks/gpu_check.py -----------------------------------------------------------------


def test_gpu_check_runs_every_step_at_smoke_size(tmp_path: Path) -> None:
    """Every step of the GPU check runs (tiny, on the CPU), so its code cannot rot; without
    --smoke and without CUDA the GPU steps are skipped, each with its reason."""
    import importlib.util
    import json
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # its dataclass looks its module up
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "smoke.json"
    assert gpu_check.main(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == ["numerics", "model", "memory", "colour", "nvdec", "nvenc", "bench"]
    assert not [n for n, r in steps.items() if "failed" in r or "skipped" in r]
    assert steps["numerics"]["realesr-animevideov3 fp32"]["max_diff_levels"] == 0
    assert steps["colour"]["same_times"] and steps["colour"]["psnr_db"] > 35
    assert steps["nvdec"]["equal"] and steps["nvdec"]["frames"] == [8, 8]
    assert steps["model"]["realesr-animevideov3 64x36 fp32"]["gflop_per_frame"] > 0
    if not torch.cuda.is_available():
        plain = tmp_path / "cpu.json"
        assert gpu_check.main(["--device", "cpu", "--out", str(plain)]) == 0
        skipped = json.loads(plain.read_text())["steps"]
        assert {n for n, r in skipped.items() if r.get("skipped") == "no CUDA device"} == {
            "numerics", "model", "memory", "colour", "nvdec", "bench"
        }  # fmt: skip
        assert skipped["nvenc"]["1920x1080 yuv420p"]["auto"] == "libx264"


# --- review findings, each pinned by a test -----------------------------------------------------


def test_review_findings_on_the_gpu_path() -> None:
    """An explicit --pix-fmt decides what auto probes; vidsr's own errors are not CUDA's
    memory; cuDNN's no-workspace error is."""
    from vidsr.errors import PipelineError
    from vidsr.pipeline.memory import needs_smaller

    pick = encode.auto_codec
    assert pick("cuda", width=1920, height=1080, pix_fmt="p010le", problem=ADA) == "hevc_nvenc"
    # NVENC takes no yuv420p10le: software, not a refusal later
    assert pick("cuda", width=1920, height=1080, pix_fmt="yuv420p10le", problem=ADA) == "libx265"
    assert pick("cuda", width=1920, height=1080, pix_fmt="yuv420p", problem=ADA) == "h264_nvenc"
    assert needs_smaller(RuntimeError("Unable to find a valid cuDNN algorithm to run conv")) == (
        "memory"
    )
    nvenc_limit = PipelineError("OpenEncodeSessionEx failed: out of memory (10)")
    assert needs_smaller(nvenc_limit) is None


def test_an_out_of_memory_retry_still_checks_the_first_batch_for_nan() -> None:
    from standins import fake_upscaler, oom_when

    from vidsr.pipeline.step import ResilientStep

    base = fake_upscaler(2, oom_when(batch_over=1))
    low = type(base)(base.net, device=torch.device("cpu"), dtype=torch.bfloat16)
    real_forward = low.module.forward

    def forward(x):
        y = real_forward(x)
        return y * float("nan") if torch.is_autocast_enabled("cpu") else y

    low.module.forward = forward
    x = torch.rand((2, 3, 8, 8))
    parts = ResilientStep(low, lambda b, n: n(b), (8, 8))(x)
    assert low.dtype == torch.float32  # the retried single frames were checked, and fell back
    assert all(bool(torch.isfinite(p).all()) for p in parts) and len(parts) == 2


def test_rings_made_at_once_share_dev_shm(tmp_path: Path) -> None:
    from fractions import Fraction

    from vidsr.pipeline.encoder_process import EncoderProcess

    kwargs = {"path": tmp_path / "o.mkv", "width": 64, "height": 36, "codec": "ffv1",
              "time_base": Fraction(1, 24)}  # fmt: skip
    frame = 64 * 36 * 3
    free = lambda: 10 * frame  # noqa: E731
    with EncoderProcess(kwargs, shape=(36, 64, 3), slots=8, free_shm=free, shm_sharers=2) as e:
        assert e.slots == 4  # 80% of 10 frames, halved
