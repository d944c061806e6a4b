"""Which file suffixes are video: what the bundled FFmpeg demuxes as video, by name.

``vidsr batch`` takes these from folders and globs (a file named explicitly is taken whatever
its suffix). The list follows the FFmpeg that PyAV brings: every demuxer of a container or a
raw stream that holds video contributes the suffixes it registers, less those its family uses
for audio, subtitles or still images (``.mka``, ``.m4a``, ``.heic`` ...); demuxers that find
their files by content rather than by suffix (RealMedia, ASF, MPEG program and transport
streams, Ogg) contribute the suffixes their files carry.
"""

from __future__ import annotations

from functools import lru_cache

#: Demuxers of video, and the suffixes of their files besides those they register.
_VIDEO_DEMUXERS: dict[str, tuple[str, ...]] = {
    "matroska": (".mkv", ".webm", ".mk3d"),
    "mov": (".mov", ".mp4", ".m4v", ".3gp", ".3g2", ".f4v", ".mj2", ".ismv"),
    "avi": (".avi", ".divx", ".xvid"),
    "asf": (".asf", ".wmv", ".dvr-ms"),
    "rm": (".rm", ".rmvb"),
    "mpeg": (".mpg", ".mpeg", ".vob", ".m2p", ".mod", ".vro"),
    "mpegts": (".ts", ".m2ts", ".mts", ".tp", ".trp"),
    "mpegvideo": (".m2v", ".m1v", ".mpv"),
    "ogg": (".ogv", ".ogm"),
    "flv": (".flv",),
    "live_flv": (),
    "nut": (".nut",),
    "dv": (".dv", ".dif"),
    "mxf": (".mxf",),
    "wtv": (".wtv",),
    "yuv4mpegpipe": (".y4m",),
    "h264": (".h264", ".264"),
    "hevc": (".hevc", ".265"),
    "vvc": (),
    "m4v": (".m4v",),
    "vc1": (".vc1",),
    "ivf": (".ivf",),
    "obu": (".obu",),
    "av1": (),
    "cavsvideo": (),
    "avs2": (),
    "avs3": (),
    "mjpeg": (".mjpeg", ".mjpg"),
    "bink": (".bik",),
    "smk": (".smk",),
    "nsv": (".nsv",),
    "vivo": (".viv",),
}
#: Suffixes video demuxers also register for audio, subtitles or still pictures.
_NOT_VIDEO = frozenset(
    {".mka", ".mks", ".m4a", ".m4b", ".isma", ".ism", ".heic", ".heif", ".avif", ".mpo", ".psp"}
    # Ogg Vorbis is what .ogg names, and .avs is AviSynth's script as often as AVS video.
    | {".ogg", ".avs"}
)


@lru_cache(maxsize=1)
def video_suffixes() -> frozenset[str]:
    """Lower-case suffixes (with the dot) of the files the bundled FFmpeg demuxes as video."""
    import av

    available = set(av.formats_available)
    out: set[str] = set()
    for name, extra in _VIDEO_DEMUXERS.items():
        if name not in available:
            continue
        out.update(extra)
        try:
            registered = av.format.ContainerFormat(name, "r").extensions
        except Exception:
            registered = set()
        out.update(f".{e.lower()}" for e in registered)
    return frozenset(out - _NOT_VIDEO)


def is_video_suffix(suffix: str) -> bool:
    return suffix.lower() in video_suffixes()
