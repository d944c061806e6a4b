"""The media layer: probe, frame-exact decode, encode with source timestamps, remux, colour.

- ``probe.probe(path) -> MediaInfo``: typed facts, exact frame pts from packets.
- ``decode.decode_frames(path, start, end)``: frames ``[start, end)`` as RGB arrays.
- ``encode.VideoEncoder``: RGB arrays -> a video-only file, every frame at its source pts.
- ``remux.remux(video_only, source, output, info=...)``: add every other stream of the source.
- ``colour``: the one place that decides matrices, ranges and tags.
- ``ffmpeg``: the ffmpeg binary (stream copy only).
"""
