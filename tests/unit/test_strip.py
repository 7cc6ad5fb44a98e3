"""Lossless metadata stripping (transform/strip.py): a walk over markers and chunks that
must drop every metadata segment, keep the colour profile, and leave the compressed image
data byte-exact. Every fixture is a real file made by Pillow in memory."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from pixelbatch.transform.strip import strip_jpeg, strip_metadata, strip_png, strip_webp
from tests.support import jpeg

SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def gps_exif() -> bytes:
    """EXIF with a camera name and a GPS position: what must never leak."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
    }
    return exif.tobytes()


def app13() -> bytes:
    body = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x05caption"
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def laden_jpeg(**params: Any) -> bytes:
    """A JPEG with APP0 JFIF, APP1 EXIF (GPS), APP1 XMP, APP2 ICC, APP13 IPTC and COM."""
    data = jpeg(
        (320, 240),
        quality=60,
        exif=gps_exif(),
        icc_profile=SRGB_ICC,
        comment="shot at home",
        xmp=XMP,
        **params,
    )
    return data[:2] + app13() + data[2:]


def segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the first SOS: an independent walk."""
    found = []
    pos = 2
    while data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        found.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return found


def scan_data(data: bytes) -> bytes:
    """From the first SOS to the end: scan headers and entropy-coded data."""
    pos = 2
    while data[pos + 1] != 0xDA:
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return data[pos:]


def pixels(data: bytes) -> bytes:
    with Image.open(BytesIO(data)) as im:
        return im.convert("RGB").tobytes()


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found = []
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        found.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


# --------------------------------------------------------------------------- JPEG


def test_jpeg_keeps_only_the_icc_profile_and_the_exact_scan() -> None:
    source = laden_jpeg()
    markers = {m for m, _ in segments(source)}
    assert {0xE0, 0xE1, 0xE2, 0xED, 0xFE} <= markers  # the fixture carries them all
    out = strip_jpeg(source)
    assert out is not None
    kept = segments(out)
    assert [m for m, _ in kept if 0xE0 <= m <= 0xEF or m == 0xFE] == [0xE2]
    assert b"".join(p for m, p in kept if m == 0xE2)[14:] == SRGB_ICC
    assert b"SecretCam" not in out and b"shot at home" not in out and b"Photoshop" not in out
    assert scan_data(out) == scan_data(source)
    assert pixels(out) == pixels(source)
    assert len(out) < len(source)
    with Image.open(BytesIO(out)) as im:
        assert not im.getexif()
        assert im.info.get("icc_profile") == SRGB_ICC


def test_progressive_jpeg_with_restart_markers_is_byte_exact() -> None:
    source = laden_jpeg(progressive=True, restart_marker_blocks=4)
    out = strip_jpeg(source)
    assert out is not None
    assert scan_data(out) == scan_data(source)
    assert pixels(out) == pixels(source)
    assert b"SecretCam" not in out


def test_bytes_after_eoi_are_dropped() -> None:
    source = laden_jpeg() + b"GPS 52.5N trailer"
    out = strip_jpeg(source)
    assert out is not None and out.endswith(b"\xff\xd9")
    assert b"trailer" not in out


def test_kept_exif_is_written_as_the_only_app1() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "KeptCam"
    out = strip_jpeg(laden_jpeg(), exif.tobytes())
    assert out is not None
    app1 = [p for m, p in segments(out) if m == 0xE1]
    assert app1 == [exif.tobytes()]
    with Image.open(BytesIO(out)) as im:
        assert im.getexif()[ExifTags.Base.Make] == "KeptCam"


@pytest.mark.parametrize(
    "broken",
    [
        b"\xff\xd8\xff\xe0\x00",  # truncated length
        b"\xff\xd8\x00\x00",  # not a marker
        b"not a jpeg",
    ],
)
def test_broken_jpeg_structure_is_not_stripped(broken: bytes) -> None:
    assert strip_jpeg(broken) is None


def test_truncated_jpeg_is_not_stripped() -> None:
    source = laden_jpeg()
    assert strip_jpeg(source[: len(source) - 200]) is None


# --------------------------------------------------------------------------- PNG


def laden_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at home")
    info.add_text("Location", "52.5N 13.4E", zip=True)
    info.add_itxt("Author", "Jane Doe")
    info.add(b"tIME", struct.pack(">HBBBBB", 2026, 11, 30, 12, 0, 0))
    buf = BytesIO()
    im = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    im.save(buf, "PNG", pnginfo=info, exif=gps_exif(), icc_profile=SRGB_ICC)
    return buf.getvalue()


def test_png_drops_text_time_and_exif_chunks_only() -> None:
    source = laden_png()
    kinds = [k for k, _ in chunks(source)]
    assert {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf", b"iCCP"} <= set(kinds)
    out = strip_png(source)
    assert out is not None
    assert [k for k, _ in chunks(out)] == [
        k for k in kinds if k not in (b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf")
    ]
    idat = [b for k, b in chunks(source) if k == b"IDAT"]
    assert [b for k, b in chunks(out) if k == b"IDAT"] == idat
    assert pixels(out) == pixels(source)
    assert b"SecretCam" not in out and b"Jane Doe" not in out
    with Image.open(BytesIO(out)) as im:
        assert im.info.get("icc_profile") == zlib.decompress(
            next(b for k, b in chunks(source) if k == b"iCCP").split(b"\x00", 1)[1][1:]
        )


def test_png_kept_exif_is_one_exif_chunk_before_the_image_data() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "KeptCam"
    out = strip_png(laden_png(), exif.tobytes())
    assert out is not None
    kinds = [k for k, _ in chunks(out)]
    assert kinds.count(b"eXIf") == 1 and kinds.index(b"eXIf") < kinds.index(b"IDAT")
    with Image.open(BytesIO(out)) as im:
        im.load()
        assert im.getexif()[ExifTags.Base.Make] == "KeptCam"


def test_broken_png_is_not_stripped() -> None:
    source = laden_png()
    assert strip_png(source[:-20]) is None  # no IEND
    assert strip_png(source[:8] + b"\x00\x00\x00\x00IDAT" + source[16:]) is None


def test_other_formats_are_left_to_the_re_encode() -> None:
    assert strip_metadata(b"GIF89a", "GIF") is None
    source = laden_jpeg()
    assert strip_metadata(source, "JPEG") == strip_jpeg(source)


# --------------------------------------------------------------------------- WebP


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found = []
    pos = 12
    while pos < len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        found.append((kind, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return found


def laden_webp(**params: Any) -> bytes:
    buf = BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(
        buf, "WEBP", quality=60, exif=gps_exif(), xmp=XMP, icc_profile=SRGB_ICC, **params
    )
    return buf.getvalue()


def test_webp_drops_exif_and_xmp_and_clears_their_flags() -> None:
    source = laden_webp()
    kinds = [k for k, _ in riff_chunks(source)]
    assert {b"VP8X", b"ICCP", b"EXIF", b"XMP "} <= set(kinds)
    out = strip_webp(source)
    assert out is not None
    kept = riff_chunks(out)
    assert [k for k, _ in kept] == [k for k in kinds if k not in (b"EXIF", b"XMP ")]
    assert kept[0][1][0] & (0x08 | 0x04) == 0  # VP8X: no EXIF, no XMP
    image = [b for k, b in riff_chunks(source) if k in (b"VP8 ", b"VP8L", b"ALPH")]
    assert [b for k, b in kept if k in (b"VP8 ", b"VP8L", b"ALPH")] == image
    assert struct.unpack_from("<I", out, 4)[0] == len(out) - 8
    assert pixels(out) == pixels(source)
    assert b"SecretCam" not in out and b"xmpmeta" not in out
    with Image.open(BytesIO(out)) as im:
        assert im.info.get("icc_profile") == SRGB_ICC
        assert not im.getexif()


def test_webp_kept_exif_is_flagged_and_readable() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "KeptCam"
    out = strip_webp(laden_webp(), exif.tobytes())
    assert out is not None
    assert [k for k, _ in riff_chunks(out)].count(b"EXIF") == 1
    assert riff_chunks(out)[0][1][0] & 0x08
    with Image.open(BytesIO(out)) as im:
        assert im.getexif()[ExifTags.Base.Make] == "KeptCam"


def test_simple_webp_has_nothing_to_strip_and_cannot_take_exif() -> None:
    buf = BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, "WEBP", quality=80)
    simple = buf.getvalue()
    assert riff_chunks(simple)[0][0] == b"VP8 "
    assert strip_webp(simple) == simple
    assert strip_webp(simple, gps_exif()) is None
    assert strip_webp(simple[:-10]) is None  # the RIFF size claims more than there is
