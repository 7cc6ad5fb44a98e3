"""Tests for the pure image transform; every fixture image is generated in memory."""

from __future__ import annotations

import pickle
import random
import struct
import zlib
from io import BytesIO
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageStat
from pydantic import ValidationError

from pixelbatch.errors import ImageError
from pixelbatch.transform import (
    OutputFormat,
    TransformOptions,
    TransformResult,
    colour,
    estimate_jpeg_quality,
    pipeline,
    transform,
)

RED = (220, 30, 30)
BLUE = (30, 30, 220)


# --------------------------------------------------------------------------- helpers


def _photo(size: tuple[int, int] = (256, 192)) -> Image.Image:
    """Smooth gradient plus noise: compresses like a photo, so quality changes show."""
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 40)
    return Image.merge("RGB", (gradient, noise, gradient.rotate(90).resize(size)))


def _encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    im = Image.open(BytesIO(data))
    im.load()
    return im


def _mean_rgb(im: Image.Image) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(im.convert("RGB")).mean)


def _close(a: tuple[float, ...], b: tuple[float, ...], tol: float) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _run(data: bytes, **options: Any) -> TransformResult:
    return transform(data, TransformOptions(**options))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but carries almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _swapped_primaries_profile() -> bytes:
    """An sRGB profile with the red and blue colorants swapped: decidedly not sRGB, so
    pure red pixels tagged with it must come out blue after conversion."""
    raw = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", raw[128:132])[0]
    entries: dict[bytes, int] = {}
    for i in range(count):
        pos = 132 + 12 * i
        entries[bytes(raw[pos : pos + 4])] = pos
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    raw[red + 4 : red + 12], raw[blue + 4 : blue + 12] = (
        raw[blue + 4 : blue + 12],
        raw[red + 4 : red + 12],
    )
    raw[84:100] = b"\x00" * 16  # the profile ID (MD5) no longer matches; clear it
    return bytes(raw)


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("quality", [10, 20, 33, 45, 50, 51, 66, 75, 85, 90, 95, 99, 100])
def test_estimate_matches_pillow_quality(quality: int) -> None:
    data = _encode(_photo((64, 64)), "JPEG", quality=quality)
    estimated = estimate_jpeg_quality(_open(data).quantization)  # type: ignore[attr-defined]
    assert estimated is not None
    assert abs(estimated - quality) <= 2
    if quality in (45, 90):
        assert estimated == quality


def test_estimate_grayscale_single_table() -> None:
    data = _encode(_photo((64, 64)).convert("L"), "JPEG", quality=70)
    im = _open(data)
    assert len(im.quantization) == 1  # type: ignore[attr-defined]
    assert estimate_jpeg_quality(im.quantization) == 70  # type: ignore[attr-defined]


def test_estimate_is_independent_of_table_order() -> None:
    tables = _open(_encode(_photo((64, 64)), "JPEG", quality=80)).quantization  # type: ignore[attr-defined]
    rng = random.Random(7)
    shuffled = {k: rng.sample(v, len(v)) for k, v in tables.items()}
    assert estimate_jpeg_quality(shuffled) == 80


@pytest.mark.parametrize("tables", [{}, {0: [1, 2, 3]}])
def test_estimate_without_usable_tables(tables: dict[int, list[int]]) -> None:
    assert estimate_jpeg_quality(tables) is None


def test_q90_jpeg_is_written_at_q45_and_smaller() -> None:
    source = _encode(_photo(), "JPEG", quality=90)
    result = _run(source)
    assert (result.source_format, result.source_quality, result.output_quality) == (
        "jpeg",
        90,
        45,
    )
    assert (result.content_type, result.extension) == ("image/jpeg", "jpg")
    out = _open(result.data)
    assert out.format == "JPEG"
    assert estimate_jpeg_quality(out.quantization) == 45  # type: ignore[attr-defined]
    assert len(result.data) < len(source)
    assert (result.width, result.height) == out.size == (256, 192)


def test_relative_quality_fraction() -> None:
    result = _run(_encode(_photo(), "JPEG", quality=80), relative_quality=0.75)
    assert result.output_quality == 60


def test_absolute_quality_overrides_relative() -> None:
    result = _run(_encode(_photo(), "JPEG", quality=90), quality=70, relative_quality=0.1)
    assert result.output_quality == 70
    assert estimate_jpeg_quality(_open(result.data).quantization) == 70  # type: ignore[attr-defined]


def test_lossless_source_uses_output_scale() -> None:
    result = _run(_encode(_photo(), "PNG"), output_format="webp")
    assert result.source_quality is None
    assert result.output_quality == 50


# --------------------------------------------------------------------------- alpha


def _half_transparent() -> Image.Image:
    im = Image.new("RGBA", (40, 20), (*RED, 255))
    im.paste((0, 0, 0, 0), (0, 0, 20, 20))  # left half fully transparent (black)
    return im


@pytest.mark.parametrize(
    ("output_format", "expected"), [("keep", "PNG"), ("webp", "WEBP"), ("avif", "AVIF")]
)
def test_alpha_is_preserved(output_format: str, expected: str) -> None:
    result = _run(_encode(_half_transparent(), "PNG"), output_format=output_format)
    out = _open(result.data)
    assert out.format == expected
    assert out.mode == "RGBA"
    assert out.getpixel((5, 10))[3] <= 3  # type: ignore[index]  # AVIF alpha is lossy
    opaque = out.getpixel((35, 10))
    assert isinstance(opaque, tuple)
    assert opaque[3] >= 250
    assert _close(tuple(map(float, opaque[:3])), tuple(map(float, RED)), 25)


def test_png_output_is_lossless() -> None:
    result = _run(_encode(_half_transparent(), "PNG"))
    assert result.output_quality is None
    assert _open(result.data).tobytes() == _half_transparent().tobytes()


def test_jpeg_output_composites_alpha_on_white() -> None:
    result = _run(_encode(_half_transparent(), "PNG"), output_format="jpeg")
    out = _open(result.data)
    assert out.format == "JPEG"
    assert out.mode == "RGB"
    assert _close(_mean_rgb(out.crop((0, 0, 15, 20))), (255.0, 255.0, 255.0), 4)
    assert _close(_mean_rgb(out.crop((25, 0, 40, 20))), tuple(map(float, RED)), 20)


def test_palette_png_with_transparency_keeps_alpha() -> None:
    im = _half_transparent().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    transparent_index = im.getpixel((0, 0))
    data = _encode(im, "PNG", transparency=transparent_index)
    # A palette PNG this small is kept as it is (never a bigger file): its tRNS still makes
    # the transparent index transparent, whichever way it is stored.
    out = _open(_run(data).data).convert("RGBA")
    assert out.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert out.getpixel((35, 0))[3] == 255  # type: ignore[index]


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    im = Image.new("I;16", (8, 8), 32768)
    out = _open(_run(_encode(im, "PNG")).data)
    assert out.mode == "L"
    assert abs(ImageStat.Stat(out).mean[0] - 128) <= 1


# --------------------------------------------------------------------------- colour


def test_cmyk_jpeg_becomes_rgb_with_same_colour() -> None:
    colour = (200, 120, 40)
    cmyk = Image.new("RGB", (64, 64), colour).convert("CMYK")
    source = _encode(cmyk, "JPEG", quality=95)  # Pillow writes Adobe inverted CMYK
    assert _open(source).mode == "CMYK"
    result = _run(source)
    out = _open(result.data)
    assert out.mode == "RGB"
    assert _close(_mean_rgb(out), tuple(map(float, colour)), 8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_embedded_icc_profile_is_converted_to_srgb(fmt: str) -> None:
    source = _encode(
        Image.new("RGB", (32, 32), (255, 0, 0)),
        fmt,
        icc_profile=_swapped_primaries_profile(),
        **({"quality": 95} if fmt != "PNG" else {}),
    )
    out = _open(_run(source).data)
    assert not out.info.get("icc_profile")
    r, g, b = _mean_rgb(out)
    assert b > 200 and r < 60 and g < 60, (r, g, b)


# --------------------------------------------------------------------------- orientation & metadata


def _rotated_jpeg(**extra_exif: Any) -> bytes:
    """Stored landscape 60x40, EXIF orientation 6: displays as portrait 40x60 with a red
    top-left corner."""
    upright = Image.new("RGB", (40, 60), BLUE)
    upright.paste(RED, (0, 0, 12, 12))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "ACME"
    for key, value in extra_exif.items():
        exif[int(key)] = value
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied_and_stripped() -> None:
    result = _run(_rotated_jpeg())
    out = _open(result.data)
    assert (result.width, result.height) == out.size == (40, 60)
    assert _close(_mean_rgb(out.crop((1, 1, 10, 10))), tuple(map(float, RED)), 25)
    assert _close(_mean_rgb(out.crop((30, 50, 40, 60))), tuple(map(float, BLUE)), 25)
    assert "exif" not in out.info
    assert len(out.getexif()) == 0


def test_keep_metadata_keeps_exif_but_not_orientation() -> None:
    out = _open(_run(_rotated_jpeg(), keep_metadata=True).data)
    exif = out.getexif()
    assert exif.get(ExifTags.Base.Make) == "ACME"
    assert ExifTags.Base.Orientation not in exif
    assert out.size == (40, 60)


def _gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "ACME"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    return _encode(_photo((32, 32)), "JPEG", exif=exif.tobytes(), comment=b"secret")


def test_gps_and_comment_are_stripped_by_default() -> None:
    source = _gps_jpeg()
    assert _open(source).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    out = _open(_run(source).data)
    assert "exif" not in out.info
    assert "comment" not in out.info
    assert not out.getexif().get_ifd(ExifTags.IFD.GPSInfo)


def test_keep_metadata_keeps_gps() -> None:
    out = _open(_run(_gps_jpeg(), keep_metadata=True).data)
    assert out.getexif().get_ifd(ExifTags.IFD.GPSInfo).get(ExifTags.GPS.GPSLatitudeRef) == "N"


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("source_format", "requested", "expected_format", "content_type", "extension"),
    [
        ("WEBP", "keep", "WEBP", "image/webp", "webp"),
        ("JPEG", "webp", "WEBP", "image/webp", "webp"),
        ("PNG", "jpeg", "JPEG", "image/jpeg", "jpg"),
        ("JPEG", "avif", "AVIF", "image/avif", "avif"),
        ("AVIF", "keep", "AVIF", "image/avif", "avif"),
        ("JPEG", "png", "PNG", "image/png", "png"),
        ("TIFF", "keep", "JPEG", "image/jpeg", "jpg"),
        ("GIF", "keep", "GIF", "image/gif", "gif"),
    ],
)
def test_output_formats(
    source_format: str, requested: str, expected_format: str, content_type: str, extension: str
) -> None:
    source = _encode(_photo((48, 32)), source_format)
    result = _run(source, output_format=requested)
    out = _open(result.data)
    assert out.format == expected_format
    assert (result.content_type, result.extension) == (content_type, extension)
    assert result.source_format == source_format.lower()
    assert out.size == (48, 32)


def test_tiff_with_alpha_becomes_png() -> None:
    result = _run(_encode(_half_transparent(), "TIFF"))
    out = _open(result.data)
    assert out.format == "PNG"
    assert out.getpixel((0, 0))[3] == 0  # type: ignore[index]


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (20, 20), colour) for colour in (RED, (30, 200, 30), BLUE)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_keeps_first_frame_only(fmt: str) -> None:
    first, *rest = _frames()
    source = _encode(first, fmt, save_all=True, append_images=rest, duration=100, loop=0)
    assert getattr(_open(source), "n_frames", 1) == 3
    out = _open(_run(source).data)
    assert out.format == fmt
    assert getattr(out, "n_frames", 1) == 1
    assert _close(_mean_rgb(out), tuple(map(float, RED)), 25)


def test_gif_transparency_survives() -> None:
    out = _open(_run(_encode(_half_transparent(), "GIF")).data)
    assert out.format == "GIF"
    rgba = out.convert("RGBA")
    assert rgba.getpixel((5, 5))[3] == 0  # type: ignore[index]
    assert rgba.getpixel((35, 5))[3] == 255  # type: ignore[index]


# --------------------------------------------------------------------------- resizing


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ({"max_width": 100}, (100, 50)),
        ({"max_height": 30}, (60, 30)),
        ({"max_width": 100, "max_height": 100}, (100, 50)),
        ({"max_width": 1000, "max_height": 1000}, (400, 200)),  # never upscale
        ({"max_width": 400}, (400, 200)),
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_bounding_box(fmt: str, box: dict[str, int], expected: tuple[int, int]) -> None:
    result = _run(_encode(_photo((400, 200)), fmt), **box)
    assert (result.width, result.height) == _open(result.data).size == expected


def test_large_jpeg_draft_path_gives_exact_size() -> None:
    source = _encode(_photo((2000, 1000)), "JPEG", quality=90)
    result = _run(source, max_width=150)
    assert _open(result.data).size == (150, 75)


def test_bounding_box_applies_to_upright_image() -> None:
    result = _run(_rotated_jpeg(), max_width=20)
    out = _open(result.data)
    assert out.size == (20, 30)
    assert _close(_mean_rgb(out.crop((0, 0, 4, 4))), tuple(map(float, RED)), 40)


def _quadrant_means(im: Image.Image) -> list[tuple[float, ...]]:
    w, h = im.size
    boxes = [
        (0, 0, w // 2, h // 2),
        (w // 2, 0, w, h // 2),
        (0, h // 2, w // 2, h),
        (w // 2, h // 2, w, h),
    ]
    return [_mean_rgb(im.crop(box)) for box in boxes]


def _spy_on_colour(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The sizes ``to_srgb`` is handed, in order."""
    seen: list[tuple[int, int]] = []
    real = colour.to_srgb

    def spy(im: Image.Image) -> Image.Image:
        seen.append(im.size)
        return real(im)

    monkeypatch.setattr(pipeline, "to_srgb", spy)  # where the pipeline looks it up
    return seen


def test_a_shrunk_photo_is_turned_and_colour_managed_at_its_output_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy_on_colour(monkeypatch)
    upright = _photo((600, 1200))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    profile = _swapped_primaries_profile()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 1200x600, as a camera stores it
    source = _encode(stored, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=profile)

    result = _run(source, max_width=150)

    out = _open(result.data)
    assert out.size == (result.width, result.height) == (150, 300)
    assert seen == [(150, 300)]  # not the 600x1200 decoded
    # The picture the full-size order gives: turn, convert, then shrink.
    reference = ImageCms.profileToProfile(
        upright, ImageCms.ImageCmsProfile(BytesIO(profile)), ImageCms.createProfile("sRGB")
    )
    assert reference is not None
    reference.thumbnail((150, 1 << 30), Image.Resampling.LANCZOS)
    for got, want in zip(_quadrant_means(out), _quadrant_means(reference), strict=True):
        assert _close(got, want, 3), (got, want)


def test_a_palette_image_takes_its_colours_before_it_is_shrunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _spy_on_colour(monkeypatch)
    source = _encode(_photo((400, 200)).quantize(64), "PNG")

    result = _run(source, max_width=100)

    assert (result.width, result.height) == (100, 50)
    assert seen == [(400, 200)]  # to RGB first: a palette resamples by nearest neighbour


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_corrupt(fmt: str) -> None:
    data = _encode(_photo(), fmt)
    with pytest.raises(ImageError) as info:
        _run(data[: len(data) // 2])
    assert info.value.code == "corrupt_image"
    assert info.value.message.startswith("image data is truncated or corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_garbage_after_magic_is_corrupt() -> None:
    with pytest.raises(ImageError) as info:
        _run(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    assert info.value.code == "corrupt_image"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
        (b"\n  <html><head></head></html>", "HTML"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"", "empty"),
        (b"just some text\n", "text"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "EPS"),
        (b"%PDF-1.7\n", "PDF"),
        (b"8BPS\x00\x01" + b"\x00" * 30, "PSD"),
        (b"BM" + b"\x00" * 60, "BMP"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 16, "HEIC"),
    ],
)
def test_non_images_are_unsupported(data: bytes, needle: str) -> None:
    with pytest.raises(ImageError) as info:
        _run(data)
    assert info.value.code == "unsupported_format"
    assert needle in info.value.message


def test_real_bmp_is_refused() -> None:
    with pytest.raises(ImageError) as info:
        _run(_encode(_photo((8, 8)), "BMP"))
    assert info.value.code == "unsupported_format"


def test_pixel_cap() -> None:
    data = _encode(_photo((100, 100)), "PNG")
    with pytest.raises(ImageError) as info:
        transform(data, TransformOptions(), max_pixels=1000)
    assert info.value.code == "image_too_large"
    assert "100x100" in info.value.message
    assert transform(data, TransformOptions(), max_pixels=10_000).width == 100


@pytest.mark.parametrize(
    ("size", "max_pixels"),
    [
        ((100_000, 100_000), 50_000_000),  # our cap and Pillow's hard error both trip
        ((100_000, 100_000), 10**12),  # Pillow's DecompressionBombError alone
        ((10_000, 10_000), 10**9),  # Pillow's warning, promoted to an error
        ((20_000, 20_000), 50_000_000),
    ],
)
def test_bomb_header_is_refused_before_decoding(size: tuple[int, int], max_pixels: int) -> None:
    with pytest.raises(ImageError) as info:
        transform(_png_header_only(*size), TransformOptions(), max_pixels=max_pixels)
    assert info.value.code == "image_too_large"


def test_image_error_pickles() -> None:
    with pytest.raises(ImageError) as info:
        _run(b"<html></html>")
    clone = pickle.loads(pickle.dumps(info.value))
    assert isinstance(clone, ImageError)
    assert (clone.code, clone.message, clone.status_code) == (
        "unsupported_format",
        info.value.message,
        422,
    )


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "bad",
    [
        {"quality": 0},
        {"quality": 101},
        {"relative_quality": 0},
        {"relative_quality": 1.5},
        {"max_width": 0},
        {"max_height": 20001},
        {"output_format": "bmp"},
        {"unknown": 1},
    ],
)
def test_options_validation(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TransformOptions(**bad)


def test_options_are_frozen_and_parse_strings() -> None:
    options = TransformOptions.model_validate({"output_format": "webp"})
    assert options.output_format is OutputFormat.WEBP
    with pytest.raises(ValidationError):
        options.quality = 5  # type: ignore[misc]
