"""Estimate the IJG quality setting a JPEG was saved with, from its quantisation tables.

The default output quality is relative to the source's own quality, so we need a number
for it. Encoders built on libjpeg scale the standard Annex K tables with a known formula;
finding the quality whose scaled tables best match the file's tables recovers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

# ITU-T T.81 Annex K tables (natural order; order is irrelevant because we compare sorted).
_STD_LUMINANCE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_STD_CHROMINANCE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def _scaled(base: Sequence[int], quality: int) -> tuple[int, ...]:
    """libjpeg's ``jpeg_set_quality`` scaling (baseline-clamped), sorted for comparison."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(sorted(min(max((b * scale + 50) // 100, 1), 255) for b in base))


# Precomputed once: 100 qualities x 2 tables x 64 values is tiny.
_CANDIDATES: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...] = tuple(
    (q, _scaled(_STD_LUMINANCE, q), _scaled(_STD_CHROMINANCE, q)) for q in range(1, 101)
)


# Tables written by libjpeg at quality q (every IJG encoder: Pillow, libjpeg-turbo, most
# cameras' software) match exactly: one dict lookup instead of 100 x 128 comparisons, which
# cost ~1 ms a file, a tenth of the CPU a 640 px product image takes. Two qualities may
# share tables at the extremes; the lowest wins, as in the search below.
_EXACT: dict[tuple[tuple[int, ...], tuple[int, ...] | None], int] = {}
for _q, _luma, _chroma in reversed(_CANDIDATES):
    _EXACT[(_luma, _chroma)] = _q
    _EXACT[(_luma, None)] = _q
del _q, _luma, _chroma


def _distance(observed: Sequence[int], expected: Sequence[int]) -> int:
    return sum(abs(a - b) for a, b in zip(observed, expected, strict=True))


def estimate_jpeg_quality(quantization: dict[int, list[int]]) -> int | None:
    """Return the IJG quality (1..100) closest to these tables, or None if there are none.

    Tables are compared as sorted multisets so the result does not depend on whether the
    decoder reports them in zigzag or natural order. Table 0 is luminance; table 1, when
    present, is chrominance. Non-IJG tables (e.g. Photoshop's) get the nearest IJG value.
    """
    luma = quantization.get(0)
    if luma is None or len(luma) != 64:
        return None
    observed_luma = tuple(sorted(luma))
    chroma = quantization.get(1)
    observed_chroma = tuple(sorted(chroma)) if chroma is not None and len(chroma) == 64 else None
    exact = _EXACT.get((observed_luma, observed_chroma))
    if exact is not None:
        return exact
    return _nearest(observed_luma, observed_chroma)


@lru_cache(maxsize=256)
def _nearest(observed_luma: tuple[int, ...], observed_chroma: tuple[int, ...] | None) -> int:
    """The closest IJG quality by table distance; cached, since a catalog's files tend to
    come from a few encoders (one camera, one editor) that share their tables."""
    best_quality = 0
    best_distance = -1
    for quality, std_luma, std_chroma in _CANDIDATES:
        distance = _distance(observed_luma, std_luma)
        if observed_chroma is not None:
            distance += _distance(observed_chroma, std_chroma)
        # Strict "<" keeps the lowest quality on ties (only happens for q < ~10 where
        # every value saturates at 255), the conservative choice.
        if best_distance < 0 or distance < best_distance:
            best_quality, best_distance = quality, distance
    return best_quality
