"""Never a bigger file: when a same-format re-encode is not smaller than the source, the
transform returns the source itself with its metadata stripped losslessly; when a format or
size change was asked for, it does what was asked even if the file grows."""

from __future__ import annotations

import random
from io import BytesIO
from typing import Any

from PIL import ExifTags, Image, PngImagePlugin

from pixelbatch.transform import TransformOptions, TransformResult, transform
from pixelbatch.transform.strip import strip_jpeg, strip_png
from tests.support import cmyk_jpeg, jpeg, rotated_jpeg
from tests.unit.test_strip import XMP, gps_exif, pixels, scan_data


def _run(data: bytes, **options: Any) -> TransformResult:
    return transform(data, TransformOptions(**options))


def _optimised_jpeg(**params: Any) -> bytes:
    """Already small: q30 with optimised Huffman tables, as a shop's CDN would serve it."""
    return jpeg((320, 240), quality=30, optimize=True, **params)


def _optimised_png(**params: Any) -> bytes:
    """Noise compresses no further: our level-6 re-encode cannot beat a level-9 source.
    Seeded, so every run tests the same image (``effect_noise`` differs per run)."""
    buf = BytesIO()
    noise = random.Random(7).randbytes(96 * 64 * 3)
    Image.frombytes("RGB", (96, 64), noise).save(
        buf, "PNG", optimize=True, compress_level=9, **params
    )
    return buf.getvalue()


def test_optimised_jpeg_at_its_own_quality_keeps_the_original_minus_metadata() -> None:
    source = _optimised_jpeg(exif=gps_exif(), comment="at home", xmp=XMP)
    result = _run(source, relative_quality=1.0)
    assert result.kept_original
    assert len(result.data) < len(source)  # the metadata went
    assert scan_data(result.data) == scan_data(source)
    assert pixels(result.data) == pixels(source)
    assert result.content_type == "image/jpeg" and result.extension == "jpg"
    assert (result.width, result.height) == (320, 240)
    assert result.output_quality == result.source_quality == 30
    with Image.open(BytesIO(result.data)) as im:
        assert not im.getexif()  # no GPS, no camera
        assert "xmp" not in im.info and "comment" not in im.info


def test_a_jpeg_without_metadata_comes_back_byte_identical() -> None:
    bare = strip_jpeg(_optimised_jpeg())
    assert bare is not None
    result = _run(bare, relative_quality=1.0)
    assert result.kept_original
    assert result.data == bare


def test_asking_for_a_higher_quality_cannot_grow_a_jpeg() -> None:
    source = jpeg((320, 240), quality=50)
    result = _run(source, quality=95)
    assert result.kept_original
    assert len(result.data) <= len(source)


def test_keep_metadata_keeps_what_a_re_encode_keeps() -> None:
    source = _optimised_jpeg(exif=gps_exif(), comment="at home")
    kept = _run(source, relative_quality=1.0, keep_metadata=True)
    reencoded = _run(source, keep_metadata=True)  # half quality: smaller, re-encoded
    assert kept.kept_original and not reencoded.kept_original
    with Image.open(BytesIO(kept.data)) as a, Image.open(BytesIO(reencoded.data)) as b:
        assert a.getexif().tobytes() == b.getexif().tobytes()
        assert a.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # asked for: kept, as before
    assert b"at home" not in kept.data


def test_optimised_png_keeps_the_original_without_text_or_time() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at home")
    source = _optimised_png(pnginfo=info, exif=gps_exif())
    result = _run(source)
    assert result.kept_original
    assert len(result.data) < len(source)
    assert b"taken at home" not in result.data and b"SecretCam" not in result.data
    assert pixels(result.data) == pixels(source)
    bare = strip_png(source)
    assert bare is not None
    again = _run(bare)
    assert again.kept_original and again.data == bare  # nothing to strip: identical


def test_a_re_encode_that_is_smaller_wins() -> None:
    source = jpeg((320, 240), quality=90)
    result = _run(source)
    assert not result.kept_original
    assert len(result.data) < len(source)


def test_a_turned_photo_is_re_encoded_upright_not_kept() -> None:
    # Stripping its EXIF would drop the orientation and show it on its side.
    result = _run(rotated_jpeg(), quality=100)
    assert not result.kept_original
    assert (result.width, result.height) == (120, 240)


def test_cmyk_is_converted_not_kept() -> None:
    result = _run(cmyk_jpeg(), quality=100)
    assert not result.kept_original
    with Image.open(BytesIO(result.data)) as im:
        assert im.mode == "RGB"


def test_a_size_change_is_done_as_asked() -> None:
    source = _optimised_jpeg()
    result = _run(source, relative_quality=1.0, max_width=160)
    assert not result.kept_original
    assert result.width == 160


def test_a_bounding_box_the_image_already_fits_still_keeps_the_original() -> None:
    result = _run(_optimised_jpeg(), relative_quality=1.0, max_width=1000)
    assert result.kept_original


def test_a_format_change_is_done_even_when_it_grows() -> None:
    source = jpeg((320, 240), quality=90)
    result = _run(source, output_format="png")
    assert not result.kept_original
    assert result.content_type == "image/png"
    assert len(result.data) > len(source)  # reported as growth by the caller, not undone


def test_a_webp_asked_at_a_higher_quality_keeps_the_original_minus_metadata() -> None:
    buf = BytesIO()
    Image.effect_noise((96, 64), 60).convert("RGB").save(
        buf, "WEBP", quality=60, exif=gps_exif(), xmp=XMP
    )
    source = buf.getvalue()
    result = _run(source, quality=100)
    assert result.kept_original
    assert len(result.data) < len(source)
    assert pixels(result.data) == pixels(source)
    assert result.content_type == "image/webp" and result.output_quality is None
    with Image.open(BytesIO(result.data)) as im:
        assert not im.getexif()
