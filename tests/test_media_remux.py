"""Encode (ffv1, lossless) + remux keeps frames, timing vs audio, every stream, tags and colour."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import GOOD_CLIPS

from vidsr.errors import PipelineError
from vidsr.media import colour
from vidsr.media.decode import decode_frames
from vidsr.media.encode import VideoEncoder
from vidsr.media.probe import MediaInfo, probe
from vidsr.media.remux import check_container_support, plan_streams, remux


def _encode(src: Path, info: MediaInfo, out: Path, **kwargs) -> None:
    with VideoEncoder.from_source(out, info, **kwargs) as enc:
        for frame in decode_frames(src, info=info):
            enc.write(frame.rgb, frame.pts)


def _packets(path: Path) -> dict[int, list[tuple[Fraction | None, str]]]:
    """stream index -> [(time, md5 of payload)] for every packet with data."""
    out: dict[int, list[tuple[Fraction | None, str]]] = {}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size:
                t = p.pts * p.time_base if p.pts is not None else None
                out.setdefault(p.stream.index, []).append((t, hashlib.md5(bytes(p)).hexdigest()))
    return out


def _first_audio_time(path: Path, info: MediaInfo) -> Fraction:
    audio = [s.index for s in info.streams if s.type == "audio"]
    if not audio:
        return Fraction(0)  # no audio: compare absolute times
    return _packets(path)[audio[0]][0][0]


def _norm_lang(lang: str | None) -> str | None:
    return None if lang in (None, "und") else lang


@pytest.fixture(scope="module")
def remuxed(media_clips, tmp_path_factory) -> dict[str, tuple[MediaInfo, MediaInfo, Path]]:
    """Every good clip through decode -> ffv1 video-only mkv -> remux to mkv, once."""
    folder = tmp_path_factory.mktemp("remuxed")
    done = {}
    for name in GOOD_CLIPS:
        src = media_clips[name]
        info = probe(src)
        video_only = folder / f"{name}.video.mkv"
        _encode(src, info, video_only, codec="ffv1")
        out = folder / f"{name}.out.mkv"
        remux(video_only, src, out, info=info)
        done[name] = (info, probe(out), out)
    return done


@pytest.mark.parametrize("name", GOOD_CLIPS)
def test_frames_and_times_relative_to_audio(media_clips, remuxed, name):
    info, out, out_path = remuxed[name]
    src = media_clips[name]
    assert out.video.frame_count == info.video.frame_count
    a_src, a_out = _first_audio_time(src, info), _first_audio_time(out_path, out)
    src_t = [info.video.frame_time(i) - a_src for i in range(info.video.frame_count)]
    out_t = [out.video.frame_time(i) - a_out for i in range(out.video.frame_count)]
    tick = out.video.time_base  # mkv: 1 ms
    if info.format.startswith("matroska"):
        assert out_t == src_t  # same time base: exactly the same times
    else:
        # rounded to the output's 1 ms grid, once for the video and once for the audio
        assert max(abs(a - b) for a, b in zip(src_t, out_t, strict=True)) <= tick
    half_frame = 1 / (2 * info.video.avg_rate)
    assert all(abs(a - b) < half_frame for a, b in zip(src_t, out_t, strict=True))
    assert out.video.is_vfr == info.video.is_vfr


def test_late_video_keeps_its_half_second(remuxed):
    _, out, path = remuxed["late_video"]
    audio = _packets(path)[1]
    assert audio[0][0] == 0
    assert out.video.frame_time(0) == Fraction(1, 2)


def test_mpegts_offset_kept(remuxed, media_clips):
    info, out, path = remuxed["ts"]
    gap_src = info.video.frame_time(0) - _first_audio_time(media_clips["ts"], info)
    gap_out = out.video.frame_time(0) - _first_audio_time(path, out)
    assert gap_src > 0 and abs(gap_out - gap_src) <= Fraction(1, 1000)


@pytest.mark.parametrize("name", GOOD_CLIPS)
def test_streams_metadata_and_bitexact_copies(media_clips, remuxed, name):
    info, out, out_path = remuxed[name]

    def rows(i: MediaInfo):
        return [
            (
                s.type,
                s.codec,
                _norm_lang(s.language),
                s.title,
                s.dispositions,
                s.filename,
                s.mimetype,
                s.is_cover_art,
            )
            for s in i.streams
        ]

    assert rows(out) == rows(info)
    assert out.title == info.title
    assert [(c.start, c.end, c.title) for c in out.chapters] == [
        (c.start, c.end, c.title) for c in info.chapters
    ]
    assert out.video.title == info.video.title
    assert _norm_lang(out.video.language) == _norm_lang(info.video.language)
    assert out.video.dispositions == info.video.dispositions
    # audio and subtitles: every packet's bytes, in order
    src_p, out_p = _packets(media_clips[name]), _packets(out_path)
    for s_src, s_out in zip(info.streams, out.streams, strict=True):
        if s_src.type in ("audio", "subtitle"):
            assert [h for _, h in out_p[s_out.index]] == [h for _, h in src_p[s_src.index]]


def test_attachments_and_cover_art_bytes(media_clips, remuxed):
    path = remuxed["rich"][2]

    def attachment_bytes(p: Path) -> dict[str, bytes]:
        found = {}
        with av.open(str(p)) as c:
            for s in c.streams:
                if s.type == "attachment":
                    found[s.metadata["filename"]] = bytes(s.data)
                elif s.type == "video" and s.disposition & av.stream.Disposition.attached_pic:
                    found[s.metadata.get("filename", "cover")] = next(
                        bytes(pk) for pk in c.demux(s) if pk.size
                    )
        return found

    src_bytes, out_bytes = attachment_bytes(media_clips["rich"]), attachment_bytes(path)
    assert set(src_bytes) == {"Dummy.ttf", "cover.png"}
    assert out_bytes == src_bytes


@pytest.mark.parametrize("name", GOOD_CLIPS)
def test_colour_depth_rotation_and_pixels(media_clips, remuxed, name):
    info, out, path = remuxed[name]
    v, o = info.video, out.video
    assert o.colour == colour.output_tags(
        v.colour, width=v.width, height=v.height, pix_fmt=v.pix_fmt
    )
    assert (o.matrix, o.range) == (v.matrix, v.range)
    assert o.bit_depth == v.bit_depth and o.pix_fmt == v.pix_fmt  # ffv1 keeps the format
    assert o.rotation == v.rotation
    assert (o.width, o.height, o.sample_aspect_ratio) == (v.width, v.height, v.sample_aspect_ratio)
    # the picture is the same picture (only the 4:2:0 chroma round trip differs)
    n = min(3, v.frame_count)
    src = [f.rgb for f in decode_frames(media_clips[name], 0, n, info=info)]
    new = [f.rgb for f in decode_frames(path, 0, n, info=out)]
    for a, b in zip(src, new, strict=True):
        peak = 65535.0 if a.dtype == np.uint16 else 255.0
        mse = np.mean((a.astype(np.float64) / peak - b.astype(np.float64) / peak) ** 2)
        assert 10 * np.log10(1 / mse) > 22  # testsrc2 at 64x36 is nearly all chroma edges


def test_mp4_output_with_x264(media_clips, tmp_path):
    src = media_clips["rotated"]
    info = probe(src)
    video_only = tmp_path / "v.mp4"  # an mp4 intermediate keeps the source time base exactly
    _encode(src, info, video_only, codec="libx264", preset="ultrafast")
    out = tmp_path / "out.mp4"
    remux(video_only, src, out, info=info)
    o = probe(out)
    assert o.video.frame_count == info.video.frame_count and o.video.rotation == 90
    a_src, a_out = _first_audio_time(src, info), _first_audio_time(out, o)
    assert [o.video.frame_time(i) - a_out for i in range(o.video.frame_count)] == [
        info.video.frame_time(i) - a_src for i in range(info.video.frame_count)
    ]
    assert [h for _, h in _packets(out)[1]] == [h for _, h in _packets(src)[1]]


def test_check_container_support(media_clips):
    rich = probe(media_clips["rich"])
    assert check_container_support(rich, ".mkv", "ffv1") == []
    # ASS and SRT become mov_text in MP4; the font attachment cannot be carried
    problems = check_container_support(rich, ".mp4", "h264")
    assert len(problems) == 1 and "attachments" in problems[0], problems
    plans = {p.stream.index: p for p in plan_streams(rich, ".mp4")}
    assert [(plans[i].action, plans[i].codec) for i in (3, 4)] == [
        ("convert", "mov_text"),
        ("convert", "mov_text"),
    ]
    assert "styling" in plans[3].note and not plans[4].note  # ASS loses its styling, SRT not
    assert check_container_support(rich, "mp4", "h264", exclude=[5]) == []
    assert any(
        "ffv1" in p for p in check_container_support(probe(media_clips["cfr"]), ".mp4", "ffv1")
    )
    assert check_container_support(rich, ".avi")[0].startswith(".avi outputs are not supported")
    webm = check_container_support(probe(media_clips["cfr"]), ".webm", "h264")
    assert len(webm) == 2  # h264 video and aac audio
    # encoders are checked by the codec they write
    assert check_container_support(probe(media_clips["cfr"]), ".webm", "libvpx-vp9")[0].startswith(
        "#1 audio (aac"
    )


def test_remux_refuses_and_leaves_nothing(media_clips, tmp_path):
    src = media_clips["rich"]
    info = probe(src)
    video_only = tmp_path / "v.mkv"
    _encode(src, info, video_only, codec="ffv1")
    out = tmp_path / "out.mp4"
    with pytest.raises(PipelineError, match="cannot carry attachments"):
        remux(video_only, src, out, info=info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mkv"]


def test_remux_excluding_streams(media_clips, tmp_path):
    src = media_clips["rich"]
    info = probe(src)
    video_only = tmp_path / "v.mkv"
    _encode(src, info, video_only, codec="libx264", preset="ultrafast")
    out = tmp_path / "out.mp4"
    remux(video_only, src, out, info=info, exclude=[3, 4, 5])
    o = probe(out)
    assert [(s.type, s.codec) for s in o.copied_streams] == [
        ("audio", "aac"),
        ("audio", "flac"),
        ("video", "png"),
    ]
    # leaving out only what MP4 cannot carry: the subtitles come as mov_text
    converted = tmp_path / "converted.mp4"
    remux(video_only, src, converted, info=info, drop_unsupported=True)
    c = probe(converted)
    assert [(s.type, s.codec) for s in c.copied_streams] == [
        ("audio", "aac"),
        ("audio", "flac"),
        ("subtitle", "mov_text"),
        ("subtitle", "mov_text"),
        ("video", "png"),
    ]
    assert [s.is_chapter_track for s in o.streams].count(True) == 1  # how MP4 keeps chapters
    assert o.cover_art and o.title == "Factory clip" and len(o.chapters) == 2
    assert [(s.language, s.title) for s in o.streams[:2]] == [
        ("eng", "Stereo"),
        ("jpn", "Commentary"),
    ]
    assert o.video.title == "Main picture"
    # and that MP4 back to mkv: the chapter track is not copied, the chapters are
    again = tmp_path / "again.mkv"
    remux(video_only, out, again, info=o)
    a = probe(again)
    assert [(s.type, s.codec) for s in a.streams] == [(s.type, s.codec) for s in o.copied_streams]
    assert [c.title for c in a.chapters] == ["Opening", "Ending"]


def test_shifted_video_only_file_is_put_back(media_clips, tmp_path):
    # If a muxer moved the video-only file's first frame (say, to 0), remux shifts it back
    # with -itsoffset so that it still starts 0.5 s after the audio.
    src = media_clips["late_video"]
    info = probe(src)
    video_only = tmp_path / "v.mkv"
    with VideoEncoder.from_source(video_only, info, codec="ffv1") as enc:
        for frame in decode_frames(src, info=info):
            enc.write(frame.rgb, frame.pts - 500)
    assert probe(video_only).video.start_time == 0
    out = tmp_path / "out.mkv"
    remux(video_only, src, out, info=info)
    o = probe(out)
    assert o.video.frame_pts == info.video.frame_pts
    assert _packets(out)[1][0][0] == 0  # the audio did not move
