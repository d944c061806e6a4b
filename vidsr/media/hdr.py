"""HDR10 static metadata: the mastering display (SMPTE ST 2086) and content light levels
(MaxCLL / MaxFALL), read from a decoded frame and turned into encoder parameters.

Passed through where the encoder takes them: libx265 (``x265-params``) and libsvtav1
(``svtav1-params``). Other encoders get the colour tags but not this metadata.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

_MASTERING = "MASTERING_DISPLAY_METADATA"
_LIGHT = "CONTENT_LIGHT_LEVEL"


@dataclass(frozen=True)
class HdrMetadata:
    """primaries: ((Rx, Ry), (Gx, Gy), (Bx, By)) CIE 1931 xy; white: (x, y); luminance in
    cd/m2 (None when the source does not give them); max_cll / max_fall in cd/m2."""

    primaries: tuple[tuple[Fraction, Fraction], ...] | None = None
    white: tuple[Fraction, Fraction] | None = None
    min_luminance: Fraction | None = None
    max_luminance: Fraction | None = None
    max_cll: int | None = None
    max_fall: int | None = None

    def x265_params(self) -> list[str]:
        """``key=value`` items for x265 (chromaticities in 1/50000, luminance in 1/10000)."""
        out = ["hdr10=1", "hdr10-opt=0"]
        if self.primaries and self.white and self.max_luminance is not None:
            (rx, ry), (gx, gy), (bx, by) = self.primaries

            def c(v: Fraction) -> int:
                return round(v * 50000)

            lum = (
                f"L({round(self.max_luminance * 10000)},{round((self.min_luminance or 0) * 10000)})"
            )
            out.append(
                f"master-display=G({c(gx)},{c(gy)})B({c(bx)},{c(by)})R({c(rx)},{c(ry)})"
                f"WP({c(self.white[0])},{c(self.white[1])}){lum}"
            )
        if self.max_cll is not None:
            out.append(f"max-cll={self.max_cll},{self.max_fall or 0}")
        return out

    def svtav1_params(self) -> list[str]:
        """``key=value`` items for SVT-AV1 (decimal chromaticities and cd/m2)."""
        out = []
        if self.primaries and self.white and self.max_luminance is not None:
            (rx, ry), (gx, gy), (bx, by) = self.primaries

            def f(v: Fraction) -> str:
                return f"{float(v):.5f}"

            out.append(
                f"mastering-display=G({f(gx)},{f(gy)})B({f(bx)},{f(by)})R({f(rx)},{f(ry)})"
                f"WP({f(self.white[0])},{f(self.white[1])})"
                f"L({float(self.max_luminance):.4f},{float(self.min_luminance or 0):.4f})"
            )
        if self.max_cll is not None:
            out.append(f"content-light={self.max_cll},{self.max_fall or 0}")
        return out


def _rationals(data: bytes, count: int) -> list[Fraction | None]:
    values = struct.unpack(f"<{2 * count}i", data[: 8 * count])
    return [Fraction(n, d) if d else None for n, d in zip(values[::2], values[1::2], strict=True)]


def read_hdr(frame: Any) -> HdrMetadata | None:
    """The HDR10 metadata a decoded PyAV frame carries, or None."""
    found: dict[str, bytes] = {}
    for sd in getattr(frame, "side_data", ()):
        name = getattr(getattr(sd, "type", None), "name", "")
        if name in (_MASTERING, _LIGHT):
            found[name] = bytes(sd)
    if not found:
        return None
    kwargs: dict[str, Any] = {}
    if _MASTERING in found and len(found[_MASTERING]) >= 88:
        data = found[_MASTERING]
        r = _rationals(data, 10)  # primaries (r, g, b) x (x, y), white (x, y), min, max
        has_primaries, has_luminance = struct.unpack("<ii", data[80:88])
        if has_primaries and all(v is not None for v in r[:8]):
            kwargs["primaries"] = ((r[0], r[1]), (r[2], r[3]), (r[4], r[5]))
            kwargs["white"] = (r[6], r[7])
        if has_luminance:
            kwargs["min_luminance"], kwargs["max_luminance"] = r[8], r[9]
    if _LIGHT in found and len(found[_LIGHT]) >= 8:
        kwargs["max_cll"], kwargs["max_fall"] = struct.unpack("<II", found[_LIGHT][:8])
    return HdrMetadata(**kwargs)


def encoder_options(codec: str, hdr: HdrMetadata | None, options: dict[str, str]) -> dict[str, str]:
    """``options`` with the HDR10 parameters added for encoders that take them."""
    if hdr is None:
        return options
    key, items = {
        "libx265": ("x265-params", hdr.x265_params),
        "libsvtav1": ("svtav1-params", hdr.svtav1_params),
    }.get(codec, (None, None))
    if key is None or items is None:
        return options
    merged = dict(options)
    existing = [p for p in merged.get(key, "").split(":") if p]
    merged[key] = ":".join([*existing, *items()])
    return merged
