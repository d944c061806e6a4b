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
- ``png16_rgba``: a 16-bit RGBA PNG.

Video is 64x36 or 64x48, a second or two: every frame differs from the one before (a moving
pattern), so frame-order mistakes show in pixels.
"""

from __future__ import annotations

import struct
import subprocess
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
