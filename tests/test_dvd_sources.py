"""DVD and TV sources: interlace and telecine found (idet) and repaired (bwdif/yadif, field
matching and decimation, soft telecine's film frames), output size and square pixels, a time
range, crop - on tiny DVD-style files made the way DVDs hold them (tests/real_media.py).

The runs use the real pipeline with a pointwise x2 model (tests/standins.py: nearest-neighbour,
so an output frame shrunk back by 2 is its model input exactly) and lossless FFV1 output, so
what is compared is the filtering, the timing and the geometry, not the network."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import run_cli, run_video
from real_media import (
    anamorphic_dvd,
    hard_telecine_mpeg2,
    interlaced_mpeg2,
    letterboxed,
    soft_telecine_mpeg2,
)
from standins import fake_upscaler

from vidsr.media.decode import FrameDecoder
from vidsr.media.fields import detect_crop, scan_fields
from vidsr.media.probe import probe


@pytest.fixture(scope="module")
def dvd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dvd")
    telecined, film = hard_telecine_mpeg2(folder, frames=24)
    return {
        "interlaced": interlaced_mpeg2(folder, frames=24),
        "telecined": telecined,
        "film": film,
        "soft": soft_telecine_mpeg2(folder, frames=24),
        "letterboxed": letterboxed(folder, frames=24, bars=(8, 0)),
    }


def frames_of(path: Path) -> tuple[list[np.ndarray], list[Fraction]]:
    """Every frame (RGB) and its time in seconds from the first."""
    frames = list(FrameDecoder(path))
    t0 = frames[0].time
    return [f.rgb for f in frames], [f.time - t0 for f in frames]


def model_inputs(path: Path) -> list[np.ndarray]:
    """The output's frames shrunk back by the pointwise x2 model's factor, its colour change
    undone (to within a level: the output is 8-bit)."""
    out = []
    for f in frames_of(path)[0]:
        x = (f[::2, ::2].astype(np.float64) - 31.875) / 0.75
        out.append(np.clip(np.rint(x[..., ::-1]), 0, 255).astype(np.int16))
    return out


def combing(frames: list[np.ndarray]) -> float:
    """Mean distance of each row from the mean of the rows above and below it (green
    channel): high where the two fields of a frame show different moments."""
    out = []
    for f in frames:
        g = f[..., 1].astype(np.float64)
        out.append(np.abs(g[1:-1] - (g[:-2] + g[2:]) / 2).mean())
    return float(np.mean(out))


def upscale(src: Path, out: Path, **options: object) -> object:
    """The run with the pointwise x2 model at its own scale, into lossless FFV1."""
    return run_video(src, out, upscaler=fake_upscaler(2), codec="ffv1", scale=2, **options)


# --- detection -------------------------------------------------------------------------------


def test_idet_tells_interlaced_telecined_soft_and_progressive(dvd: dict[str, Path]) -> None:
    verdicts = {name: scan_fields(probe(dvd[name])) for name in dvd}
    assert verdicts["interlaced"].content == "interlaced"
    assert verdicts["interlaced"].order == "tff"
    assert verdicts["telecined"].content == "telecined"
    # 2:3 pulldown repeats a field in two frames of five
    tel = verdicts["telecined"]
    assert 0.3 <= tel.repeated / tel.frames <= 0.5
    assert verdicts["soft"].content == "soft-telecined"
    assert verdicts["film"].content == "progressive"
    assert verdicts["letterboxed"].content == "progressive"


def test_probe_reports_fields_and_what_each_option_does(dvd: dict[str, Path], capsys) -> None:
    code, out, _ = run_cli(capsys, "probe", dvd["telecined"], "--json")
    assert code == 0
    src = json.loads(out)["sources"]
    assert src["content"] == "telecined"
    assert "repeating a field" in src["idet"]
    assert src["ivtc"].endswith("24 frames at 23.976 fps")
    assert "none: 30 frames" in src["deinterlace_auto"]
    code, out, _ = run_cli(capsys, "probe", dvd["telecined"])
    assert "the source is telecined" in out and "--ivtc restores" in out
    code, out, _ = run_cli(capsys, "probe", dvd["letterboxed"])
    assert "--crop auto: 64x32+0+8" in out


def test_dry_run_warns_of_unrepaired_fields_and_prints_the_repair(
    dvd: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "o.mkv"
    code, text, _ = run_cli(capsys, "upscale", dvd["interlaced"], "-o", out, "--dry-run")
    assert code == 0
    assert "the source is interlaced (tff" in text and "--deinterlace auto repairs it" in text
    code, text, _ = run_cli(
        capsys, "upscale", dvd["interlaced"], "-o", out, "--dry-run", "--deinterlace", "auto"
    )
    assert "deinterlace with bwdif (tff, one frame per frame)" in text
    assert "interlaced" not in " ".join(line for line in text.splitlines() if "warning" in line)
    code, text, _ = run_cli(capsys, "upscale", dvd["film"], "-o", out, "--dry-run", "--ivtc")
    assert "--ivtc: the source is not telecined" in text


# --- repair ----------------------------------------------------------------------------------


def test_deinterlace_removes_combing_and_keeps_every_frame_time(
    dvd: dict[str, Path], tmp_path: Path
) -> None:
    src = dvd["interlaced"]
    plain = upscale(src, tmp_path / "plain.mkv")
    fixed = upscale(src, tmp_path / "bwdif.mkv", deinterlace="auto")
    assert plain.frames == fixed.frames == 24
    before, after = combing(model_inputs(plain.output)), combing(model_inputs(fixed.output))
    assert after < 0.5 * before, (before, after)
    assert frames_of(fixed.output)[1] == frames_of(plain.output)[1]
    # one frame per field: twice the frames, each second one halfway to the next frame
    fields = upscale(src, tmp_path / "fields.mkv", deinterlace="yadif", deinterlace_rate="field")
    _, times = frames_of(fields.output)
    assert fields.frames == len(times) == 48
    steps = {round(float(b - a) * 1000) for a, b in itertools.pairwise(times)}
    assert steps <= {16, 17}  # 1001/60000 s, in Matroska's milliseconds


def test_ivtc_returns_the_film_frames_at_their_times(dvd: dict[str, Path], tmp_path: Path) -> None:
    film, film_times = frames_of(dvd["film"])
    res = upscale(dvd["telecined"], tmp_path / "ivtc.mkv", ivtc=True)
    assert res.frames == len(film) == 24
    got = model_inputs(res.output)
    _, times = frames_of(res.output)
    # times: the film's own, within one tick (Matroska: 1 ms)
    assert max(abs(float(a - b)) for a, b in zip(times, film_times, strict=True)) <= 0.001
    # frames: each the film frame of its index, within MPEG-2's loss, and far from the others
    for i, frame in enumerate(got):
        errors = [np.abs(frame - f.astype(np.int16)).mean() for f in film]
        assert int(np.argmin(errors)) == i, (i, np.round(errors, 1))
        assert errors[i] < 6.0, (i, errors[i])
    # the stream's own rate says so too (players and ffmpeg report it: it once said "30k")
    assert probe(res.output).video.avg_rate == Fraction(24000, 1001)
    # the same file without --ivtc: 30 frames, two in five combed
    plain = upscale(dvd["telecined"], tmp_path / "plain.mkv")
    assert plain.frames == 30
    assert probe(plain.output).video.avg_rate == Fraction(30000, 1001)
    assert combing(got) < combing(model_inputs(plain.output))


def test_ivtc_on_soft_telecine_keeps_the_coded_film_frames_evenly_timed(
    dvd: dict[str, Path], tmp_path: Path
) -> None:
    src = dvd["soft"]
    source_times = [(p - probe(src).video.frame_pts[0]) for p in probe(src).video.frame_pts]
    assert len(set(np.diff(source_times))) > 1  # 4504 / 3003 ticks: uneven
    res = upscale(src, tmp_path / "film.mkv", ivtc=True)
    assert res.frames == 24
    _, times = frames_of(res.output)
    even = [i * Fraction(1001, 24000) for i in range(24)]
    assert max(abs(float(a - b)) for a, b in zip(times, even, strict=True)) <= 0.001
    # the pictures are the coded ones, unchanged: the same pixels as a run without --ivtc
    plain = upscale(src, tmp_path / "plain.mkv")
    assert plain.frames == 24
    same = zip(frames_of(res.output)[0], frames_of(plain.output)[0], strict=True)
    assert all(np.array_equal(a, b) for a, b in same)


@pytest.mark.parametrize(
    ("name", "options", "chunk_frames"),
    [
        ("interlaced", {"deinterlace": "bwdif"}, 5),
        ("interlaced", {"deinterlace": "yadif", "deinterlace_rate": "field"}, 7),
        ("telecined", {"ivtc": True}, 6),
    ],
)
def test_chunked_repair_equals_one_pass(
    dvd: dict[str, Path], tmp_path: Path, name: str, options: dict, chunk_frames: int
) -> None:
    one = upscale(dvd[name], tmp_path / "one.mkv", **options)
    cut = upscale(dvd[name], tmp_path / "cut.mkv", chunk_frames=chunk_frames, **options)
    a, ta = frames_of(one.output)
    b, tb = frames_of(cut.output)
    assert len(a) == len(b) == one.frames
    assert ta == tb
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# --- size, aspect, crop ----------------------------------------------------------------------


def test_anamorphic_dvd_to_1080p_square_pixels(tmp_path: Path) -> None:
    src = anamorphic_dvd(tmp_path, frames=3)
    assert probe(src).video.sample_aspect_ratio == Fraction(32, 27)
    res = run_video(
        src, tmp_path / "hd.mkv", upscaler=fake_upscaler(4), height=1080, square_pixels=True
    )
    with av.open(str(res.output)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (1920, 1080)
        assert s.sample_aspect_ratio in (None, Fraction(1))
    out = probe(res.output).video
    assert out.display_aspect == Fraction(16, 9)
    assert out.frame_count == 3


def test_size_options(tmp_path: Path, dvd: dict[str, Path], capsys) -> None:
    src = dvd["letterboxed"]  # 64x48, square pixels
    res = run_video(src, tmp_path / "w.mkv", upscaler=fake_upscaler(2), width=100)
    assert (probe(res.output).video.width, probe(res.output).video.height) == (100, 76)
    res = run_video(src, tmp_path / "s.mkv", upscaler=fake_upscaler(2), size=(160, 90))
    v = probe(res.output).video
    assert (v.width, v.height, v.display_aspect) == (160, 90, Fraction(4, 3))
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", tmp_path / "x.mkv", "--width", "100", "--scale", "2"
    )
    assert code != 0 and "--width and --scale both set the output size" in err
    assert len(err.strip().splitlines()) == 1


def test_crop_auto_cuts_the_letterbox(dvd: dict[str, Path], tmp_path: Path, capsys) -> None:
    src = dvd["letterboxed"]
    assert detect_crop(probe(src)) == (0, 8, 64, 32)
    code, text, _ = run_cli(
        capsys, "upscale", src, "-o", tmp_path / "x.mkv", "--crop", "auto", "--dry-run"
    )
    assert "crop auto: 64x32+0+8" in text and "(libx264 256x128" in text
    res = upscale(src, tmp_path / "crop.mkv", crop="auto")
    plain = upscale(src, tmp_path / "plain.mkv")
    got, full = frames_of(res.output)[0], frames_of(plain.output)[0]
    assert got[0].shape == (64, 128, 3)
    # the same pixels, but for a few rows at the crop's edges: there chroma is the crop's own
    # (4:2:0 resampling, on decoding and on encoding, no longer reaches into the black bars)
    assert all(np.array_equal(g[6:-6], f[22:74]) for g, f in zip(got, full, strict=True))
    code, _, err = run_cli(
        capsys, "upscale", src, "-o", tmp_path / "y.mkv", "--crop", "64x48+8+8", "--dry-run"
    )
    assert code != 0 and "does not fit the 64x48 picture" in err


# --- time range ------------------------------------------------------------------------------


def _audio_span(path: Path) -> tuple[float, float, float]:
    """(first packet's time, last packet's end, the longest packet) of the audio, seconds."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        packets = [p for p in c.demux(s) if p.size and p.pts is not None]
        tb = float(s.time_base)
        ends = [(p.pts + (p.duration or 0)) * tb for p in packets]
        return packets[0].pts * tb, max(ends), max((p.duration or 0) * tb for p in packets)


def test_time_range_on_vfr_with_audio_is_frame_exact_and_in_sync(
    media_clips: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = media_clips["vfr"]  # 40 ms, then 20 ms, then 100 ms between frames; FLAC audio
    info = probe(src)
    start, end = Fraction(61, 100), Fraction(125, 100)
    times = [info.video.frame_time(i) - info.start_time for i in range(info.video.frame_count)]
    want = [t - start for t in times if start <= t < end]
    assert (
        len(want) == 17 and len({round(float(b - a), 3) for a, b in itertools.pairwise(want)}) == 3
    )
    code, text, _ = run_cli(
        capsys, "upscale", src, "-o", tmp_path / "d.mkv", "--start", "0.61", "--end", "1.25",
        "--dry-run",
    )  # fmt: skip
    assert code == 0 and "source frames 16 to 32 (0.640 to 1.200 s) -> 17 output frames" in text
    one = upscale(src, tmp_path / "range.mkv", start=start, end=end)
    cut = upscale(src, tmp_path / "cut.mkv", start=start, duration=end - start, chunk_frames=5)
    for res in (one, cut):
        assert res.frames == 17
        with av.open(str(res.output)) as c:
            s = c.streams.video[0]
            got = [f.pts * s.time_base for f in c.decode(s)]
        assert max(abs(float(g - w)) for g, w in zip(got, want, strict=True)) <= 0.001
        first, last, packet = _audio_span(res.output)
        assert 0 <= first <= packet  # the first audio packet at or after the start
        assert abs(last - float(end - start)) <= packet
    a, b = frames_of(one.output)[0], frames_of(cut.output)[0]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_interrupted_ivtc_range_resumes_to_the_same_output(
    dvd: dict[str, Path], tmp_path: Path
) -> None:
    from vidsr.errors import Interrupted
    from vidsr.run.events import ChunkDone

    src = dvd["telecined"]
    opts = {"ivtc": True, "start": Fraction(1, 10), "chunk_frames": 4}
    whole = upscale(src, tmp_path / "whole.mkv", **opts)

    def stop(event: object) -> None:
        if isinstance(event, ChunkDone) and event.index == 1:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.mkv"
    with pytest.raises(Interrupted):
        upscale(src, out, on_event=stop, **opts)
    assert not out.exists()
    # another range is another job: refused, not mixed into this one
    with pytest.raises(Exception, match="settings differ"):
        upscale(src, out, **{**opts, "start": Fraction(2, 10)})
    done: list[int] = []
    res = upscale(
        src, out, on_event=lambda e: done.append(e.index) if isinstance(e, ChunkDone) else None,
        **opts,
    )  # fmt: skip
    # chunks 0 and 1 are not done again (under load the later ones may have finished before
    # the interrupt landed: then the resumed run only joins them)
    assert 0 not in done and 1 not in done
    assert res.frames == whole.frames
    a, ta = frames_of(whole.output)
    b, tb = frames_of(res.output)
    assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# --- batch and the dvd preset ----------------------------------------------------------------


def test_batch_with_the_dvd_preset_repairs_each_file_its_way_and_skips_on_rerun(
    dvd: dict[str, Path], tmp_path: Path, capsys
) -> None:
    import shutil

    season = tmp_path / "season"
    season.mkdir()
    for name in ("telecined", "interlaced", "film"):
        shutil.copy(dvd[name], season / f"{name}{dvd[name].suffix}")
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = ["batch", season, "-o", out, "--preset", "dvd", "--model", "realesr-animevideov3",
            "--device", "cpu", "--codec", "libx264", "--pix-fmt", "yuv420p",
            "--start", "0.2", "--report", report]  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    files = {Path(f["rel"]).stem: f for f in json.loads(report.read_text())["files"]}
    assert {k: f["status"] for k, f in files.items()} == dict.fromkeys(files, "ok")
    frames = {k: probe(Path(f["output"])).video for k, f in files.items()}
    # telecined: the frames from 0.2 s on, each whole cycle of 5 giving 4, a partial one kept
    info = probe(dvd["telecined"])
    n = sum(
        info.video.frame_time(i) - info.start_time >= Fraction(2, 10)
        for i in range(info.video.frame_count)
    )
    assert frames["telecined"].frame_count == 4 * (n // 5) + n % 5
    assert frames["telecined"].avg_rate == Fraction(24000, 1001)
    assert frames["interlaced"].avg_rate == Fraction(30000, 1001)
    # square pixels everywhere (these sources have them already): SAR 1
    assert all(v.sample_aspect_ratio == 1 for v in frames.values())
    assert "--ivtc: the source is not telecined" in err  # said for the interlaced one
    before = {k: Path(f["output"]).stat().st_mtime_ns for k, f in files.items()}
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    again = {Path(f["rel"]).stem: f for f in json.loads(report.read_text())["files"]}
    assert {k: f["status"] for k, f in again.items()} == dict.fromkeys(files, "skipped")
    assert {k: Path(f["output"]).stat().st_mtime_ns for k, f in again.items()} == before


# --- edges found in review -------------------------------------------------------------------


def test_damage_at_a_chunk_edge_under_filters_keeps_every_frame(
    media_clips: dict[str, Path], tmp_path: Path
) -> None:
    src = media_clips["corrupt"]  # frames 6-11 do not decode
    for opts in ({"crop": (0, 0, 32, 32)}, {"deinterlace": "bwdif"}):
        one = upscale(src, tmp_path / "one.mkv", ignore_errors=True, overwrite=True, **opts)
        cut = upscale(
            src, tmp_path / "cut.mkv", ignore_errors=True, chunk_frames=4, overwrite=True, **opts
        )
        assert one.frames == cut.frames == probe(src).video.frame_count
        a, ta = frames_of(one.output)
        b, tb = frames_of(cut.output)
        assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_start_zero_keeps_the_first_frame_when_the_file_start_rounds_up(
    dvd: dict[str, Path],
) -> None:
    from helpers import upscale_settings

    from vidsr.run.source import frame_range

    info = probe(dvd["soft"])  # the container's start is rounded up past frame 0's time
    n = info.video.frame_count
    assert frame_range(info, upscale_settings(start=0)) == (0, n)
    assert frame_range(info, upscale_settings(end=Fraction(1, 2)))[0] == 0


def test_field_rate_on_a_one_tick_per_frame_avi_keeps_its_speed(tmp_path: Path) -> None:
    from real_media import BAR, ffmpeg

    src = tmp_path / "capture.avi"  # an FFV1 capture in AVI: time base 1/fps
    ffmpeg("-f", "lavfi", "-i", BAR.format(w=64, h=48, rate="60000/1001") +
           ",tinterlace=mode=interleave_top,setfield=tff", "-f", "lavfi", "-i",
           "sine=sample_rate=48000:duration=0.8", "-frames:v", 24, "-c:v", "ffv1",
           "-c:a", "pcm_s16le", src)  # fmt: skip
    assert probe(src).video.time_base == Fraction(1001, 30000)
    res = upscale(src, tmp_path / "fields.mkv", deinterlace="bwdif", deinterlace_rate="field")
    _, times = frames_of(res.output)
    assert res.frames == len(times) == 48
    assert abs(float(times[-1]) - 47 * 1001 / 60000) <= 0.001  # not twice as long
    steps = {round(float(b - a) * 1000) for a, b in itertools.pairwise(times)}
    assert steps <= {16, 17}


def test_end_past_the_video_still_cuts_the_audio(tmp_path: Path) -> None:
    from real_media import ffmpeg

    src = tmp_path / "short_video.mkv"  # 1 s of video, 3 s of audio
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration=1", "-f", "lavfi",
           "-i", "sine=sample_rate=48000:duration=3", "-c:v", "libx264", "-c:a", "aac", src)  # fmt: skip
    res = upscale(src, tmp_path / "o.mkv", end=2)
    assert res.frames == 24
    _first, last, packet = _audio_span(res.output)
    assert abs(last - 2.0) <= packet


def test_stream_field_order_decides_where_idet_cannot(tmp_path: Path) -> None:
    from helpers import upscale_settings
    from real_media import ffmpeg

    from vidsr.run.source import plan_source

    src = tmp_path / "static_bff.vob"  # a still picture: idet decides nothing; tagged bb
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=64x48:rate=30000/1001", "-frames:v", 24,
           "-vf", "setfield=bff", "-c:v", "mpeg2video", "-flags", "+ilme+ildct",
           "-field_order", "bb", "-f", "dvd", src)  # fmt: skip
    info = probe(src)
    assert info.video.field_order == "bb"
    scan = scan_fields(info)
    assert scan.tff + scan.bff == 0
    source, _ = plan_source(info, upscale_settings(deinterlace="auto"), ".mkv")
    assert (source.filters.repair, source.filters.order) == ("bwdif", "bff")
