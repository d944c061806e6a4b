"""probe(): exact frame counts, timing facts, colour tags, streams; clear errors for bad inputs."""

from __future__ import annotations

from fractions import Fraction

import pytest
from media_factory import GOOD_CLIPS

from vidsr.errors import InputError
from vidsr.media import colour
from vidsr.media.decode import decode_frames, index_frames
from vidsr.media.probe import probe


@pytest.mark.parametrize("name", GOOD_CLIPS)
def test_frame_count_is_what_decodes(media_clips, name):
    info = probe(media_clips[name])
    frames = list(decode_frames(media_clips[name], info=info))
    assert info.video.frame_count == len(frames) > 0
    assert [f.pts for f in frames] == list(info.video.frame_pts)
    assert index_frames(media_clips[name]) == list(info.video.frame_pts)


def test_cfr_clip(media_clips):
    v = probe(media_clips["cfr"]).video
    assert (v.codec, v.width, v.height, v.pix_fmt, v.bit_depth) == ("h264", 64, 36, "yuv420p", 8)
    assert v.frame_count == 48 and v.avg_rate == 24 and not v.is_vfr
    assert v.time_base == Fraction(1, 1000)
    assert v.colour == colour.ColourTags(1, 1, 1, 1)  # bt709 everything, limited
    assert (v.matrix, v.range) == (colour.MATRIX_BT709, colour.RANGE_LIMITED)
    assert v.sample_aspect_ratio == 1 and v.rotation == 0 and v.start_offset == 0


def test_vfr_clip_is_vfr_and_counted_from_packets(media_clips):
    info = probe(media_clips["vfr"])
    v = info.video
    assert v.is_vfr
    assert v.frame_count == 40  # duration x rate would say 48
    assert round(info.duration * v.avg_rate) != v.frame_count
    deltas = {b - a for a, b in zip(v.frame_pts, v.frame_pts[1:], strict=False)}
    assert {20, 40} <= deltas and max(deltas) >= 99  # 40, 20 and ~100 ms gaps


def test_late_video_start_offset(media_clips):
    v = probe(media_clips["late_video"]).video
    assert v.start_time == Fraction(1, 2) and v.start_offset == Fraction(1, 2)


def test_editlist_mp4_counts_only_presented_frames(media_clips):
    import av

    with av.open(str(media_clips["editlist"])) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    v = probe(media_clips["editlist"]).video
    assert v.frame_count < len(packets)  # leading packets of the cut GOP are discarded
    assert v.frame_count == sum(1 for p in packets if not p.is_discard)
    assert v.start_time == 0


def test_mpegts_start(media_clips):
    info = probe(media_clips["ts"])
    assert info.format == "mpegts"
    assert info.start_time > 1  # ffmpeg's TS muxer starts at ~1.4 s
    assert info.video.time_base == Fraction(1, 90000)
    assert 0 < info.video.start_offset < Fraction(1, 24)  # video starts a bit after the audio


def test_hevc_10bit_tags(media_clips):
    v = probe(media_clips["hevc10"]).video
    assert (v.codec, v.pix_fmt, v.bit_depth) == ("hevc", "yuv420p10le", 10)
    assert v.colour.names() == {
        "primaries": "bt2020",
        "transfer": "arib-std-b67",
        "matrix": "bt2020nc",
        "range": "tv",
    }
    assert v.matrix == colour.MATRIX_BT2020_NCL


def test_odd_size_and_untagged_fallback(media_clips):
    v = probe(media_clips["odd"]).video
    assert (v.width, v.height) == (63, 35)
    assert v.colour.matrix == colour.MATRIX_UNSPECIFIED
    assert v.matrix == colour.MATRIX_SMPTE170M  # SD: BT.601
    assert v.range == colour.RANGE_LIMITED


def test_rotation(media_clips):
    assert probe(media_clips["rotated"]).video.rotation == 90
    assert probe(media_clips["cfr"]).video.rotation == 0


def test_rich_streams_chapters_title(media_clips):
    info = probe(media_clips["rich"])
    assert info.title == "Factory clip"
    assert [(c.start, c.end, c.title) for c in info.chapters] == [
        (0, 1, "Opening"),
        (1, 2, "Ending"),
    ]
    assert info.video.title == "Main picture"
    rows = [
        (s.type, s.codec, s.language, s.title, s.default, s.forced, s.is_cover_art)
        for s in info.streams
    ]
    assert rows == [
        ("audio", "aac", "eng", "Stereo", True, False, False),
        ("audio", "flac", "jpn", "Commentary", False, False, False),
        ("subtitle", "ass", "eng", "Styled", False, False, False),
        ("subtitle", "subrip", "fre", "Plain", False, True, False),
        ("attachment", None, None, None, False, False, False),
        ("video", "png", None, None, False, False, True),
    ]
    font, cover = info.streams[4], info.streams[5]
    assert (font.filename, font.mimetype) == ("Dummy.ttf", "application/x-truetype-font")
    assert (cover.filename, cover.mimetype) == ("cover.png", "image/png")
    assert info.cover_art == (cover,)
    assert not info.has_other_video


def test_single_frame(media_clips):
    info = probe(media_clips["single"])
    assert info.video.frame_count == 1 and not info.video.is_vfr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("garbage", "not a media file"),
        ("text", "not a video file"),
        ("audio_only", "no video stream"),
        ("undecodable", "none of its 6 video frames can be decoded"),
    ],
)
def test_bad_inputs_raise_input_error(media_clips, name, message):
    with pytest.raises(InputError, match=message) as err:
        probe(media_clips[name])
    assert "\n" not in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        probe(tmp_path / "nope.mkv")
    with pytest.raises(InputError, match="folder"):
        probe(tmp_path)
    with pytest.raises(InputError):
        index_frames(tmp_path / "nope.mkv")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        probe(empty)
