"""Remove metadata from a JPEG or PNG without touching its pixels: a walk over its markers
or chunks, never a decode and re-encode.

This is what "never a bigger file" stores when a re-encode would not be smaller than the
source: the source's own compressed data, byte-exact, minus everything that is metadata.

- JPEG: every APPn segment is dropped (EXIF and its GPS, XMP, IPTC/Photoshop APP13, JFIF,
  MPF...) except APP2 ``ICC_PROFILE`` (the pixels' colour meaning) and APP14 ``Adobe``
  (12 bytes that tell a decoder whether the components are RGB or YCbCr: dropping it
  would change the decoded colours). COM segments are dropped. Tables, frame and scan
  headers and the entropy-coded data are copied as they are; bytes after EOI (a second
  MPO picture, vendor trailers) are dropped.
- PNG: ``tEXt``, ``zTXt``, ``iTXt``, ``tIME`` and ``eXIf`` are dropped; every other chunk
  (colour chunks ``iCCP``/``sRGB``/``gAMA``/``cHRM`` included) is copied with its CRC.
- WebP: the ``EXIF`` and ``XMP `` chunks are dropped and their flags cleared in ``VP8X``;
  the image chunks and ``ICCP`` are copied. GIF, TIFF and AVIF are not stripped here.

``exif`` (the ``keep_metadata`` case) is written back as the only EXIF: the same bytes a
re-encode would carry (a simple WebP, which has no ``VP8X`` to flag it in, is then left to
the re-encode). Anything that does not parse as expected returns None, and the
caller stores its re-encode instead: stripping is an optimisation, never a failure.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Final

__all__ = ["strip_jpeg", "strip_metadata", "strip_png", "strip_webp"]

_SOI: Final = b"\xff\xd8"
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_ICC_ID: Final = b"ICC_PROFILE\x00"
_ADOBE_ID: Final = b"Adobe"
_EXIF_ID: Final = b"Exif\x00\x00"
_PNG_DROPPED: Final = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"})
# Markers without a length: TEM and RST0..7 (SOI and EOI are handled where they occur).
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})
_MAX_SEGMENT: Final = 0xFFFF - 2
# In entropy-coded data, 0xFF 0x00 is a stuffed 0xFF and 0xFF 0xD0-D7 a restart marker.
_MARKER_IN_SCAN: Final = re.compile(rb"\xff[^\x00\xd0-\xd7]", re.DOTALL)


def strip_metadata(data: bytes, source_format: str, exif: bytes | None = None) -> bytes | None:
    """The stripped source for a Pillow format name (``"JPEG"``, ``"PNG"``, ``"WEBP"``), or
    None when this format is not stripped here (GIF, TIFF, AVIF) or did not parse."""
    if source_format == "JPEG":
        return strip_jpeg(data, exif)
    if source_format == "PNG":
        return strip_png(data, exif)
    if source_format == "WEBP":
        return strip_webp(data, exif)
    return None


def _kept_app(marker: int, payload: bytes) -> bool:
    """Whether an APPn segment is kept: the ICC profile and the Adobe colour transform."""
    return (marker == 0xE2 and payload.startswith(_ICC_ID)) or (
        marker == 0xEE and payload.startswith(_ADOBE_ID)
    )


def strip_jpeg(data: bytes, exif: bytes | None = None) -> bytes | None:
    """``data`` without its metadata segments (see the module docstring), or None when the
    marker structure is not a plain baseline/progressive JPEG this walk understands.

    ``exif`` is a complete EXIF block starting ``Exif\\0\\0`` (as ``Image.Exif.tobytes``
    makes it); it becomes an APP1 segment right after SOI."""
    if not data.startswith(_SOI):
        return None
    out = [_SOI]
    if exif:
        if not exif.startswith(_EXIF_ID) or len(exif) > _MAX_SEGMENT:
            return None
        out.append(b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif)
    pos = 2
    end = len(data)
    while pos < end:
        if data[pos] != 0xFF:
            return None
        while pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: the image ends; trailing bytes are not part of it
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker in _STANDALONE:
            out.append(bytes((0xFF, marker)))
            continue
        if marker in (0x00, 0xD8) or pos + 2 > end:
            return None
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > end:
            return None
        segment_end = pos + length
        payload = data[pos + 2 : segment_end]
        if 0xE0 <= marker <= 0xEF:
            if _kept_app(marker, payload):
                out.append(data[pos - 2 : segment_end])
        elif marker != 0xFE:  # COM is dropped; tables, frame and scan headers are kept
            out.append(data[pos - 2 : segment_end])
        pos = segment_end
        if marker == 0xDA:  # SOS: entropy-coded data up to the next real marker, as is
            scan_end = _entropy_end(data, pos)
            if scan_end is None:
                return None
            out.append(data[pos:scan_end])
            pos = scan_end
    return None  # no EOI: truncated


def _entropy_end(data: bytes, pos: int) -> int | None:
    """Offset of the first marker after entropy-coded data starting at ``pos``: a 0xFF
    followed by neither a stuffed 0x00 nor a restart marker (which belong to the scan).
    A regular expression, so the scan runs in C: a Python loop over every 0xFF of a
    photo's entropy data cost milliseconds per image."""
    found = _MARKER_IN_SCAN.search(data, pos)
    return found.start() if found is not None else None


def strip_png(data: bytes, exif: bytes | None = None) -> bytes | None:
    """``data`` without its text, time and EXIF chunks, or None when the chunk structure
    is broken. ``exif`` (with or without the ``Exif\\0\\0`` prefix) becomes one ``eXIf``
    chunk right after IHDR, as the PNG specification wants it before the image data."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    end = len(data)
    first = True
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        chunk_end = pos + 12 + length
        if chunk_end > end or (first and kind != b"IHDR"):
            return None
        if kind not in _PNG_DROPPED:
            out.append(data[pos:chunk_end])
        if first and exif:
            body = exif[len(_EXIF_ID) :] if exif.startswith(_EXIF_ID) else exif
            out.append(_png_chunk(b"eXIf", body))
        first = False
        pos = chunk_end
        if kind == b"IEND":
            return b"".join(out)
    return None  # no IEND: truncated


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


_WEBP_METADATA: Final = frozenset({b"EXIF", b"XMP "})
_VP8X_EXIF: Final = 0x08
_VP8X_XMP: Final = 0x04


def strip_webp(data: bytes, exif: bytes | None = None) -> bytes | None:
    """``data`` without its EXIF and XMP chunks, or None when the RIFF structure is broken.
    ``exif`` becomes the only ``EXIF`` chunk (after the image data, where the container
    specification puts it); a simple WebP (no ``VP8X``) cannot carry it and gives None."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if end > len(data):
        return None
    chunks: list[bytes] = []
    pos = 12
    while pos < end:
        if pos + 8 > end:
            return None
        kind = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        chunk_end = pos + 8 + size + (size & 1)
        if chunk_end > end:
            return None
        if kind not in _WEBP_METADATA:
            chunks.append(data[pos:chunk_end])
        pos = chunk_end
    if not chunks:
        return None
    if chunks[0][:4] == b"VP8X" and len(chunks[0]) >= 9:
        flags = chunks[0][8] & ~(_VP8X_EXIF | _VP8X_XMP)
        if exif:
            flags |= _VP8X_EXIF
            body = exif[len(_EXIF_ID) :] if exif.startswith(_EXIF_ID) else exif
            pad = b"\x00" if len(body) & 1 else b""
            chunks.append(b"EXIF" + struct.pack("<I", len(body)) + body + pad)
        chunks[0] = chunks[0][:8] + bytes((flags,)) + chunks[0][9:]
    elif exif:
        return None
    payload = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
