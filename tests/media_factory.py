"""Generate tiny test clips (64x36, a few dozen frames) for the media tests.

Every clip is made here from lavfi sources (``testsrc2`` moving pattern, ``sine`` tones) with
the ffmpeg binary that vidsr itself uses, so the tests need no media files in the repository.
``make_all(folder)`` builds every clip and returns ``{name: Path}``; ``CLIPS`` documents what
each one exercises. Deliberately independent of ``vidsr.media`` (plain ``subprocess``), so a bug
there cannot hide in the fixtures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

W, H, FPS, SECONDS = 64, 36, 24, 2
VIDEO = f"testsrc2=size={W}x{H}:rate={FPS}:duration={SECONDS}"
X264_B = [
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-bf",
    "3",
    "-g",
    "12",
    "-keyint_min",
    "12",
    "-x264-params",
    "b-adapt=0:scenecut=0:log-level=error",
    "-pix_fmt",
    "yuv420p",
]
# ffmpeg 9 takes colour tags from the frames: set them with setparams, not -color_* options.
TAG_709 = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
TAG_2020 = "setparams=color_primaries=bt2020:color_trc=arib-std-b67:colorspace=bt2020nc:range=tv"

FONT_MIMETYPE = "application/x-truetype-font"

ASS_TEXT = """[Script Info]
ScriptType: v4.00+
PlayResX: 64
PlayResY: 36

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Dummy,10,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,1,1,1,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.20,0:00:00.90,Default,,0,0,0,,first line
Dialogue: 0,0:00:01.00,0:00:01.80,Default,,0,0,0,,second line
"""

SRT_TEXT = """1
00:00:00,100 --> 00:00:00,800
hello

2
00:00:01,000 --> 00:00:01,700
world
"""

CHAPTERS = """;FFMETADATA1
title=Factory clip

[CHAPTER]
TIMEBASE=1/1000
START=0
END=1000
title=Opening

[CHAPTER]
TIMEBASE=1/1000
START=1000
END=2000
title=Ending
"""


def ffmpeg_exe() -> str:
    exe = os.environ.get("VIDSR_FFMPEG")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # pragma: no cover - fallback for machines without the wheel
        found = shutil.which("ffmpeg")
        if not found:
            raise RuntimeError("no ffmpeg binary for the media factory") from None
        return found


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly; raise with its stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += [str(a) for a in args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {cmd}\n{proc.stderr}")


def _lavfi_video(spec: str = VIDEO) -> list[str]:
    return ["-f", "lavfi", "-i", spec]


def _lavfi_audio(freq: int = 440, seconds: float = SECONDS) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000:duration={seconds}"]


# --- the clips -------------------------------------------------------------------------------


def cfr_x264(out: Path) -> None:
    """CFR 24 fps H.264 with B-frames (GOP 12), tagged BT.709 limited, AAC audio, in mkv."""
    ffmpeg(
        *_lavfi_video(), *_lavfi_audio(), "-vf", TAG_709, *X264_B, "-c:a", "aac", "-b:a", "32k", out
    )


def vfr(out: Path) -> None:
    """VFR mkv: 40 frames, 40 ms apart for the first 20, then 20 ms and 100 ms gaps; FLAC audio."""
    expr = r"if(lt(N\,20)\,N*0.04\,if(lt(N\,30)\,0.8+(N-20)*0.02\,1.0+(N-30)*0.1))/TB"
    ffmpeg(
        *_lavfi_video(f"testsrc2=size={W}x{H}:rate=25:duration=1.6"),
        *_lavfi_audio(seconds=2),
        "-vf",
        f"settb=1/1000,setpts={expr}",
        "-fps_mode",
        "passthrough",
        "-enc_time_base:v",
        "1/1000",
        *X264_B,
        "-c:a",
        "flac",
        out,
    )


def late_video(out: Path) -> None:
    """The video starts 0.5 s after the audio (audio at 0): the A/V offset trap."""
    ffmpeg(
        "-itsoffset",
        "0.5",
        *_lavfi_video(),
        *_lavfi_audio(seconds=2.5),
        "-map",
        "0:v",
        "-map",
        "1:a",
        *X264_B,
        "-c:a",
        "flac",
        out,
    )


def editlist_mp4(out: Path) -> None:
    """MP4 cut mid-GOP with stream copy: an edit list; leading packets are marked discard."""
    full = out.with_name(out.stem + ".full.mp4")
    ffmpeg(
        *_lavfi_video(f"testsrc2=size={W}x{H}:rate={FPS}:duration=3"),
        *_lavfi_audio(seconds=3),
        *X264_B,
        "-g",
        "24",
        "-c:a",
        "aac",
        "-b:a",
        "32k",
        full,
    )
    ffmpeg("-ss", "0.3", "-i", full, "-c", "copy", out)
    full.unlink()


def ts_offset(out: Path) -> None:
    """MPEG-TS (starts at 1.4 s as ffmpeg's muxer writes it) with MP2 audio."""
    ffmpeg(*_lavfi_video(), *_lavfi_audio(), *X264_B, "-c:a", "mp2", "-b:a", "64k", out)


def hevc10(out: Path) -> None:
    """10-bit HEVC (open GOP), tagged BT.2020 / HLG, limited range, no audio."""
    ffmpeg(
        *_lavfi_video(f"testsrc2=size={W}x{H}:rate={FPS}:duration=1.5"),
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        "log-level=error:keyint=12:min-keyint=12:open-gop=1:bframes=3:scenecut=0",
        "-vf",
        TAG_2020,
        out,
    )


def odd_size(out: Path) -> None:
    """63x35 VP9 4:2:0 (odd luma size, rounded-up chroma planes), untagged, in mkv."""
    ffmpeg(
        *_lavfi_video(f"testsrc2=size={W}x{H}:rate={FPS}:duration=1"),
        "-vf",
        "crop=63:35:0:0:exact=1",
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "12",
        out,
    )


def rotated(out: Path) -> None:
    """MP4 with a display matrix rotating 90 degrees (counter-clockwise) and AAC audio."""
    plain = out.with_name(out.stem + ".plain.mp4")
    ffmpeg(*_lavfi_video(), *_lavfi_audio(), *X264_B, "-c:a", "aac", "-b:a", "32k", plain)
    ffmpeg("-display_rotation:v:0", "90", "-i", plain, "-c", "copy", out)
    plain.unlink()


def rich_mkv(out: Path) -> None:
    """Two audio tracks, ASS + SRT subtitles, a font attachment, PNG cover art, chapters, title,
    per-stream language/title/default/forced flags."""
    work = out.parent
    ass = work / "rich.ass"
    srt = work / "rich.srt"
    meta = work / "rich.ffmeta"
    font = work / "Dummy.ttf"
    cover = work / "cover.png"
    ass.write_text(ASS_TEXT)
    srt.write_text(SRT_TEXT)
    meta.write_text(CHAPTERS)
    # Any bytes do: nothing renders it; only the bytes and the mimetype must survive.
    font.write_bytes(b"\x00\x01\x00\x00" + bytes(range(256)) * 4)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=1", "-frames:v", "1", cover)
    ffmpeg(
        *_lavfi_video(),
        *_lavfi_audio(440),
        *_lavfi_audio(880),
        "-i",
        ass,
        "-i",
        srt,
        "-i",
        meta,
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-map",
        "3:s",
        "-map",
        "4:s",
        "-map_metadata",
        "5",
        "-map_chapters",
        "5",
        *X264_B,
        "-c:a:0",
        "aac",
        "-b:a:0",
        "32k",
        "-c:a:1",
        "flac",
        "-c:s:0",
        "ass",
        "-c:s:1",
        "srt",
        "-metadata",
        "title=Factory clip",
        "-metadata:s:v:0",
        "language=und",
        "-metadata:s:v:0",
        "title=Main picture",
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:0",
        "title=Stereo",
        "-metadata:s:a:1",
        "language=jpn",
        "-metadata:s:a:1",
        "title=Commentary",
        "-metadata:s:s:0",
        "language=eng",
        "-metadata:s:s:0",
        "title=Styled",
        "-metadata:s:s:1",
        "language=fre",
        "-metadata:s:s:1",
        "title=Plain",
        "-disposition:a:0",
        "default",
        "-disposition:a:1",
        "0",
        "-disposition:s:0",
        "0",
        "-disposition:s:1",
        "forced",
        "-attach",
        font,
        "-metadata:s:t:0",
        f"mimetype={FONT_MIMETYPE}",
        "-attach",
        cover,
        "-metadata:s:t:1",
        "mimetype=image/png",
        "-metadata:s:t:1",
        "filename=cover.png",
        out,
    )
    for p in (ass, srt, meta, font, cover):
        p.unlink()


def no_audio(out: Path) -> None:
    """Video only, x264 in mkv."""
    ffmpeg(*_lavfi_video(f"testsrc2=size={W}x{H}:rate={FPS}:duration=1"), *X264_B, out)


def single_frame(out: Path) -> None:
    """Exactly one frame, with audio."""
    ffmpeg(
        *_lavfi_video(),
        *_lavfi_audio(seconds=0.5),
        "-frames:v",
        "1",
        *X264_B,
        "-c:a",
        "flac",
        out,
    )


def corrupt(out: Path) -> None:
    """x264 mkv (GOP 6) whose second keyframe's payload is junk (frames 6-11 undecodable), then
    truncated in the middle of a later packet. The container structure stays readable."""
    import av

    good = out.with_name(out.stem + ".good.mkv")
    ffmpeg(
        *_lavfi_video(f"testsrc2=size={W}x{H}:rate={FPS}:duration=1"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "6",
        "-x264-params",
        "log-level=error:scenecut=0",
        good,
    )
    with av.open(str(good)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(good.read_bytes())
    good.unlink()
    # mkv: packet.pos is the SimpleBlock body (track, timecode, flags = 4 bytes), then the frame;
    # keep the 4-byte NAL length so the damage is inside the slice data.
    pos, size = packets[6]
    start = pos + 4 + 4
    data[start : pos + 4 + size] = bytes((i * 37 + 11) % 256 for i in range(pos + 4 + size - start))
    pos, size = packets[20]
    out.write_bytes(bytes(data[: pos + 4 + size // 2]))


def undecodable(out: Path) -> None:
    """An x264 mkv whose every frame's payload is junk: a readable container, no picture."""
    import av

    good = out.with_name(out.stem + ".good.mkv")
    ffmpeg(*_lavfi_video(f"testsrc2=size={W}x{H}:rate={FPS}:duration=0.25"), *X264_B, good)
    with av.open(str(good)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(good.read_bytes())
    good.unlink()
    for pos, size in packets:
        start = pos + 4 + 4
        data[start : pos + 4 + size] = bytes(range(256)) * (
            (pos + 4 + size - start) // 256
        ) + bytes((pos + 4 + size - start) % 256)
    out.write_bytes(bytes(data))


def audio_only(out: Path) -> None:
    """FLAC audio in mka: no video stream at all."""
    ffmpeg(*_lavfi_audio(seconds=0.5), "-c:a", "flac", out)


def garbage(out: Path) -> None:
    """Random-looking bytes with a video extension."""
    out.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(20000)))


def text_file(out: Path) -> None:
    """A plain text file (ffmpeg's tty demuxer claims .txt files; probe must still refuse)."""
    out.write_text("This is not a video.\n" * 50)


#: name -> (file name, builder). The first group are real clips; the last are bad inputs.
CLIPS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "cfr": ("cfr_x264.mkv", cfr_x264),
    "vfr": ("vfr.mkv", vfr),
    "late_video": ("late_video.mkv", late_video),
    "editlist": ("editlist.mp4", editlist_mp4),
    "ts": ("offset.ts", ts_offset),
    "hevc10": ("hevc10.mkv", hevc10),
    "odd": ("odd.mkv", odd_size),
    "rotated": ("rotated.mp4", rotated),
    "rich": ("rich.mkv", rich_mkv),
    "no_audio": ("no_audio.mkv", no_audio),
    "single": ("single.mkv", single_frame),
    "corrupt": ("corrupt.mkv", corrupt),
    "undecodable": ("undecodable.mkv", undecodable),
    "audio_only": ("audio_only.mka", audio_only),
    "garbage": ("garbage.mp4", garbage),
    "text": ("notes.txt", text_file),
}

GOOD_CLIPS = (
    "cfr",
    "vfr",
    "late_video",
    "editlist",
    "ts",
    "hevc10",
    "odd",
    "rotated",
    "rich",
    "no_audio",
    "single",
)


def make(name: str, folder: Path) -> Path:
    """Build clip ``name`` into ``folder`` (once) and return its path."""
    file_name, builder = CLIPS[name]
    out = Path(folder) / file_name
    if not out.exists():
        builder(out)
    return out


def make_all(folder: Path) -> dict[str, Path]:
    """Build every clip into ``folder``; ``{name: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: make(name, folder) for name in CLIPS}
