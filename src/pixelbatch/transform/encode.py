"""Choose the output format and quality of one image and encode it, with no metadata leaking.

Only explicit encoder parameters are used: Pillow's defaults would carry the source's ICC
profile, comments, XMP or EXIF (GPS!) into the output through ``im.info``.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Final

from PIL import Image

from pixelbatch.errors import ImageError
from pixelbatch.transform.options import OutputFormat, TransformOptions

__all__ = ["CONTENT_TYPES", "encode", "output_format", "output_quality"]

# Output format (Pillow name) -> content type and file extension of what is stored.
CONTENT_TYPES: Final[dict[str, tuple[str, str]]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}


def output_format(source: str, requested: OutputFormat, im: Image.Image) -> str:
    """Map the request onto a Pillow save format; TIFF is not a web format, so KEEP
    turns it into JPEG (or PNG when there is alpha to preserve)."""
    if requested is not OutputFormat.KEEP:
        return requested.value.upper()
    if source in ("JPEG", "PNG", "WEBP", "GIF", "AVIF"):
        return source
    return "PNG" if im.mode == "RGBA" else "JPEG"


def output_quality(out_format: str, options: TransformOptions, source_q: int | None) -> int | None:
    """Absolute wins; else relative to the JPEG source's quality; else the format's scale."""
    if out_format in ("PNG", "GIF"):
        return None
    if options.quality is not None:
        return options.quality
    if source_q is not None:
        return min(100, max(1, round(source_q * options.relative_quality)))
    return min(100, max(1, round(100 * options.relative_quality)))


def encode(
    im: Image.Image,
    out_format: str,
    quality: int | None,
    exif: bytes | None,
    jpeg_optimize: bool,
) -> tuple[bytes, Image.Image]:
    """Save with explicit parameters only, from an image whose ``info`` is emptied so no
    source metadata (ICC, comment, XMP, EXIF) can leak through encoder defaults."""
    if out_format == "JPEG":
        im = _flatten_on_white(im) if im.mode == "RGBA" else im
        params: dict[str, Any] = {
            "quality": quality,
            "optimize": jpeg_optimize,
            "progressive": False,
        }
    elif out_format == "WEBP":
        im = im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
        params = {"quality": quality, "method": 4}
    elif out_format == "AVIF":
        im = im if im.mode in ("RGB", "RGBA") else im.convert("RGB")
        params = {"quality": quality, "speed": 8}
    elif out_format == "PNG":
        params = {"optimize": False, "compress_level": 6}
    elif out_format == "GIF":
        im, params = _to_gif_palette(im)
        exif = None  # GIF has no EXIF container
    else:  # pragma: no cover - guarded by output_format
        raise ImageError(f"unsupported output format: {out_format}", code="unsupported_format")

    im.info = {}
    if exif:
        params["exif"] = exif
    buf = BytesIO()
    im.save(buf, format=out_format, **params)
    return buf.getvalue(), im


def _flatten_on_white(im: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite so transparent areas become white, not black."""
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background


def _to_gif_palette(im: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
    """Quantise to 255 colours and reserve index 255 for fully transparent pixels."""
    if im.mode != "RGBA":
        return im.convert("RGB").quantize(256), {}
    paletted = im.convert("RGB").quantize(255)
    transparent = im.getchannel("A").point(lambda a: 255 if a < 128 else 0, mode="1")
    paletted.paste(255, mask=transparent)
    return paletted, {"transparency": 255}
