"""The transform's fast paths (issue 13): they skip work only where the result is the same.

- an sRGB-tagged source is not run through LittleCMS (a full pass that changes nothing),
  while a profile merely *named* sRGB with other primaries or another tone curve still is;
- a JPEG's quality is found by one lookup when its tables are libjpeg's, with the same
  answer as the full search, which still handles every other table.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO

import pytest
from PIL import Image, ImageCms

from pixelbatch.transform import TransformOptions, estimate_jpeg_quality, lcms_direct, transform
from pixelbatch.transform import quality as quality_mod
from pixelbatch.transform.srgb import is_srgb

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _tag_positions(raw: bytes | bytearray) -> dict[bytes, tuple[int, int]]:
    (count,) = struct.unpack_from(">I", raw, 128)
    out = {}
    for i in range(count):
        sig, offset, size = struct.unpack_from(">4sII", raw, 132 + 12 * i)
        out[sig] = (offset, size)
    return out


def _with_gamma_22() -> bytes:
    """LittleCMS's sRGB profile with its tone curves replaced by a plain 2.2 gamma: the
    colorants match sRGB, the pixels' meaning does not."""
    raw = bytearray(SRGB)
    for sig in (b"rTRC", b"gTRC", b"bTRC"):
        offset, _ = _tag_positions(raw)[sig]
        assert raw[offset : offset + 4] == b"para"
        struct.pack_into(">H", raw, offset + 8, 0)  # function 0: y = x ** g
        struct.pack_into(">i", raw, offset + 12, round(2.2 * 65536))
    return bytes(raw)


def _with_swapped_primaries() -> bytes:
    raw = bytearray(SRGB)
    pos = _tag_positions(raw)
    (r, _), (b, _) = pos[b"rXYZ"], pos[b"bXYZ"]
    raw[r + 8 : r + 20], raw[b + 8 : b + 20] = raw[b + 8 : b + 20], raw[r + 8 : r + 20]
    return bytes(raw)


def _photo_jpeg(icc: bytes | None) -> bytes:
    im = Image.linear_gradient("L").resize((96, 64)).convert("RGB")
    im = Image.merge("RGB", (im.getchannel(0), im.rotate(90).getchannel(1), im.getchannel(2)))
    buf = BytesIO()
    im.save(buf, "JPEG", quality=90, **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


def test_srgb_profiles_are_recognised() -> None:
    assert is_srgb(SRGB)
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(BytesIO(_with_gamma_22())))
    assert not is_srgb(_with_gamma_22())
    assert not is_srgb(_with_swapped_primaries())
    assert not is_srgb(b"not a profile at all")
    assert not is_srgb(SRGB[:200])  # truncated: unreadable means "convert"


def test_srgb_tagged_jpeg_skips_colour_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    untagged = transform(_photo_jpeg(None), TransformOptions())

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an sRGB source went through LittleCMS")

    monkeypatch.setattr(ImageCms, "applyTransform", forbidden)
    monkeypatch.setattr(lcms_direct, "convert_in_place", forbidden)
    tagged = transform(_photo_jpeg(SRGB), TransformOptions())
    # Same pixels in, no conversion: the very same output as the untagged source.
    assert tagged.data == untagged.data


# Built inside the test, named by ids: a profile's bytes carry its creation time, and
# pytest-xdist workers must collect the same test ids.
@pytest.mark.parametrize(
    "make_profile", [_with_gamma_22, _with_swapped_primaries], ids=["gamma-2.2", "swapped"]
)
def test_non_srgb_profile_is_still_converted(make_profile: Callable[[], bytes]) -> None:
    profile = make_profile()
    calls: list[int] = []
    real = lcms_direct.convert_in_place

    def counting(im: Image.Image, icc: bytes) -> bool:
        calls.append(int(real(im, icc)))
        return bool(calls[-1])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lcms_direct, "convert_in_place", counting)
        transform(_photo_jpeg(profile), TransformOptions())
        transform(_photo_jpeg(profile), TransformOptions())
    assert calls == [1, 1]  # converted, by LittleCMS on Pillow's pixels


def test_a_profile_seen_again_reuses_its_transform() -> None:
    """Building a LittleCMS transform costs ~2 ms: a catalog's photos share few profiles."""
    profile = _with_gamma_22()
    first = transform(_photo_jpeg(profile), TransformOptions())
    built = lcms_direct._transforms.cache_info()
    again = transform(_photo_jpeg(profile), TransformOptions())
    after = lcms_direct._transforms.cache_info()
    assert again.data == first.data
    assert after.hits == built.hits + 1 and after.misses == built.misses


def _search(luma: list[int], chroma: list[int] | None) -> int:
    """The full search over every quality, as the estimator did before the lookup."""
    best, best_distance = 0, -1
    for q, std_luma, std_chroma in quality_mod._CANDIDATES:
        d = quality_mod._distance(sorted(luma), std_luma)
        if chroma is not None:
            d += quality_mod._distance(sorted(chroma), std_chroma)
        if best_distance < 0 or d < best_distance:
            best, best_distance = q, d
    return best


@pytest.mark.parametrize("quality", range(1, 101))
def test_quality_lookup_agrees_with_the_search(quality: int) -> None:
    _, luma, chroma = quality_mod._CANDIDATES[quality - 1]
    tables = {0: list(luma), 1: list(chroma)}
    assert estimate_jpeg_quality(tables) == _search(tables[0], tables[1])
    assert estimate_jpeg_quality({0: list(luma)}) == _search(list(luma), None)
    # Tables no libjpeg writes (every value nudged) take the search, same answer.
    nudged = {0: [min(255, v + 1) for v in luma], 1: [max(1, v - 1) for v in chroma]}
    assert estimate_jpeg_quality(nudged) == _search(nudged[0], nudged[1])
