"""Tiny files made the way real collections' files were made (old anime rips, DVDs, camera and
iTunes-style files, broken muxes), for tests/test_real_collection.py.

Each builder writes one file with the ffmpeg binary vidsr uses, and PyAV where a real file's
layout needs packets placed by hand:

- ``xvid_avi``: an MPEG-4 ASP (DivX 5 / Xvid) AVI with **packed B-frames** - each P-frame and
  the B-frame after it in one chunk, then a not-coded VOP (N-VOP) as a placeholder, DivX's
  ``DivX503b1393p`` user data in the header - and MP3 audio: how VirtualDub/DivX wrote them;
- ``dvd_vob`` / ``dvd_mpg``: anamorphic (16:9 on 4:3 storage, SAR 4:3) interlaced MPEG-2 in a
  DVD program stream with AC-3 audio and a DVD (bitmap) subtitle stream;
- ``container_aspect_mkv``: H.264 whose bitstream says square pixels while the Matroska track
  says 16:9 (mkvmerge's ``--aspect-ratio``, MakeMKV's display size);
- ``duplicate_times_mkv``: an intra-only stream where two frames share a timestamp (a bad
  remux of a VFR capture);
- ``mov_text_mp4``: iTunes-style MP4 with mov_text subtitles;
- ``timecode_mov``: a camera-style MOV with a QuickTime timecode (tmcd) track;
- ``vp9_opus_webm``, ``vp9_alpha_webm``;
- ``damaged_ffv1``: FFV1 with slice CRCs, one slice's bytes flipped (the decoder only logs it);
- ``rmvb`` / ``ogm``: RealMedia (RealVideo 2) and Ogg (Theora) files, as old collections hold;
- ``png16_rgba``: a 16-bit RGBA PNG;
- DVD/TV sources, each ``(folder, ...) -> Path``: ``interlaced_mpeg2`` (true interlaced, a
  camera's 59.94 fields woven, tt or bb), ``hard_telecine_mpeg2`` (2:3 pulldown burnt into
  29.97 interlaced frames, with its 23.976 lossless reference, ``film_reference``),
  ``soft_telecine_mpeg2`` (23.976 progressive pictures with DGPulldown's repeat_first_field
  flags, ``soft_pulldown``), ``anamorphic_dvd`` (720x480 with a 16:9 or 4:3 sequence header)
  and ``letterboxed`` (H.264 with black bars ``cropdetect`` finds exactly).

Video is 64x36 or 64x48, a second or two: every frame differs from the one before (a moving
pattern), so frame-order mistakes show in pixels.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from media_factory import ffmpeg_exe

# Every frame different from the last (the luma pattern shifts by 23 levels a frame).
MOVING = (
    "testsrc2=size={w}x{h}:rate={rate}:duration={seconds},"
    "geq=lum='mod(lum(X,Y)+N*23,256)':cb='cb(X,Y)':cr='cr(X,Y)'"
)


def ffmpeg(*args: str | Path) -> None:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))}: {proc.stderr.strip()}")


def moving(w: int = 64, h: int = 36, rate: str = "24", seconds: float = 2) -> list[str]:
    return ["-f", "lavfi", "-i", MOVING.format(w=w, h=h, rate=rate, seconds=seconds)]


def tone(seconds: float = 2, rate: int = 48000) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration={seconds}"]


# --- a DivX/Xvid AVI with packed B-frames --------------------------------------------------


class _Bits:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def read(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


def _vop_time_bits(data: bytes) -> int:
    """Bits of vop_time_increment, from the video object layer header in ``data``."""
    i = next(
        k
        for k in range(len(data) - 4)
        if data[k : k + 3] == b"\0\0\1" and 0x20 <= data[k + 3] <= 0x2F
    )
    b = _Bits(data, (i + 4) * 8)
    b.read(9)  # random_accessible_vol, video_object_type_indication
    if b.read(1):  # is_object_layer_identifier: verid, priority
        b.read(7)
    if b.read(4) == 15:  # aspect_ratio_info: an extended PAR
        b.read(16)
    if b.read(1):  # vol_control_parameters: chroma, low_delay, vbv parameters
        b.read(3)
        if b.read(1):
            b.read(79)
    b.read(3)  # shape, marker
    resolution = b.read(16)
    return max(1, (resolution - 1).bit_length())


def _vop(data: bytes, nbits: int) -> tuple[int, list[int], int]:
    """(coding type 0=I 1=P 2=B, modulo_time_base bits, vop_time_increment) of the VOP."""
    i = data.find(b"\0\0\1\xb6")
    b = _Bits(data, (i + 4) * 8)
    kind = b.read(2)
    modulo = []
    while True:
        modulo.append(b.read(1))
        if not modulo[-1]:
            break
    b.read(1)  # marker
    return kind, modulo, b.read(nbits)


def _nvop(modulo: list[int], increment: int, nbits: int) -> bytes:
    """A not-coded P-VOP at the given time: the placeholder a packed stream puts in the chunk
    of the frame whose VOP travelled early."""
    bits = [0, 1, *modulo, 1, *((increment >> (nbits - 1 - k)) & 1 for k in range(nbits)), 1, 0]
    bits.append(0)  # next_start_code() stuffing: a 0, then 1s to the byte boundary
    while len(bits) % 8:
        bits.append(1)
    out = bytearray(b"\0\0\1\xb6")
    out += bytes(int("".join(map(str, bits[k : k + 8])), 2) for k in range(0, len(bits), 8))
    return bytes(out)


def _pack(vops: list[bytes]) -> tuple[list[bytes], list[bool]]:
    """DivX's packed bitstream: one chunk per displayed frame - a reference VOP with the
    B-VOP that follows it in decode order, the other B-VOPs alone, then an N-VOP where the
    reference frame is shown. (chunks, keyframe flags)."""
    nbits = _vop_time_bits(vops[0])
    kinds = [_vop(v, nbits)[0] for v in vops]
    chunks: list[bytes] = []
    keys: list[bool] = []
    i = 0
    while i < len(vops):
        j = i + 1
        while j < len(vops) and kinds[j] == 2:
            j += 1
        bs = vops[i + 1 : j]
        if not bs:
            chunks.append(vops[i])
            keys.append(kinds[i] == 0)
        else:
            _kind, modulo, increment = _vop(vops[i], nbits)
            chunks += [vops[i] + bs[0], *bs[1:], _nvop(modulo, increment, nbits)]
            keys += [kinds[i] == 0] + [False] * len(bs)
        i = j
    return chunks, keys


def xvid_avi(out: Path, seconds: float = 2) -> Path:
    """MPEG-4 ASP with packed B-frames (DX50, DivX 5 user data) and MP3, in AVI."""
    work = out.with_suffix(".work.avi")
    mp3 = out.with_suffix(".work.mp3")
    ffmpeg(*moving(seconds=seconds), "-c:v", "mpeg4", "-vtag", "DX50", "-bf", "1", "-g", "12",
           "-flags", "+cgop", "-sc_threshold", "1000000000", "-q:v", "3", "-an", work)  # fmt: skip
    ffmpeg(*tone(seconds, 44100), "-c:a", "libmp3lame", "-b:a", "64k", mp3)
    with av.open(str(work)) as c:
        vops = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    first = vops[0]
    ud = first.find(b"\0\0\1\xb2")  # ffmpeg's user data -> DivX 5.03 build 1393, packed
    if ud >= 0:
        first = first[:ud] + b"\0\0\1\xb2DivX503b1393p" + first[first.find(b"\0\0\1\xb6", ud) :]
    vops[0] = first
    chunks, keys = _pack(vops)
    tb = Fraction(1, 24)
    with av.open(str(mp3)) as a, av.open(str(out), "w", format="avi") as o:
        v = o.add_stream("mpeg4", rate=24)
        v.width, v.height, v.pix_fmt = 64, 36, "yuv420p"
        v.codec_context.codec_tag = "DX50"
        v.time_base = tb
        ain = a.streams.audio[0]
        aout = o.add_stream_from_template(ain)
        audio = [p for p in a.demux(ain) if p.size]
        vi = ai = 0
        while vi < len(chunks) or ai < len(audio):
            vt = vi * tb if vi < len(chunks) else None
            at = audio[ai].pts * ain.time_base if ai < len(audio) else None
            if at is None or (vt is not None and vt <= at):
                p = av.Packet(chunks[vi])
                p.stream, p.time_base, p.pts, p.dts = v, tb, vi, vi
                p.is_keyframe = keys[vi]
                o.mux(p)
                vi += 1
            else:
                audio[ai].stream = aout
                o.mux(audio[ai])
                ai += 1
    work.unlink()
    mp3.unlink()
    return out


# --- DVD: anamorphic interlaced MPEG-2, AC-3, DVD subtitles ----------------------------------


def _spu(width: int = 16, height: int = 4, x: int = 8, y: int = 8) -> bytes:
    """A DVD subpicture: a ``width`` x ``height`` box of colour 1 at (x, y), shown ~1 s."""
    line = bytes([0x00, 0x01])  # RLE "colour 1 to the end of the line"
    top, bottom = line * ((height + 1) // 2), line * (height // 2)
    pixels = top + bottom
    x1, y1 = x + width - 1, y + height - 1
    xs = [x >> 4, ((x & 0xF) << 4) | (x1 >> 8), x1 & 0xFF]
    ys = [y >> 4, ((y & 0xF) << 4) | (y1 >> 8), y1 & 0xFF]
    coords = bytes([0x05, *xs, *ys])
    addresses = bytes([0x06]) + struct.pack(">HH", 4, 4 + len(top))
    show = bytes([0x01, 0x03, 0x32, 0x10, 0x04, 0xFF, 0xF0]) + coords + addresses + b"\xff"
    control = 4 + len(pixels)
    hide_at = control + 4 + len(show)
    body = pixels + struct.pack(">HH", 0, hide_at) + show
    body += struct.pack(">HH", 90, hide_at) + b"\x02\xff"  # hide after 90 x 1024/90000 s
    return struct.pack(">HH", 4 + len(body), control) + body


def dvd(out: Path, muxer: str = "dvd", seconds: float = 2) -> Path:
    """An NTSC-style DVD title: 16:9 MPEG-2 on 64x48 storage (SAR 4:3), interlaced top field
    first, AC-3 audio, a DVD subtitle stream; ``muxer`` ``dvd`` (a VOB as a DVD holds it,
    navigation packets included) or ``vob`` (the program stream alone, as an .mpg rip)."""
    work = out.with_suffix(".work.vob")
    ffmpeg(*moving(64, 48, "30000/1001", seconds), *tone(seconds),
           "-vf", "setfield=tff", "-c:v", "mpeg2video", "-aspect", "16:9", "-b:v", "800k",
           "-g", "15", "-bf", "2", "-flags", "+ildct+ilme", "-c:a", "ac3", "-b:a", "96k",
           "-f", "vob", work)  # fmt: skip
    spu = _spu()
    with av.open(str(work)) as src, av.open(str(out), "w", format=muxer) as o:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        vout, aout = o.add_stream_from_template(vin), o.add_stream_from_template(ain)
        sub = o.add_stream("dvdsub")
        sub.time_base = Fraction(1, 90000)
        cues = [Fraction(3, 10), Fraction(12, 10)]
        for p in src.demux(vin, ain):
            if p.dts is None:
                continue
            while cues and cues[0] <= p.dts * p.time_base:
                sp = av.Packet(spu)
                sp.stream, sp.time_base = sub, sub.time_base
                sp.pts = sp.dts = int(cues.pop(0) * 90000)
                o.mux(sp)
            p.stream = vout if p.stream.type == "video" else aout
            o.mux(p)
    work.unlink()
    return out


# --- the rest ---------------------------------------------------------------------------------


def container_aspect_mkv(out: Path) -> Path:
    """H.264 with square pixels in its bitstream, 16:9 on 64x48 only in the Matroska track."""
    work = out.with_suffix(".work.mkv")
    ffmpeg(*moving(64, 48, seconds=1), "-c:v", "libx264", "-preset", "veryfast", work)
    ffmpeg("-i", work, "-c", "copy", "-aspect", "16:9", out)
    work.unlink()
    return out


def duplicate_times_mkv(out: Path) -> tuple[Path, list[int]]:
    """An intra-only (MJPEG) Matroska stream of 12 frames where frames 4 and 5, and 8 and 9,
    share a timestamp (ms). Returns (path, the pts written)."""
    work = out.with_suffix(".work.mkv")
    ffmpeg(*moving(seconds=0.5), "-c:v", "mjpeg", "-q:v", "3", work)
    pts = [0, 42, 83, 125, 167, 167, 208, 250, 292, 292, 333, 375]
    with av.open(str(work)) as src, av.open(str(out), "w") as o:
        vin = src.streams.video[0]
        vout = o.add_stream_from_template(vin)
        vout.time_base = Fraction(1, 1000)
        for p, t in zip(list(src.demux(vin))[:12], pts, strict=False):
            if not p.size:
                continue
            p.stream, p.time_base, p.pts, p.dts = vout, Fraction(1, 1000), t, t
            o.mux(p)
    work.unlink()
    return out, pts


SRT = "1\n00:00:00,100 --> 00:00:00,800\nhello\n\n2\n00:00:01,000 --> 00:00:01,700\nworld\n"


def mov_text_mp4(out: Path) -> Path:
    """iTunes-style: H.264, AAC and mov_text subtitles (from an SRT), in MP4."""
    srt = out.with_suffix(".srt")
    srt.write_text(SRT)
    ffmpeg(*moving(), *tone(), "-i", srt, "-map", "0", "-map", "1", "-map", "2",
           "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-b:a", "64k",
           "-c:s", "mov_text", "-metadata:s:s:0", "language=eng", out)  # fmt: skip
    srt.unlink()
    return out


def timecode_mov(out: Path) -> Path:
    """A camera-style MOV: H.264, PCM audio and a timecode (tmcd) track from 01:00:00:00."""
    ffmpeg(*moving(seconds=1), *tone(1), "-c:v", "libx264", "-preset", "veryfast",
           "-c:a", "pcm_s16le", "-timecode", "01:00:00:00", out)  # fmt: skip
    return out


def vp9_opus_webm(out: Path) -> Path:
    ffmpeg(*moving(seconds=1), *tone(1), "-c:v", "libvpx-vp9", "-b:v", "200k",
           "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-b:a", "48k", out)  # fmt: skip
    return out


def vp9_alpha_webm(out: Path) -> Path:
    """VP9 with an alpha channel (yuva420p; WebM's ALPHA_MODE), as web animations come."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=24:duration=1,format=yuva420p,"
           "geq=lum='lum(X,Y)':cb='cb(X,Y)':cr='cr(X,Y)':a='if(lt(X,32),255,64)'",
           "-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-b:v", "200k",
           "-deadline", "realtime", "-cpu-used", "8", out)  # fmt: skip
    return out


def damaged_ffv1(out: Path, frame: int = 10) -> Path:
    """FFV1 (4 slices, slice CRCs, every frame a keyframe) with one byte of frame ``frame``'s
    slice data flipped: the decoder logs a CRC mismatch and still hands the frame out."""
    ffmpeg(*moving(seconds=1), "-c:v", "ffv1", "-level", "3", "-slices", "4", "-slicecrc", "1",
           "-g", "1", out)  # fmt: skip
    with av.open(str(out)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(out.read_bytes())
    pos, size = packets[frame]
    data[pos + size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def rmvb(out: Path) -> Path:
    """RealMedia: RealVideo 2 and AC-3 (a fansub-era .rmvb)."""
    ffmpeg(*moving(seconds=1), *tone(1), "-c:v", "rv20", "-b:v", "300k", "-c:a", "ac3",
           "-b:a", "64k", "-f", "rm", out)  # fmt: skip
    return out


def ogm(out: Path) -> Path:
    """Ogg with Theora video and Vorbis audio, named .ogm as old collections name them."""
    ffmpeg(*moving(seconds=1), *tone(1), "-c:v", "libtheora", "-q:v", "6", "-c:a", "libvorbis",
           "-f", "ogg", out)  # fmt: skip
    return out


def png16_rgba(out: Path) -> np.ndarray:
    """A 40x28 16-bit RGBA PNG (gradients in every channel, alpha included); returns its
    pixels (uint16)."""
    h, w = 28, 40
    yy, xx = np.mgrid[0:h, 0:w]
    px = np.stack(
        [xx * 1600 + 7, yy * 2300 + 3, (xx + yy) * 900 + 11, 65535 - xx * 1200], axis=-1
    ).astype(np.uint16)
    frame = av.VideoFrame.from_ndarray(px, format="rgba64be")  # PyAV orders the bytes
    with av.open(str(out), "w", format="image2") as o:
        s = o.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = w, h, "rgba64be"
        for p in s.encode(frame):
            o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    return px


# --- DVD / TV sources: interlaced, hard and soft telecine, anamorphic, letterboxed -----------

NTSC = "30000/1001"  # 29.97 frames (59.94 fields) a second
FILM = "24000/1001"  # 23.976: film on NTSC
# A bright bar (8 px wide, 5 px a step) over a fine texture: sharp moving vertical edges that
# comb when two fields from different instants share a frame.
BAR = (
    "color=c=gray:size={w}x{h}:rate={rate},format=yuv420p,"
    r"geq=lum='if(lt(mod(X-N*5\,{w})\,8)\,235\,60+mod(X*7+Y*13\,40))':cb=128:cr=128"
)
# Film: every frame different (testsrc2's moving shapes, the luma shifted 23 levels a frame,
# a bar 3 px a frame over a texture), so a decimator always has one clear duplicate to drop.
FILM_CONTENT = (
    "testsrc2=size={w}x{h}:rate={rate},"
    r"geq=lum='if(lt(mod(X-N*3\,{w})\,6)\,235\,mod(lum(X,Y)+N*23\,200)+16)':cb='cb(X,Y)':cr='cr(X,Y)'"
)


def _ac3(seconds: float) -> list[str]:
    """A 48 kHz sine for AC-3, ``seconds`` long."""
    return tone(seconds, 48000)


def interlaced_mpeg2(
    folder: Path,
    *,
    frames: int = 24,
    size: tuple[int, int] = (64, 48),
    tff: bool = True,
    name: str = "interlaced.vob",
) -> Path:
    """True interlaced video, as a TV camera shoots it: 59.94 progressive pictures of a bar
    moving 5 px a field over a texture, woven two at a time into ``frames`` 29.97 fps frames
    (``tinterlace`` ``interleave_top``: the earlier picture's top field, the later one's bottom
    field; ``interleave_bottom`` for ``tff=False``), coded as interlaced MPEG-2 (field DCT and
    field motion, ``top_field_first`` per ``tff``, field order tt or bb), with AC-3, in a DVD
    program stream. Every frame combs: in its even rows the bar stands 5 px left (tff) or right
    (bff) of where it stands in its odd rows."""
    w, h = size
    out = folder / name
    weave = "interleave_top" if tff else "interleave_bottom"
    seconds = frames * 1001 / 30000
    ffmpeg("-f", "lavfi", "-i", BAR.format(w=w, h=h, rate="60000/1001") + f",tinterlace=mode={weave}",
           *_ac3(seconds), "-frames:v", frames, "-c:v", "mpeg2video", "-flags", "+ilme+ildct",
           "-field_order", "tt" if tff else "bb", "-pix_fmt", "yuv420p", "-b:v", "2M",
           "-g", "12", "-bf", "2", "-c:a", "ac3", "-b:a", "96k", "-f", "dvd", out)  # fmt: skip
    return out


def film_reference(
    folder: Path, *, frames: int = 24, size: tuple[int, int] = (64, 48), name: str = "film.mkv"
) -> Path:
    """``frames`` frames of 23.976 fps progressive film content (every frame different), kept
    exactly: FFV1 in Matroska, yuv420p."""
    w, h = size
    out = folder / name
    ffmpeg("-f", "lavfi", "-i", FILM_CONTENT.format(w=w, h=h, rate=FILM), "-frames:v", frames,
           "-c:v", "ffv1", "-pix_fmt", "yuv420p", out)  # fmt: skip
    return out


def hard_telecine_mpeg2(
    folder: Path, *, frames: int = 24, size: tuple[int, int] = (64, 48)
) -> tuple[Path, Path]:
    """Film hard-telecined onto NTSC as a DVD of a TV show holds it: the 23.976 fps reference
    (``film_reference``, every frame different) through a 2:3 pulldown (``telecine``
    ``pattern=23``, top field first) to 29.97 fps - four film frames become five video frames,
    two of the five combed (their fields from different film frames) - coded as interlaced MPEG-2
    at high quality (``-q:v 2``) with AC-3 in a DVD program stream. ``frames`` a multiple of 4
    gives ``frames * 5 // 4`` video frames. Returns (the telecined VOB, the reference)."""
    ref = film_reference(folder, frames=frames, size=size, name="film_reference.mkv")
    out = folder / "hard_telecine.vob"
    ffmpeg("-i", ref, *_ac3(frames * 1001 / 24000), "-vf", "telecine=first_field=top:pattern=23",
           "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-field_order", "tt",
           "-pix_fmt", "yuv420p", "-q:v", "2", "-g", "15", "-bf", "2",
           "-c:a", "ac3", "-b:a", "96k", "-f", "dvd", out)  # fmt: skip
    return out, ref


#: The 2:3 pulldown over four film frames in display order, (top_field_first,
#: repeat_first_field): A shows T B T, B shows B T, C shows B T B, D shows T B - 10 fields.
PULLDOWN_23 = ((1, 1), (0, 0), (0, 1), (1, 0))


def _start_codes(data: bytes | bytearray) -> Iterator[int]:
    """Offsets of every ``00 00 01`` start code in an MPEG-2 elementary stream."""
    at = data.find(b"\0\0\1")
    while at >= 0:
        yield at
        at = data.find(b"\0\0\1", at + 3)


def soft_pulldown(es: bytes) -> bytes:
    """DGPulldown's patch of a progressive 23.976 fps MPEG-2 elementary stream: the sequence
    header's frame_rate_code to 4 (30000/1001), the sequence extension's progressive_sequence
    cleared, and each picture coding extension's top_field_first / repeat_first_field set in the
    2:3 pattern (``PULLDOWN_23``) over display order, progressive_frame left 1. Pictures are in
    decode order (B-frames come after the frame they precede): a picture's display index is its
    GOP's first index plus its temporal_reference (the picture header's first 10 bits), the
    GOP's first index the count of pictures before its group header."""
    data = bytearray(es)
    gop_start = shown = 0  # display index of the GOP's first picture; pictures seen
    display = 0
    for at in _start_codes(data):
        code = data[at + 3]
        if code == 0xB3:  # sequence header: width 12, height 12, aspect 4, frame_rate_code 4
            data[at + 7] = (data[at + 7] & 0xF0) | 4
        elif code == 0xB8:  # group of pictures: temporal references start again
            gop_start = shown
        elif code == 0x00:  # picture header: temporal_reference 10 bits
            display = gop_start + ((data[at + 4] << 2) | (data[at + 5] >> 6))
            shown += 1
        elif code == 0xB5 and data[at + 4] >> 4 == 1:  # sequence extension
            data[at + 5] &= ~0x08  # bit 12: progressive_sequence (id 4, profile_and_level 8)
        elif code == 0xB5 and data[at + 4] >> 4 == 8:  # picture coding extension
            tff, rff = PULLDOWN_23[display % 4]
            flags = data[at + 7] & ~0x82  # bit 24 top_field_first, bit 30 repeat_first_field
            data[at + 7] = flags | (tff << 7) | (rff << 1)
            assert data[at + 8] & 0x80, "progressive_frame (bit 32) stays 1"
    return bytes(data)


def _pictures(es: bytes) -> list[tuple[int, int]]:
    """(display index, fields shown) of each picture of an MPEG-2 elementary stream, in
    decode order (display index as in ``soft_pulldown``; 3 fields where repeat_first_field)."""
    out: list[tuple[int, int]] = []
    gop_start = 0
    for at in _start_codes(es):
        code = es[at + 3]
        if code == 0xB8:
            gop_start = len(out)
        elif code == 0x00:
            out.append((gop_start + ((es[at + 4] << 2) | (es[at + 5] >> 6)), 2))
        elif code == 0xB5 and es[at + 4] >> 4 == 8 and out:
            out[-1] = (out[-1][0], 2 + ((es[at + 7] >> 1) & 1))
    return out


def _mux_pulldown(es: Path, ac3: Path, out: Path) -> None:
    """Mux a soft-telecined elementary stream and AC-3 into a DVD program stream, each picture
    timed as DVD authoring tools time it: from the fields shown before it (1501.5 ticks of
    90 kHz a field, rounded down), the decode time one picture's slot behind display order.
    (ffmpeg's own stream copy from a raw stream guesses the first picture's time - or with
    ``+genpts`` the last one's - a field off.)"""
    order = _pictures(es.read_bytes())
    starts = [0] * (len(order) + 1)  # display index -> its first field's time
    fields = dict(order)
    for k in range(len(order)):
        starts[k + 1] = starts[k] + fields[k]
    field_ticks = Fraction(3003, 2)
    tb = Fraction(1, 90000)

    def at(k: int) -> int:
        return 3003 + int(starts[k] * field_ticks)

    with av.open(str(es), format="mpegvideo") as v, av.open(str(ac3)) as a, \
            av.open(str(out), "w", format="dvd") as o:  # fmt: skip
        vin, ain = v.streams.video[0], a.streams.audio[0]
        vout, aout = o.add_stream_from_template(vin), o.add_stream_from_template(ain)
        vout.time_base = aout.time_base = tb
        video = [p for p in v.demux(vin) if p.size]
        assert len(video) == len(order), (len(video), len(order))
        for j, (p, (k, _)) in enumerate(zip(video, order, strict=True)):
            p.stream, p.time_base, p.pts, p.dts = vout, tb, at(k), at(j - 1) if j else 0
        audio = [p for p in a.demux(ain) if p.size]
        for p in audio:
            p.stream, p.pts = aout, 3003 + int(p.pts * p.time_base / tb)
            p.dts, p.time_base = p.pts, tb
        for p in sorted(video + audio, key=lambda p: p.dts):
            o.mux(p)


def soft_telecine_mpeg2(
    folder: Path, *, frames: int = 24, size: tuple[int, int] = (64, 48)
) -> Path:
    """Soft telecine, the way DGPulldown made DVD film titles: the 23.976 fps film content
    coded as progressive MPEG-2 (an elementary stream, B-frames, closed GOPs of 12), patched by
    ``soft_pulldown`` (display order from each picture's temporal_reference) to a 29.97 fps
    interlaced sequence whose pictures carry the 2:3 flags (half repeat their first field), then
    muxed unchanged with AC-3 into a DVD program stream, each picture timed by the fields before
    it (``_mux_pulldown``: pts steps 4504/4505 after a repeating picture, 3003 after the others).
    The file holds ``frames`` pictures; a player shows ``frames * 5 // 4`` video frames."""
    w, h = size
    es, patched = folder / "soft_film.m2v", folder / "soft_pulldown.m2v"
    ac3, out = folder / "soft_telecine.ac3", folder / "soft_telecine.vob"
    ffmpeg("-f", "lavfi", "-i", FILM_CONTENT.format(w=w, h=h, rate=FILM), "-frames:v", frames,
           "-c:v", "mpeg2video", "-pix_fmt", "yuv420p", "-q:v", "2", "-g", "12", "-bf", "2",
           "-flags", "+cgop", "-sc_threshold", "1000000000", "-f", "mpeg2video", es)  # fmt: skip
    patched.write_bytes(soft_pulldown(es.read_bytes()))
    ffmpeg(*_ac3(frames * 1001 / 24000), "-c:a", "ac3", "-b:a", "96k", ac3)
    _mux_pulldown(patched, ac3, out)
    for work in (es, patched, ac3):
        work.unlink()
    return out


def anamorphic_dvd(
    folder: Path,
    *,
    frames: int = 12,
    size: tuple[int, int] = (720, 480),
    dar: tuple[int, int] = (16, 9),
    interlaced: bool = False,
    name: str = "anamorphic.vob",
) -> Path:
    """A full-size NTSC DVD picture: 720x480 MPEG-2 whose sequence header says display aspect
    ``dar`` (``-aspect``; 16:9 on 720x480 is SAR 32:27, 4:3 is SAR 8:9), 29.97 fps, progressive
    or (``interlaced``) field-coded top field first, with AC-3, in a DVD program stream."""
    w, h = size
    out = folder / name
    coding = ["-flags", "+ilme+ildct", "-field_order", "tt"] if interlaced else []
    ffmpeg(*moving(w, h, NTSC, frames * 1001 / 30000 + 0.1), *_ac3(frames * 1001 / 30000),
           "-frames:v", frames, "-vf", "setfield=tff" if interlaced else "setfield=prog",
           "-c:v", "mpeg2video", "-pix_fmt", "yuv420p", "-aspect", f"{dar[0]}:{dar[1]}",
           "-b:v", "6M", "-g", "12", "-bf", "2", *coding,
           "-c:a", "ac3", "-b:a", "192k", "-f", "dvd", out)  # fmt: skip
    return out


#: Texture that never goes dark: luma 70..230 (a moving diagonal grating plus a gradient),
#: chroma varying, so every row and column of the content is far above cropdetect's limit.
BRIGHT = (
    "color=c=gray:size={w}x{h}:rate=24,format=yuv420p,"
    r"geq=lum='70+mod(X*9+Y*5+N*11\,120)+X*40/W':cb='128+40*sin(X/5+N/3)':cr='128+40*cos(Y/4)'"
)


def letterboxed(
    folder: Path,
    *,
    frames: int = 24,
    size: tuple[int, int] = (64, 48),
    bars: tuple[int, int] = (8, 0),
    name: str = "letterboxed.mkv",
) -> Path:
    """A letterboxed broadcast capture: moving textured content (luma 70..230, never dark at
    its edges) with true black bars (Y=16, limited range) ``bars[0]`` px top and bottom and
    ``bars[1]`` px left and right, in a ``size`` frame, as H.264 (yuv420p, 24 fps) in Matroska.
    ``cropdetect=round=2`` finds the content box exactly: ``w - 2*bars[1]`` x ``h - 2*bars[0]``
    at (``bars[1]``, ``bars[0]``) - ``crop=64:32:0:8`` by default, which plain ``cropdetect``
    (rounding to 16) finds too. Keep bars even (4:2:0); bars on the 8 px block grid decode as
    exactly Y=16 (``-crf 4``), others ring by a few levels next to the picture."""
    w, h = size
    top, side = bars
    out = folder / name
    content = BRIGHT.format(w=w - 2 * side, h=h - 2 * top)
    ffmpeg("-f", "lavfi", "-i", f"{content},pad={w}:{h}:{side}:{top}:black", "-frames:v", frames,
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "4", "-pix_fmt", "yuv420p",
           "-x264-params", "log-level=error", out)  # fmt: skip
    return out
