"""A real collection goes through: old Xvid AVIs with packed B-frames, anamorphic DVD VOB/MPG
with AC-3 and DVD subtitles, a container-only display aspect, duplicate timestamps, mov_text,
a QuickTime timecode track, WebM to WebM, VP9 with alpha, damage libav only logs, old formats
in a batch folder, a 16-bit RGBA PNG. Each file is made here the way such files are made
(tests/real_media.py); each case checks frame counts (against ffmpeg's own), frame times,
display aspect, every stream, and the exact exit code and message of a refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import real_media as R
from helpers import json_events, run_cli
from media_factory import ffmpeg_exe

from vidsr.media.probe import probe

CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    made = {
        "xvid": R.xvid_avi(d / "ep01 [XviD].avi"),
        "vob": R.dvd(d / "VTS_01_1.VOB"),
        "mpg": R.dvd(d / "title.mpg", muxer="vob"),
        "aspect": R.container_aspect_mkv(d / "makemkv.mkv"),
        "dup": R.duplicate_times_mkv(d / "dup.mkv")[0],
        "movtext": R.mov_text_mp4(d / "itunes.mp4"),
        "tmcd": R.timecode_mov(d / "camera.mov"),
        "webm": R.vp9_opus_webm(d / "clip.webm"),
        "alpha": R.vp9_alpha_webm(d / "alpha.webm"),
        "damaged": R.damaged_ffv1(d / "damaged.mkv"),
    }
    return made


def ffmpeg_frames(path: Path) -> int:
    """How many frames ffmpeg itself decodes from the main video."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:V:0",
         "-f", "framecrc", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sum(1 for line in proc.stdout.splitlines() if line and not line.startswith("#"))


def times(path: Path) -> list[Fraction]:
    v = probe(path).video
    return [v.frame_time(k) for k in range(v.frame_count)]


def worst_ms(a: list[Fraction], b: list[Fraction]) -> float:
    assert len(a) == len(b)
    return max(float(abs(x - y)) for x, y in zip(a, b, strict=True)) * 1000


def streams(path: Path) -> list[tuple[str, str | None]]:
    return [(s.type, s.codec) for s in probe(path).copied_streams]


def upscale(capsys, src: Path, out: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "upscale", src, "-o", out, *CPU, *args)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]


# --- 1. Xvid/DivX AVI with packed B-frames -------------------------------------------------


def test_packed_b_frame_avi_in_display_order_at_its_slots(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["xvid"]
    info = probe(src)
    v = info.video
    assert (v.codec, v.timing) == ("mpeg4", "dts")
    assert v.frame_count == ffmpeg_frames(src) == 48
    assert v.start_offset == 0  # the video starts with the audio: AVI has no offset to report
    assert [float(t) for t in times(src)[:3]] == [0, 1 / 24, 2 / 24]
    out = tmp_path / "ep01.mkv"
    code, _, err = upscale(capsys, src, out, "--codec", "ffv1", "--chunk-frames", "10")
    assert code == 0, err
    o = probe(out)
    assert o.video.frame_count == 48 and streams(out) == [("audio", "mp3")]
    assert worst_ms(times(out), times(src)) <= 0.5  # mkv keeps milliseconds
    # Display order: every upscaled frame, shrunk back, is closer to ffmpeg's frame at its
    # place than to the frames before and after it (neighbours differ by 23 luma levels).
    ref = tmp_path / "ffmpeg.mkv"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(src), "-c:v", "ffv1", "-an",
                    str(ref)], check=True)  # fmt: skip
    want, got = frames_of(ref), frames_of(out)
    for k, frame in enumerate(got):
        small = frame.reshape(36, 4, 64, 4, 3).mean(axis=(1, 3))
        here = np.abs(small - want[k]).mean()
        for j in (k - 1, k + 1):
            if 0 <= j < len(want):
                assert here < np.abs(small - want[j]).mean(), f"frame {k} looks like frame {j}"
    # --ignore-errors never drops a frame that decodes
    again = tmp_path / "again.mkv"
    code, _, err = upscale(capsys, src, again, "--codec", "ffv1", "--ignore-errors")
    assert code == 0, err
    assert probe(again).video.frame_count == 48


# --- 2. DVD: anamorphic, AC-3, DVD subtitles; the display aspect for every codec -------------


def test_dvd_vob_keeps_its_display_aspect_subtitles_and_audio(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["vob"]
    v = probe(src).video
    assert (v.width, v.height, v.sample_aspect_ratio, v.display_aspect) == (
        64, 48, Fraction(4, 3), Fraction(16, 9)
    )  # fmt: skip
    assert v.frame_count == ffmpeg_frames(src) == 60
    code, out_text, _ = run_cli(capsys, "probe", src)
    assert "left out: DVD navigation packets" in out_text
    # coded as fields, top first, but the pictures are progressive: idet says so, no warning
    assert "field order tt" in out_text and "fields:   progressive (idet over" in out_text
    assert "the source is interlaced" not in out_text
    out = tmp_path / "dvd.mkv"  # ffv1: its bitstream cannot hold the aspect; the mkv does
    code, _, err = upscale(capsys, src, out, "--codec", "ffv1")
    assert code == 0, err
    assert "the source is interlaced" not in err
    o = probe(out).video
    assert (o.width, o.height, o.display_aspect) == (256, 192, Fraction(16, 9))
    assert o.frame_count == 60 and worst_ms(times(out), times(src)) <= 0.5
    assert streams(out) == [("subtitle", "dvd_subtitle"), ("audio", "ac3")]


def test_dvd_mpg_to_mp4_keeps_the_aspect_in_the_container(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["mpg"]
    out = tmp_path / "dvd.mp4"
    code, _, err = upscale(
        capsys, src, out, "--codec", "libx264", "--chunk-frames", "25", "--keep-work"
    )
    assert code == 0, err
    segments = sorted(p.name for p in (tmp_path / "dvd.mp4.vidsr-work" / "segments").iterdir())
    assert segments == ["00000.mp4", "00001.mp4", "00002.mp4"]
    o = probe(out)
    assert o.video.display_aspect == Fraction(16, 9) and o.video.frame_count == 60
    assert [t for t in streams(out) if t[0] != "data"] == [
        ("subtitle", "dvd_subtitle"),
        ("audio", "ac3"),
    ]
    # MP4 segments keep the source's 1/90000 time base (Matroska ones would round to 1 ms)
    assert worst_ms(times(out), times(src)) == 0


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_display_aspect_only_the_container_has_is_honoured(
    corpus: dict[str, Path], tmp_path: Path, capsys, suffix: str
) -> None:
    src = corpus["aspect"]
    with av.open(str(src)) as c:  # the H.264 bitstream says square pixels
        assert c.streams.video[0].codec_context.sample_aspect_ratio in (None, Fraction(1))
    assert probe(src).video.display_aspect == Fraction(16, 9)  # as ffmpeg takes it
    out = tmp_path / f"out{suffix}"
    code, _, err = upscale(capsys, src, out, "--codec", "ffv1" if suffix == ".mkv" else "libx264")
    assert code == 0, err
    assert probe(out).video.display_aspect == Fraction(16, 9)


# --- 3. timestamps that do not increase -----------------------------------------------------


def test_duplicate_timestamps_move_forward_before_any_work(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["dup"]
    v = probe(src).video
    assert (v.frame_count, v.duplicate_times) == (12, 2)
    warning = (
        "timestamps do not increase (2 share the time of the frame before): 2 frame(s) move "
        "forward, by at most 1.000 ms (every frame is kept)"
    )
    code, out, _ = run_cli(capsys, "probe", src)
    assert f"warning:  {warning}" in out and "2 duplicate(s)" in out
    code, out, _ = run_cli(capsys, "upscale", src, "--dry-run", *CPU)
    assert code == 0 and f"warning:   {warning}" in out
    dst = tmp_path / "dup.x4.mkv"
    code, stdout, err = upscale(capsys, src, dst, "--codec", "ffv1", "--json")
    assert code == 0, err
    assert json_events(stdout)[0] == {"event": "warning", "message": warning}
    got = [int(t * 1000) for t in times(dst)]
    assert got == [0, 42, 83, 125, 167, 168, 208, 250, 292, 293, 333, 375]  # moved by 1 ms


def test_a_step_back_moves_forward_too(corpus: dict[str, Path]) -> None:
    import dataclasses

    v = dataclasses.replace(probe(corpus["dup"]).video, frame_pts=(0, 40, 20, 60, 60, 61))
    assert v.output_pts(1) == (0, 40, 41, 60, 61, 62)
    assert v.moved_frames(1) == (3, 21)


# --- 4. refusals with ways forward, subtitle conversions, data streams ----------------------


def test_mov_text_becomes_srt_in_mkv(corpus: dict[str, Path], tmp_path: Path, capsys) -> None:
    src = corpus["movtext"]
    out = tmp_path / "itunes.mkv"
    code, _, err = upscale(capsys, src, out, "--codec", "ffv1")
    assert code == 0, err
    assert streams(out) == [("audio", "aac"), ("subtitle", "subrip")]
    sub = next(s for s in probe(out).streams if s.type == "subtitle")
    assert sub.language == "eng"
    with av.open(str(out)) as c:
        texts = [bytes(p) for p in c.demux(c.streams.subtitles[0]) if p.size]
    assert texts == [b"hello", b"world"]


def test_styled_subtitles_become_mov_text_and_the_font_is_left_out(tmp_path: Path, capsys) -> None:
    src = Path(__file__).resolve().parents[1] / "samples" / "clip.mkv"  # ASS + a font
    out = tmp_path / "clip.mp4"
    code, _, err = upscale(capsys, src, out)
    assert code == 2 and err.strip() == (
        "vidsr: error: .mp4 cannot carry a stream of clip.mkv: #3 attachment (font/ttf, "
        "Aileron-Regular.ttf): .mp4 cannot carry attachments (fonts) - write .mkv, or pass "
        "--drop-unsupported to leave it out"
    )
    code, _, err = upscale(capsys, src, out, "--drop-unsupported")
    assert code == 0, err
    assert "vidsr: warning: #2 subtitle (ass, eng, 'English (styled)') becomes mov_text: " in err
    assert (
        "vidsr: warning: leaving out 1 stream(s) .mp4 cannot carry: #3 attachment (font/ttf, "
        "Aileron-Regular.ttf)"
    ) in err
    assert [t for t in streams(out) if t[0] != "data"] == [
        ("audio", "opus"),
        ("subtitle", "mov_text"),
    ]
    assert len(probe(out).chapters) == 2


def test_a_timecode_track_stays_in_mov_and_is_refused_for_mkv(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["tmcd"]
    out = tmp_path / "camera.mov"
    code, _, err = upscale(capsys, src, out)
    assert code == 0, err
    o = probe(out)
    assert [(s.type, s.codec, s.timecode) for s in o.streams] == [
        ("audio", "pcm_s16le", None),
        ("data", "tmcd", "01:00:00:00"),
    ]
    mkv = tmp_path / "camera.mkv"
    code, _, err = upscale(capsys, src, mkv)
    assert code == 2 and err.strip() == (
        "vidsr: error: .mkv cannot carry a stream of camera.mov: #2 data (tmcd, eng): .mkv "
        "cannot carry a QuickTime timecode track - write .mov, or pass --drop-unsupported to "
        "leave it out"
    )
    assert not mkv.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["camera.mov"]
    code, _, err = upscale(capsys, src, mkv, "--drop-unsupported")
    assert code == 0, err
    assert "leaving out 1 stream(s) .mkv cannot carry: #2 data (tmcd, eng)" in err
    assert streams(mkv) == [("audio", "pcm_s16le")]


# --- 5. WebM ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_webm_to_webm_with_vp9(corpus: dict[str, Path], tmp_path: Path, capsys) -> None:
    src = corpus["webm"]
    out = tmp_path / "clip.x4.webm"
    code, _, err = upscale(capsys, src, out, "--codec", "libvpx-vp9")
    assert code == 0, err
    o = probe(out)
    assert (o.video.codec, o.video.frame_count) == ("vp9", 24)
    assert streams(out) == [("audio", "opus")]
    assert worst_ms(times(out), times(src)) == 0


def test_webm_refuses_a_video_codec_it_cannot_hold(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from vidsr.media.remux import video_codec_of

    assert [video_codec_of(e) for e in ("libvpx-vp9", "libsvtav1", "vp9", "ffv1")] == [
        "vp9",
        "av1",
        "vp9",
        "ffv1",
    ]
    code, _, err = upscale(capsys, corpus["webm"], tmp_path / "o.webm", "--codec", "libx264")
    assert code == 2 and err.strip() == (
        "vidsr: error: the new video cannot go in .webm: .webm holds VP8, VP9 or AV1 video only, "
        "not h264 (libx264); choose another --codec (libvpx-vp9 or libsvtav1 for .webm), or "
        "write .mkv or .mp4"
    )


# --- 6. alpha -------------------------------------------------------------------------------


def test_alpha_is_dropped_with_a_warning_and_its_tag_cleared(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["alpha"]
    assert probe(src).video.has_alpha
    code, out, _ = run_cli(capsys, "probe", src)
    assert "warning:  the source has an alpha channel" in out
    dst = tmp_path / "alpha.mkv"
    code, _, err = upscale(capsys, src, dst, "--codec", "ffv1")
    assert code == 0, err
    assert err.count("vidsr: warning: the source has an alpha channel") == 1
    o = probe(dst).video
    assert not o.has_alpha and o.frame_count == 24
    assert not any(k.lower() == "alpha_mode" for k in o.metadata)


# --- 7. damage libav only logs --------------------------------------------------------------


def test_damage_libav_only_logs_is_refused_or_counted(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    src = corpus["damaged"]
    out = tmp_path / "d.mkv"
    code, _, err = upscale(capsys, src, out, "--codec", "ffv1")
    assert code == 3, err
    lines = [line for line in err.splitlines() if line.startswith("vidsr:")]
    assert len(lines) == 1 and lines[0].startswith(
        f"vidsr: error: {src}: frame 10 (0.417 s) is damaged: slice CRC mismatch"
    )
    assert lines[0].endswith(
        "the file is damaged (--ignore-errors upscales such frames as decoded)"
    )
    assert not out.exists() and not list(tmp_path.glob(".*part*"))
    code, stdout, err = upscale(capsys, src, out, "--codec", "ffv1", "--ignore-errors", "--json")
    assert code == 0, err
    done = json_events(stdout)[-1]
    assert done["event"] == "done" and done["frames"] == 24
    assert len(done["damaged"]) == 1 and done["damaged"][0].startswith("frame 10: slice CRC")
    assert probe(out).video.frame_count == 24


# --- 8. old formats in a batch folder -------------------------------------------------------


def test_batch_takes_old_formats_and_names_what_it_passed_over(
    corpus: dict[str, Path], tmp_path: Path, capsys
) -> None:
    shows = tmp_path / "shows"
    shows.mkdir()
    R.rmvb(shows / "ep02.rmvb")
    R.ogm(shows / "ep03.ogm")
    shutil.copy(corpus["xvid"], shows / "ep01.divx")
    for name in ("notes.txt", "cover.jpg", "ep01.srt"):
        (shows / name).write_text("x")
    out, report = tmp_path / "out", tmp_path / "r.json"
    code, stdout, err = run_cli(
        capsys, "batch", shows, "-o", out, *CPU, "--codec", "ffv1", "--report", report
    )
    assert code == 0, err
    r = json.loads(report.read_text())
    assert [(f["rel"], f["status"], f["frames"]) for f in r["files"]] == [
        ("ep01.divx", "ok", 48),
        ("ep02.rmvb", "ok", 24),
        ("ep03.ogm", "ok", 24),
    ]
    assert sorted(Path(p).name for p in r["passed_over"]) == ["cover.jpg", "ep01.srt", "notes.txt"]
    assert "passed over as not video: 3 file(s): cover.jpg, ep01.srt, notes.txt" in stdout
    log = next(out.glob("vidsr-batch-*.log")).read_text()
    assert "passed over (not video): " in log and "notes.txt" in log
    for name, frames in (("ep02.rmvb", 24), ("ep03.ogm", 24)):
        assert ffmpeg_frames(shows / name) == frames
        made = out / f"{Path(name).stem}.realesr-animevideov3.x4.mkv"
        assert probe(made).video.frame_count == frames
        assert worst_ms(times(made), times(shows / name)) <= 0.5


# --- 9. 16-bit RGBA PNG ---------------------------------------------------------------------


def test_a_16_bit_rgba_png_stays_16_bit(tmp_path: Path, capsys) -> None:
    from vidsr.media.image import read_image

    src = tmp_path / "art.png"
    px = R.png16_rgba(src)
    out = tmp_path / "art.x4.png"
    code, _, err = run_cli(capsys, "upscale", src, "-o", out, *CPU)
    assert code == 0, err
    head = out.read_bytes()[:26]
    assert (head[24], head[25]) == (16, 6)  # 16 bits, RGBA
    img = read_image(out)
    assert (img.mode, img.bits, img.pixels.shape) == ("RGBA", 16, (112, 160, 4))
    values = np.round(img.pixels * 65535).astype(np.int64)
    assert (values % 257).any()  # not 8-bit values scaled up
    # alpha is upscaled, not flattened: the source's left-to-right fall survives
    alpha = values[..., 3].mean(axis=0)
    assert alpha[0] > alpha[-1] and abs(alpha[0] - px[..., 3].max()) < 3000


# --- what probe warns about before any work -------------------------------------------------


def test_probe_warns_about_rgb_sources_and_refuses_size_changes(tmp_path: Path, capsys) -> None:
    rgb = tmp_path / "rgb.mkv"
    R.ffmpeg(*R.moving(seconds=0.5), "-c:v", "ffv1", "-pix_fmt", "gbrp", rgb)
    code, out, _ = run_cli(capsys, "probe", rgb)
    pix = probe(rgb).video.pix_fmt  # ffv1 stores gbrp as bgr0
    assert f"warning:  the source is RGB ({pix}): it is written as yuv444p (YUV)" in out
    # A TV capture whose picture size changes mid-stream (two transport streams joined)
    a, b, ts = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "capture.ts"
    R.ffmpeg(*R.moving(64, 36, seconds=1), "-c:v", "libx264", "-preset", "veryfast", a)
    R.ffmpeg(*R.moving(80, 48, seconds=1), "-c:v", "libx264", "-preset", "veryfast",
             "-output_ts_offset", "2", b)  # fmt: skip
    ts.write_bytes(a.read_bytes() + b.read_bytes())
    code, out, _ = run_cli(capsys, "probe", ts)
    assert code == 0 and "picture size changes mid-stream (64x36 -> 80x48 at" in out
    code, _, err = run_cli(capsys, "upscale", ts, "-o", tmp_path / "o.mkv", *CPU)
    assert code == 3 and err.count("\n") == 1
    assert "the picture size changes mid-stream (64x36 -> 80x48 at 1.9" in err
    assert not (tmp_path / "o.mkv").exists()


def test_mpeg2_repeat_field_flags_are_counted() -> None:
    from vidsr.media.probe import _mpeg2_flags

    def extension(structure: int, rff: int, progressive: int) -> bytes:
        bits = (8 << 36) | (structure << 16) | (rff << 9) | (progressive << 7)
        return b"\x00\x00\x01\xb5" + bits.to_bytes(5, "big")

    packet = extension(3, 1, 1) + b"\x00" * 9 + extension(3, 0, 1) + extension(1, 0, 0)
    assert _mpeg2_flags(packet) == (3, 1, 1)  # pictures, repeat_first_field, interlaced
