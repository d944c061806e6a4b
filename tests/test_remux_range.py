"""remux with a time range: every other stream cut to the range, in sync with the new video.

Each source is made here with ffmpeg (64x48 H.264 at 24 fps with B-frames, 2 s = 48 frames),
its audio a 1 kHz tone that starts at exactly 1.0 s (so the A/V offset of a cut can be measured
on decoded samples), subtitles with events before, across, inside and after the range, and
chapters. The video-only file holds the source frames timed in the range, encoded with PyAV
at their source times, as the pipeline writes it.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import ffmpeg

from vidsr.errors import UsageError
from vidsr.media import remux as remux_module
from vidsr.media.decode import decode_frames
from vidsr.media.encode import VideoEncoder
from vidsr.media.probe import MediaInfo, probe
from vidsr.media.remux import remux, shift_timecode

F = Fraction
SRT = """1
00:00:00,100 --> 00:00:00,400
before

2
00:00:00,300 --> 00:00:00,800
across the start

3
00:00:00,900 --> 00:00:01,200
inside

4
00:00:01,300 --> 00:00:01,700
across the end

5
00:00:01,600 --> 00:00:01,900
after
"""
ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 64
PlayResY: 48

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Dummy,10,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,1,1,1,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.10,0:00:00.30,Default,,0,0,0,,styled before
Dialogue: 0,0:00:00.20,0:00:01.00,Default,,0,0,0,,styled across
Dialogue: 0,0:00:01.80,0:00:01.90,Default,,0,0,0,,styled after
"""
CHAPTERS = """;FFMETADATA1
title=Range clip

[CHAPTER]
TIMEBASE=1/1000
START=0
END=500
title=One

[CHAPTER]
TIMEBASE=1/1000
START=500
END=1200
title=Two

[CHAPTER]
TIMEBASE=1/1000
START=1200
END=2000
title=Three
"""
VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24:duration=2"]
TONE = ["-f", "lavfi", "-i", "aevalsrc=0.8*sin(2*PI*1000*t)*gte(t\\,1):s=48000:d=2"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "12", "-pix_fmt", "yuv420p"]
X264 += ["-x264-params", "log-level=error"]


def _subtitled(out: Path, audio: list[str], *, ass: bool = True) -> None:
    work = out.parent
    (work / "r.srt").write_text(SRT)
    (work / "r.ass").write_text(ASS)
    (work / "r.ffmeta").write_text(CHAPTERS)
    subs = ["-i", work / "r.srt"] + (["-i", work / "r.ass"] if ass else [])
    maps = ["-map", "0:v", "-map", "1:a", "-map", "2:s"] + (["-map", "3:s"] if ass else [])
    tags = ["-metadata:s:s:0", "language=fre", "-metadata:s:s:0", "title=Plain"]
    tags += ["-disposition:s:0", "forced", "-metadata:s:a:0", "language=eng"]
    if ass:
        tags += [
            "-c:s:1",
            "ass",
            "-metadata:s:s:1",
            "language=eng",
            "-metadata:s:s:1",
            "title=Styled",
        ]
    meta = len(subs) // 2 + 2
    ffmpeg(*VIDEO, *TONE, *subs, "-i", work / "r.ffmeta", *maps, "-map_metadata", meta,
           "-map_chapters", meta, *X264, *audio, *tags, out)  # fmt: skip


def _make_mkv_aac(out: Path) -> None:
    _subtitled(out, ["-c:a", "aac", "-b:a", "64k", "-c:s:0", "srt"])


def _make_mkv_opus(out: Path) -> None:
    _subtitled(out, ["-c:a", "libopus", "-b:a", "48k", "-c:s:0", "srt"])


def _make_mp4(out: Path) -> None:
    _subtitled(out, ["-c:a", "aac", "-b:a", "64k", "-c:s", "mov_text"], ass=False)


def _make_ts(out: Path) -> None:
    """MPEG-TS: the container starts at 1.4 s (ffmpeg's muxer delay)."""
    ffmpeg(*VIDEO, *TONE, *X264, "-c:a", "aac", "-b:a", "64k", out)


def _make_mov_timecode(out: Path) -> None:
    ffmpeg(*VIDEO, *TONE, *X264, "-c:a", "pcm_s16le", "-timecode", "01:00:00:00", out)


MAKERS = {
    "mkv_aac": ("aac.mkv", _make_mkv_aac),
    "mkv_opus": ("opus.mkv", _make_mkv_opus),
    "mp4": ("src.mp4", _make_mp4),
    "ts": ("src.ts", _make_ts),
    "mov_tc": ("camera.mov", _make_mov_timecode),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("range-sources")
    made = {}
    for name, (filename, make) in MAKERS.items():
        sub = folder / name
        sub.mkdir()
        make(sub / filename)
        made[name] = sub / filename
    return made


def _video_only(src: Path, info: MediaInfo, start: F, end: F | None, out: Path) -> list[F]:
    """Encode the source frames timed in [start, end) (from the container's start) at their
    source times into ``out``; their source times (absolute)."""
    v = info.video
    lo = info.start_time + start
    hi = None if end is None else info.start_time + end
    picked = [
        i
        for i, p in enumerate(v.frame_pts)
        if p * v.time_base >= lo and (hi is None or p * v.time_base < hi)
    ]
    with VideoEncoder.from_source(out, info, codec="libx264") as enc:
        for frame in decode_frames(src, picked[0], picked[-1] + 1, info=info):
            enc.write(frame.rgb, frame.pts)
    return [v.frame_time(i) for i in picked]


def _packets(path: Path) -> dict[int, list[tuple[F, F, bytes]]]:
    """stream index -> [(time, duration, payload)] of every packet with data, by time."""
    out: dict[int, list[tuple[F, F, bytes]]] = {}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size and p.pts is not None:
                item = (p.pts * p.time_base, (p.duration or 0) * p.time_base, bytes(p))
                out.setdefault(p.stream.index, []).append(item)
    return {i: sorted(ps, key=lambda x: x[0]) for i, ps in out.items()}


def _onset(path: Path, index: int) -> F:
    """When the tone starts in audio stream ``index``: the first decoded sample above 0.4."""
    with av.open(str(path)) as c:
        stream = c.streams[index]
        for frame in c.decode(stream):
            samples = np.abs(frame.to_ndarray()).max(axis=0)
            loud = np.flatnonzero(samples > 0.4)
            if loud.size:
                return frame.pts * frame.time_base + F(int(loud[0]), frame.sample_rate)
    raise AssertionError(f"{path}: no tone in stream {index}")


def _index(info: MediaInfo, kind: str) -> int:
    return next(s.index for s in info.streams if s.type == kind)


def _cut(sources, tmp_path, name, start, end, suffix=".mkv", **kwargs):
    src = sources[name]
    info = probe(src)
    video_only = tmp_path / f"video{'.mp4' if suffix in ('.mp4', '.mov') else '.mkv'}"
    times = _video_only(src, info, F(start), None if end is None else F(end), video_only)
    out = tmp_path / f"out{suffix}"
    remux(video_only, src, out, info=info, time_range=(F(start), end and F(end)), **kwargs)
    return src, info, times, out, probe(out)


def _video_times(o: MediaInfo) -> list[F]:
    return [o.video.frame_time(i) for i in range(o.video.frame_count)]


# --- Matroska ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mkv_aac", "mkv_opus"])
def test_mkv_range_cuts_every_stream_in_sync(sources, tmp_path, name):
    src, info, times, out, o = _cut(sources, tmp_path, name, "0.5", "1.5")
    lo = info.start_time + F(1, 2)
    # The video: 24 frames (12..35), each at its source time less the start (mkv: 1 ms ticks).
    assert len(times) == 24 and o.video.frame_count == 24
    assert _video_times(o) == [round((t - lo) * 1000) / F(1000) for t in times]
    assert o.video.start_time == 0
    # The audio: bit-exact packets from the first at or after the start to the last before the
    # end, each at its source time less the start.
    a_src, a_out = _index(info, "audio"), _index(o, "audio")
    source_packets = _packets(src)[a_src]
    kept = [(t, d, b) for t, d, b in source_packets if lo <= t < lo + 1]
    got = _packets(out)[a_out]
    assert [b for _, _, b in got] == [b for _, _, b in kept]
    assert [t for t, _, _ in got] == [t - lo for t, _, _ in kept]
    step = kept[0][1]  # one packet (21.3 ms AAC, 20 ms Opus)
    assert 0 <= got[0][0] < step  # starts within one packet of the video
    end = got[-1][0] + got[-1][1]
    assert abs(end - 1) < step  # ... and lasts the range
    # The A/V offset, measured on decoded samples: the tone starts at 1.0 s in the source, so
    # 0.5 s into the output (to the sample, less the 1 ms Matroska rounds times to).
    offset = _onset(out, a_out) - (_onset(src, a_src) - lo)
    assert abs(offset) <= F(1, 1000)


def test_mkv_range_subtitles_chapters_and_tags(sources, tmp_path):
    _, info, _, out, o = _cut(sources, tmp_path, "mkv_aac", "0.5", "1.5")
    packets = _packets(out)
    srt, ass = (s.index for s in o.streams if s.type == "subtitle")
    # The event showing at the start starts at 0 and keeps its end; the one across the end
    # stops at the end; those before and after are gone.
    assert [(t, d, b.decode()) for t, d, b in packets[srt]] == [
        (F(0), F(3, 10), "across the start"),
        (F(4, 10), F(3, 10), "inside"),
        (F(8, 10), F(2, 10), "across the end"),
    ]
    (t, d, b), *rest = packets[ass]
    assert (t, d, rest) == (F(0), F(5, 10), []) and b.decode().endswith("styled across")
    # Tags and dispositions of every stream, the container's title.
    assert [(s.type, s.codec, s.language, s.title, s.forced) for s in o.streams] == [
        (s.type, s.codec, s.language, s.title, s.forced) for s in info.streams
    ]
    assert o.title == "Range clip"
    # Chapters: those overlapping [0.5, 1.5), clipped and shifted ("One" ends at the start).
    assert [(c.start, c.end, c.title) for c in o.chapters] == [
        (F(0), F(7, 10), "Two"),
        (F(7, 10), F(1), "Three"),
    ]


def test_mkv_range_off_frame_and_to_the_end(sources, tmp_path):
    # A start between frames: the first frame (13, at 0.5417 s) lands 21.7 ms in; no end.
    _, info, times, out, o = _cut(sources, tmp_path, "mkv_aac", "0.52", None)
    lo = info.start_time + F(52, 100)
    assert o.video.frame_count == 35 == len(times)
    assert _video_times(o) == [round((t - lo) * 1000) / F(1000) for t in times]
    a = _packets(out)[_index(o, "audio")]
    assert 0 <= a[0][0] < a[0][1]
    assert [c.title for c in o.chapters] == ["Two", "Three"]
    assert o.chapters[-1].end == F(2) - F(52, 100)
    srt = next(s.index for s in o.streams if s.type == "subtitle")
    assert [b.decode() for _, _, b in _packets(out)[srt]] == [
        "across the start",
        "inside",
        "across the end",
        "after",
    ]


def test_ts_source_starting_late(sources, tmp_path):
    # MPEG-TS starts at 1.4 s: the range is from there, and so is the output's zero.
    src, info, times, out, o = _cut(sources, tmp_path, "ts", "0.5", "1.25")
    assert info.start_time > 1
    lo = info.start_time + F(1, 2)
    assert _video_times(o) == [round((t - lo) * 1000) / F(1000) for t in times]
    assert len(times) == 18
    a_out = _index(o, "audio")
    got = _packets(out)[a_out]
    assert 0 <= got[0][0] < got[0][1]
    offset = _onset(out, a_out) - (_onset(src, _index(info, "audio")) - lo)
    assert abs(offset) <= F(1, 1000)


def test_reading_from_before_the_range(sources, tmp_path, monkeypatch):
    # A long file's cuts seek to a margin before the start instead of reading it all: same
    # result (here the margins are shrunk to 0.3 s so that a 2 s clip seeks).
    monkeypatch.setattr(remux_module, "_SEEK_MARGIN", F(3, 10))
    monkeypatch.setattr(remux_module, "_SUBTITLE_MARGIN", F(3, 10))
    src, info, _, out, o = _cut(sources, tmp_path, "mkv_aac", "1", "2")
    lo = info.start_time + 1
    kept = [t - lo for t, _, _ in _packets(src)[_index(info, "audio")] if t >= lo]
    assert [t for t, _, _ in _packets(out)[_index(o, "audio")]] == kept
    srt = next(s.index for s in o.streams if s.type == "subtitle")
    assert [(t, b.decode()) for t, _, b in _packets(out)[srt]] == [
        (F(0), "inside"),
        (F(3, 10), "across the end"),
        (F(6, 10), "after"),
    ]


# --- MP4 / MOV ---------------------------------------------------------------------------------


def test_mp4_range_keeps_exact_ticks(sources, tmp_path):
    src, info, times, out, o = _cut(sources, tmp_path, "mp4", "0.5", "1.5", suffix=".mp4")
    lo = info.start_time + F(1, 2)
    # Video: exact (the source's ticks, shifted by exactly 0.5 s).
    assert _video_times(o) == [t - lo for t in times]
    a_src, a_out = _index(info, "audio"), _index(o, "audio")
    kept = [(t, b) for t, _, b in _packets(src)[a_src] if lo <= t < lo + 1]
    got = _packets(out)[a_out]
    assert [b for _, _, b in got] == [b for _, b in kept]
    # Shifted together, to the sample; where the audio starts is in the edit list, in the
    # movie time scale (the new video's, here 1/12288 s).
    tick = F(1, o.video.time_base.denominator)
    shift = got[0][0] - (kept[0][0] - lo)
    assert [t - shift for t, _, _ in got] == [t - lo for t, _ in kept]
    assert abs(shift) <= tick
    assert 0 <= got[0][0] < got[0][1]
    offset = _onset(out, a_out) - (_onset(src, a_src) - lo)
    assert abs(offset) <= tick
    # mov_text: the event across the start at 0; empty "gap" samples between events.
    sub = _index(o, "subtitle")
    shown = [(t, d, b[2:].decode()) for t, d, b in _packets(out)[sub] if len(b) > 2]
    assert shown == [
        (F(0), F(3, 10), "across the start"),
        (F(4, 10), F(3, 10), "inside"),
        (F(8, 10), F(2, 10), "across the end"),
    ]
    # Chapters, in the movie time scale.
    assert [c.title for c in o.chapters] == ["Two", "Three"]
    bounds = [x for c in o.chapters for x in (c.start, c.end)]
    want = [F(0), F(7, 10), F(7, 10), F(1)]
    assert all(abs(a - b) <= tick for a, b in zip(bounds, want, strict=True))


def test_mp4_start_between_ticks(sources, tmp_path):
    # 0.37 s is no whole number of the video's 1/12288 s ticks: the output's zero is the tick
    # before it, the video keeps exact spacing and whole ticks, the audio is shifted alike.
    src, info, times, out, o = _cut(sources, tmp_path, "mp4", "0.37", None, suffix=".mp4")
    tick = F(1, o.video.time_base.denominator)
    lo = info.start_time + F(37, 100)
    got = _video_times(o)
    assert [t - got[0] for t in got] == [t - times[0] for t in times]
    assert 0 <= got[0] - (times[0] - lo) < tick
    offset = _onset(out, _index(o, "audio")) - (_onset(src, _index(info, "audio")) - lo)
    assert abs(offset) <= tick


def test_mkv_source_to_mp4_converts_the_cut_subtitles(sources, tmp_path):
    _, info, times, out, o = _cut(sources, tmp_path, "mkv_aac", "0.5", "1.5", suffix=".mp4")
    assert [s.codec for s in o.streams if s.type == "subtitle"] == ["mov_text", "mov_text"]
    srt = next(s.index for s in o.streams if s.type == "subtitle")
    shown = [(t, b[2:].decode()) for t, _, b in _packets(out)[srt] if len(b) > 2]
    assert shown == [(F(0), "across the start"), (F(4, 10), "inside"), (F(8, 10), "across the end")]
    lo = info.start_time + F(1, 2)
    assert _video_times(o) == [t - lo for t in times]


def test_mov_timecode_moves_with_the_range(sources, tmp_path):
    _, info, times, _, o = _cut(sources, tmp_path, "mov_tc", "0.5", "1.5", suffix=".mov")
    assert [s.timecode for s in info.streams if s.type == "data"] == ["01:00:00:00"]
    assert [s.timecode for s in o.streams if s.type == "data"] == ["01:00:00:12"]
    lo = info.start_time + F(1, 2)
    assert _video_times(o) == [t - lo for t in times]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_range_with_no_events_keeps_the_tracks(sources, tmp_path, suffix):
    # [1.95 s, end): the last frame only; no subtitle event, no chapter starts there but the
    # last, the audio's last packets. Every track stays (empty where nothing is left).
    name = "mkv_aac" if suffix == ".mkv" else "mp4"
    _, info, times, out, o = _cut(sources, tmp_path, name, "1.95", None, suffix=suffix)
    assert len(times) == 1 and o.video.frame_count == 1
    assert [s.type for s in o.streams if s.type != "data"] == [
        s.type for s in info.streams if s.type != "data"
    ]
    packets = _packets(out)
    subtitles = [s.index for s in o.streams if s.type == "subtitle"]
    assert subtitles and all(i not in packets or packets[i][0][2] == b"\0\0" for i in subtitles)
    assert 0 < len(packets[_index(o, "audio")]) <= 3
    assert [c.title for c in o.chapters] == ["Three"]


def test_audio_that_ends_before_the_range(tmp_path):
    # The audio stops at 1 s, the range starts at 1.5 s: an empty audio track (MP4 leaves
    # it out: its muxer writes no track without samples).
    src = tmp_path / "short.mkv"
    tone = ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=1"]
    ffmpeg(*VIDEO, *tone, *X264, "-c:a", "aac", src)
    info = probe(src)
    for suffix in (".mkv", ".mp4"):
        video_only = tmp_path / f"v{suffix}"
        _video_only(src, info, F(3, 2), None, video_only)
        out = tmp_path / f"out{suffix}"
        remux(video_only, src, out, info=info, time_range=(F(3, 2), None))
        o = probe(out)
        assert o.video.frame_count == 12
        assert [s.type for s in o.streams] == (["audio"] if suffix == ".mkv" else [])
        assert list(_packets(out)) == [0]


# --- pieces -------------------------------------------------------------------------------------


def test_bad_ranges_are_refused(sources, tmp_path):
    src = sources["mkv_aac"]
    info = probe(src)
    video_only = tmp_path / "v.mkv"
    _video_only(src, info, F(0), F(1), video_only)
    for bad in ((F(-1), F(1)), (F(1), F(1)), (F(1), F(1, 2))):
        with pytest.raises(UsageError):
            remux(video_only, src, tmp_path / "o.mkv", info=info, time_range=bad)
    assert not (tmp_path / "o.mkv").exists()


def test_shift_timecode():
    ntsc = F(30000, 1001)
    assert shift_timecode("01:00:00:00", 12, F(24)) == "01:00:00:12"
    assert shift_timecode("00:00:59:23", 1, F(24)) == "00:01:00:00"
    assert shift_timecode("23:59:59:24", 1, F(25)) == "00:00:00:00"
    # Drop-frame: labels ;00 and ;01 are skipped each minute but every tenth.
    assert shift_timecode("00:00:59;29", 1, ntsc) == "00:01:00;02"
    assert shift_timecode("00:09:59;29", 1, ntsc) == "00:10:00;00"
    assert shift_timecode("00:00:00;00", 17982, ntsc) == "00:10:00;00"
    assert shift_timecode("not a timecode", 5, F(24)) == "not a timecode"


def _event(t: str, duration: str | None, text: str) -> tuple[F, av.Packet]:
    packet = av.Packet(text.encode())
    packet.time_base = F(1, 1000)
    packet.pts = packet.dts = round(F(t) * 1000)
    packet.duration = 0 if duration is None else round(F(duration) * 1000)
    return F(t), packet


def test_events_without_a_duration():
    # PGS/DVB-style: each display set shows until the next one (often an empty "clear").
    # The last one before the start may still be showing: it is kept, from the start.
    events = [
        _event("0.1", None, "old"),
        _event("0.3", None, "showing"),
        _event("0.7", None, "clear"),
        _event("0.9", "0.2", "timed"),
        _event("1.6", None, "late"),
    ]
    kept = remux_module._overlapping(events, F(1, 2), F(3, 2))
    assert [(bytes(p).decode(), start, end) for p, start, end in kept] == [
        ("showing", F(1, 2), None),
        ("clear", F(7, 10), None),
        ("timed", F(9, 10), F(11, 10)),
    ]
