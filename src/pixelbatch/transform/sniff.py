"""Name an upload's real format from its magic bytes, before any image parser sees it.

Done before Pillow so that disallowed formats never reach a parser (whatever the URL's
extension or Content-Type claimed) and a non-image, such as an HTML error page served with
status 200, fails with a message that says what it is.
"""

from __future__ import annotations

import codecs
from typing import Final

__all__ = ["describe_non_image", "sniff"]

_HEIF_BRANDS: Final[frozenset[bytes]] = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)


def sniff(data: bytes) -> str | None:
    """Identify the container from magic bytes (Pillow format names), None if not an image."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(data)
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "JPEG XL"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000"
    if head.startswith((b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")):
        return "ICO"
    if head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "EPS"
    return None


def _sniff_isobmff(data: bytes) -> str | None:
    """AVIF and HEIC share the ISO-BMFF ``ftyp`` box; tell them apart by brand."""
    size = int.from_bytes(data[0:4], "big")
    if size < 16 or size > len(data):
        size = min(len(data), 64)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)}
    if brands & {b"avif", b"avis"}:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIC"
    return None


def describe_non_image(data: bytes) -> str:
    """Best-effort human label for bytes that are not an image (shown in error reports)."""
    if not data:
        return "an empty file"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<body" in text:
        return "HTML"
    if text.startswith(b"<svg") or (text.startswith(b"<") and b"<svg" in text):
        return "SVG"
    if text.startswith(b"<?xml"):
        return "XML"
    if text.startswith(b"%pdf"):
        return "PDF"
    if text.startswith(b"%!ps"):
        return "PostScript/EPS"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if data.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if data.startswith(b"\x1f\x8b"):
        return "gzip data"
    try:
        # Incremental decoder: a multi-byte character cut at 1024 bytes is not an error.
        decoded = codecs.getincrementaldecoder("utf-8")().decode(data[:1024], final=False)
    except UnicodeDecodeError:
        return "unrecognised binary data"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in decoded):
        return "text"
    return "unrecognised binary data"
