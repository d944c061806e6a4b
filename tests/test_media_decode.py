"""Frame-range decoding is frame-exact; damage is reported (or skipped and recorded)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from media_factory import GOOD_CLIPS

from vidsr.errors import InputError, UsageError
from vidsr.media.decode import decode_frames
from vidsr.media.probe import probe


def _ranges(n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    ranges = {(0, n), (0, 1), (n - 1, n), (n // 2, n // 2 + 1), (n // 3, n)}
    while len(ranges) < 10 and n > 1:
        a = rng.randrange(n)
        ranges.add((a, rng.randrange(a, n) + 1))
    return sorted(ranges)


@pytest.mark.parametrize("name", GOOD_CLIPS)
def test_ranges_equal_slices_of_full_decode(media_clips, name):
    path = media_clips[name]
    info = probe(path)
    full = list(decode_frames(path, info=info))
    n = info.video.frame_count
    assert [f.index for f in full] == list(range(n))
    v = info.video
    want_dtype = np.uint16 if v.bit_depth > 8 else np.uint8
    assert full[0].rgb.shape == (v.height, v.width, 3) and full[0].rgb.dtype == want_dtype
    assert full[0].time == v.frame_pts[0] * v.time_base
    for a, b in _ranges(n, seed=len(name)):
        part = list(decode_frames(path, a, b, info=info))
        assert [f.index for f in part] == list(range(a, b)), (a, b)
        assert [f.pts for f in part] == [f.pts for f in full[a:b]], (a, b)
        for x, y in zip(part, full[a:b], strict=True):
            assert np.array_equal(x.rgb, y.rgb), (a, b, x.index)


def test_unthreaded_decode_matches(media_clips):
    path = media_clips["hevc10"]
    a = [f.rgb for f in decode_frames(path, 5, 20)]
    b = [f.rgb for f in decode_frames(path, 5, 20, threads=False)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_empty_and_bad_ranges(media_clips):
    path = media_clips["cfr"]
    assert list(decode_frames(path, 7, 7)) == []
    for start, end in [(-1, 3), (5, 4), (0, 49)]:
        with pytest.raises(UsageError):
            decode_frames(path, start, end)


def test_corrupt_file_names_the_frame(media_clips):
    path = media_clips["corrupt"]
    info = probe(path)  # probing succeeds: the container is readable
    assert info.video.frame_count == 20
    with pytest.raises(InputError, match=r"cannot decode frame 6 \(pts") as err:
        list(decode_frames(path, info=info))
    assert "\n" not in str(err.value)
    # a range that avoids the damage decodes fine
    assert [f.index for f in decode_frames(path, 0, 6, info=info)] == list(range(6))


def test_corrupt_file_with_ignore_errors_skips_and_records(media_clips):
    path = media_clips["corrupt"]
    decoder = decode_frames(path, ignore_errors=True)
    got = [f.index for f in decoder]
    lost = [e.index for e in decoder.errors if e.lost]
    assert lost and lost[0] == 6
    assert sorted(got + lost) == list(range(20))
    assert all(e.message for e in decoder.errors)
    # ranges inside the damage: nothing decodes, everything is recorded
    decoder = decode_frames(path, 7, 9, ignore_errors=True)
    assert list(decoder) == []
    assert [e.index for e in decoder.errors if e.lost] == [7, 8]


def test_decoder_closes_early(media_clips):
    with decode_frames(media_clips["cfr"]) as frames:
        first = next(frames)
    assert first.index == 0
    with pytest.raises(StopIteration):
        next(frames)
