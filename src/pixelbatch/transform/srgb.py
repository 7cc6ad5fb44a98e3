"""Recognise an embedded ICC profile that describes sRGB, so its pixels need no conversion.

Converting through LittleCMS costs a full pass over the pixels (a tenth of a transform's
time on a 3 MP photo) and changes nothing when the source profile is sRGB already, which is
what most web and phone photos carry. The profile's name proves nothing (a tampered "sRGB"
profile may have other primaries), so the decision reads what the matrix/TRC transform
would use: RGB data, XYZ connection space, no LUT tags, colorants within 0.003 of sRGB's
(D50-adapted, as LittleCMS's own sRGB profile stores them) and tone curves within 2% of the
sRGB curve. Anything else, or anything unreadable, goes through the full conversion.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Final

from PIL import ImageCms

__all__ = ["is_srgb"]

_LUT_TAGS: Final = (b"A2B0", b"A2B1", b"A2B2", b"B2A0", b"B2A1", b"B2A2", b"D2B0", b"B2D0")
_SAMPLES: Final = (0.01, 0.03, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0)


def _srgb_curve(x: float) -> float:
    return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4


def _tags(icc: bytes) -> dict[bytes, bytes]:
    (count,) = struct.unpack_from(">I", icc, 128)
    tags = {}
    for i in range(min(count, 100)):
        sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        tags[sig] = icc[offset : offset + size]
    return tags


def _xyz(tag: bytes) -> tuple[float, float, float]:
    if tag[:4] != b"XYZ ":
        raise ValueError("not an XYZ tag")
    x, y, z = struct.unpack_from(">iii", tag, 8)
    return x / 65536, y / 65536, z / 65536


def _curve(tag: bytes, x: float) -> float:
    """Evaluate a curv or para tone curve at ``x`` in [0, 1]."""
    kind = tag[:4]
    if kind == b"curv":
        (n,) = struct.unpack_from(">I", tag, 8)
        if n == 0:
            return x
        if n == 1:
            return float(x ** (struct.unpack_from(">H", tag, 12)[0] / 256))
        table = struct.unpack_from(f">{n}H", tag, 12)
        pos = x * (n - 1)
        i = min(int(pos), n - 2)
        frac = pos - i
        return float(table[i] * (1 - frac) + table[i + 1] * frac) / 65535
    if kind == b"para":
        (function,) = struct.unpack_from(">H", tag, 8)
        counts = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
        if function not in counts:
            raise ValueError("unknown parametric curve")
        p = [v / 65536 for v in struct.unpack_from(f">{counts[function]}i", tag, 12)]
        g, a, b, c, d, e, f = (p + [0.0] * 7)[:7]
        if function == 0:
            return float(x**g)
        if function == 1:
            return float((a * x + b) ** g) if x >= -b / a else 0.0
        if function == 2:
            return float((a * x + b) ** g + c) if x >= -b / a else c
        if function == 3:
            return float((a * x + b) ** g) if x >= d else c * x
        return float((a * x + b) ** g + e) if x >= d else c * x + f
    raise ValueError("not a tone curve")


def _colorants(icc: bytes) -> tuple[float, ...]:
    tags = _tags(icc)
    return tuple(v for sig in (b"rXYZ", b"gXYZ", b"bXYZ") for v in _xyz(tags[sig]))


_REFERENCE: Final = _colorants(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


@lru_cache(maxsize=64)
def is_srgb(icc: bytes) -> bool:
    """True when converting from ``icc`` to sRGB would leave the pixels as they are."""
    try:
        if len(icc) < 132 or icc[16:20] != b"RGB " or icc[20:24] != b"XYZ ":
            return False
        tags = _tags(icc)
        if any(sig in tags for sig in _LUT_TAGS):
            return False
        colorants = _colorants(icc)
        if any(abs(a - b) > 0.003 for a, b in zip(colorants, _REFERENCE, strict=True)):
            return False
        for sig in (b"rTRC", b"gTRC", b"bTRC"):
            for x in _SAMPLES:
                want = _srgb_curve(x)
                if abs(_curve(tags[sig], x) - want) > 1e-4 + 0.02 * want:
                    return False
        return True
    except (KeyError, ValueError, struct.error, ZeroDivisionError, OverflowError):
        return False
