"""Decode, normalise, resize and re-encode one image: bytes in, bytes out.

Everything here is pure and CPU-bound so it can run in a process pool; every failure a
hostile or broken input can cause surfaces as an ``ImageError`` that fails that image only.
"""

from __future__ import annotations

import codecs
import math
import struct
import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps

from pixelbatch.errors import ImageError
from pixelbatch.transform.options import OutputFormat, TransformOptions
from pixelbatch.transform.quality import estimate_jpeg_quality

# Only these Pillow plugins may ever parse input. This keeps delegate-backed formats
# (EPS runs Ghostscript) and rarely-exercised parsers away from untrusted bytes.
ALLOWED_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "AVIF")

_CONTENT_TYPES: Final[dict[str, tuple[str, str]]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}

_HEIF_BRANDS: Final[frozenset[bytes]] = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)

_SRGB_PROFILE: Final = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class TransformResult:
    """The encoded output plus what the catalog CSV and storage layer need to know."""

    data: bytes
    content_type: str
    extension: str  # "jpg", "png", "webp", "gif", "avif"
    width: int
    height: int
    source_format: str  # lower-case Pillow format name, e.g. "jpeg"
    source_quality: int | None  # estimated IJG quality of a JPEG source
    output_quality: int | None  # None for lossless / palette outputs


def transform(
    data: bytes,
    options: TransformOptions,
    *,
    max_pixels: int = 50_000_000,
    jpeg_optimize: bool = True,
) -> TransformResult:
    """Re-encode ``data`` according to ``options``.

    Raises ``ImageError`` with code ``unsupported_format``, ``image_too_large`` or
    ``corrupt_image``; anything else escaping is a bug, not a bad input.
    """
    sniffed = _sniff(data)
    if sniffed is None:
        raise ImageError(
            f"not an image: looks like {_describe_non_image(data)}", code="unsupported_format"
        )
    if sniffed not in ALLOWED_FORMATS:
        raise ImageError(f"unsupported image format: {sniffed}", code="unsupported_format")

    # Pillow would silently pad truncated images with grey if this were ever flipped on.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = _open_and_load(data, sniffed, options, max_pixels)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"image too large: {exc}", code="image_too_large") from None
        except MemoryError:
            raise ImageError(
                "image too large: ran out of memory while decoding", code="image_too_large"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            # UnidentifiedImageError is an OSError: magic matched but the header is broken.
            raise ImageError(
                f"image data is truncated or corrupt: {exc}", code="corrupt_image"
            ) from None

    source_format = "JPEG" if im.format == "MPO" else (im.format or sniffed)
    source_quality: int | None = None
    if source_format == "JPEG":
        source_quality = estimate_jpeg_quality(getattr(im, "quantization", None) or {})

    try:
        # In place, and each step rebinds ``im``: a 24 MP photo is 72 MB decoded, and a
        # copy kept alive per step would double or triple a worker's peak memory.
        ImageOps.exif_transpose(im, in_place=True)
        # Read after transposing: exif_transpose drops the orientation tag it applied.
        exif_bytes = _kept_exif(im) if options.keep_metadata else None
        im = _to_srgb(im)
        if options.max_width is not None or options.max_height is not None:
            im.thumbnail(_bounding_box(options), Image.Resampling.LANCZOS)
        out_format = _output_format(source_format, options.output_format, im)
        quality = _output_quality(out_format, options, source_quality)
        encoded, final = _encode(im, out_format, quality, exif_bytes, jpeg_optimize)
        del im
    except (OSError, ValueError, SyntaxError, struct.error, ImageCms.PyCMSError) as exc:
        raise ImageError(
            f"image data is truncated or corrupt: {exc}", code="corrupt_image"
        ) from None

    content_type, extension = _CONTENT_TYPES[out_format]
    return TransformResult(
        data=encoded,
        content_type=content_type,
        extension=extension,
        width=final.width,
        height=final.height,
        source_format=source_format.lower(),
        source_quality=source_quality,
        output_quality=quality,
    )


# --------------------------------------------------------------------------- decoding


def _open_and_load(
    data: bytes, sniffed: str, options: TransformOptions, max_pixels: int
) -> Image.Image:
    """Open with the allowlist, enforce the pixel cap from the header, then decode."""
    im = Image.open(BytesIO(data), formats=list(ALLOWED_FORMATS))
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height} pixels "
            f"exceeds the limit of {max_pixels}",
            code="image_too_large",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    _check_animation(im, data, max_pixels)
    if im.format in ("JPEG", "MPO") and (
        options.max_width is not None or options.max_height is not None
    ):
        # DCT-domain downscaling is far cheaper than decoding full size and resizing.
        target = _draft_target(im, options)
        if target is not None:
            im.draft("RGB", target)
    # Animated GIF/WebP/AVIF and multi-page TIFF: the freshly opened image is frame 0.
    im.load()
    return im


def _check_animation(im: Image.Image, data: bytes, max_pixels: int) -> None:
    """Cap frames x area for animations, from their headers, before any frame is decoded.

    Only the first frame is ever decoded, but the pixel cap covers an animation's whole
    budget, so a file claiming thousands of large frames is refused up front. Multi-page
    TIFF and MPO are not animations: they keep their first page and the plain area cap.
    """
    width, height = im.size
    area = max(1, width * height)
    most = max(1, max_pixels // area)  # frames allowed at this size
    if im.format == "GIF":
        # Pillow's n_frames walks every frame in Python; stop counting past the limit.
        frames = _gif_frames_at_most(data, most + 1)
    elif im.format in ("PNG", "WEBP", "AVIF"):
        frames = int(getattr(im, "n_frames", 1))  # from acTL / the container header
    else:
        return
    if frames > most:
        # A GIF is only counted up to the limit: its real frame count may be higher.
        counted = f"more than {most}" if im.format == "GIF" else str(frames)
        raise ImageError(
            f"image too large: animation of {counted} frames of {width}x{height} exceeds "
            f"the limit of {max_pixels} pixels (at most {most} frames at this size)",
            code="image_too_large",
            details={
                "width": width,
                "height": height,
                "max_frames": most,
                "max_pixels": max_pixels,
            },
        )


def _gif_frames_at_most(data: bytes, limit: int) -> int:
    """Count a GIF's image descriptors by walking its block structure, stopping at
    ``limit``. Only lengths are read: no pixel data is decompressed."""
    if len(data) < 13:
        return 1
    pos = 13
    packed = data[10]
    if packed & 0x80:
        pos += 3 << ((packed & 7) + 1)
    frames = 0
    end = len(data)
    while pos < end and frames < limit:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor
            if pos + 10 > end:
                break
            frames += 1
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 << ((local & 7) + 1)
            pos += 1  # LZW minimum code size
        else:
            break
        while pos < end:  # sub-blocks, each prefixed by its length; 0 ends them
            size = data[pos]
            pos += 1 + size
            if size == 0:
                break
    return max(1, frames)


def _draft_target(im: Image.Image, options: TransformOptions) -> tuple[int, int] | None:
    """Size to ask the JPEG decoder for: twice the final size, like ``reducing_gap=2``."""
    width, height = im.size
    orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    swapped = orientation in (5, 6, 7, 8)
    if swapped:  # the box applies to the upright image
        width, height = height, width
    box_w, box_h = _bounding_box(options)
    scale = min(box_w / width, box_h / height)
    if scale >= 1:
        return None
    target_w = min(width, math.ceil(width * scale) * 2)
    target_h = min(height, math.ceil(height * scale) * 2)
    return (target_h, target_w) if swapped else (target_w, target_h)


def _bounding_box(options: TransformOptions) -> tuple[int, int]:
    """A missing side is unbounded; ``thumbnail`` then only ever shrinks."""
    unbounded = 1 << 30
    return (options.max_width or unbounded, options.max_height or unbounded)


# --------------------------------------------------------------------------- colour


def _to_srgb(im: Image.Image) -> Image.Image:
    """Normalise to L, RGB or RGBA in sRGB so every encoder and viewer agrees on colour."""
    icc = im.info.get("icc_profile")
    mode = im.mode

    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        im = _high_depth_to_l(im)
    elif mode in ("LA", "La", "RGBa") or (mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")  # grey+alpha and tRNS colour keys become real alpha
    elif mode not in ("L", "RGB", "RGBA", "CMYK"):
        im = im.convert("RGB")  # YCbCr, RGBX, LAB-less oddities

    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        converted = _apply_icc(im, icc)
        if converted is not None:
            return converted
    if im.mode == "CMYK":
        # No usable profile: Pillow already undid Adobe's inversion when decoding.
        im = im.convert("RGB")
    return im


def _apply_icc(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert through the embedded profile; None if the profile is unusable."""
    try:
        source = ImageCms.ImageCmsProfile(BytesIO(icc))
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        # Same mode in and out (RGB photos, the common case): convert in place, so a 24 MP
        # photo does not need a second 72 MB buffer.
        in_place = im.mode == out_mode
        result = ImageCms.profileToProfile(
            im,
            source,
            _SRGB_PROFILE,
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode=out_mode,
            inPlace=in_place,
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile (e.g. a grey profile on RGB data) is common in
        # the wild; the pixels are still usable, so treat them as sRGB already.
        return None
    return im if in_place else result


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit/float greyscale to 8-bit by scaling, not clipping (convert('L') clips)."""
    as_float = im.convert("F")
    extrema = as_float.getextrema()
    high = float(extrema[1]) if isinstance(extrema[1], (int, float)) else 255.0
    if im.mode.startswith("I;16"):
        high = 65535.0
    factor = 255.0 / high if high > 255.0 else 1.0
    return as_float.point(lambda value: value * factor).convert("L")


# --------------------------------------------------------------------------- metadata


def _kept_exif(im: Image.Image) -> bytes | None:
    """Source EXIF minus orientation (pixels are already upright), or None if empty."""
    exif = im.getexif()
    exif.pop(ExifTags.Base.Orientation, None)
    if not exif:
        return None
    return exif.tobytes()


# --------------------------------------------------------------------------- encoding


def _output_format(source: str, requested: OutputFormat, im: Image.Image) -> str:
    """Map the request onto a Pillow save format; TIFF is not a web format, so KEEP
    turns it into JPEG (or PNG when there is alpha to preserve)."""
    if requested is not OutputFormat.KEEP:
        return requested.value.upper()
    if source in ("JPEG", "PNG", "WEBP", "GIF", "AVIF"):
        return source
    return "PNG" if im.mode == "RGBA" else "JPEG"


def _output_quality(out_format: str, options: TransformOptions, source_q: int | None) -> int | None:
    """Absolute wins; else relative to the JPEG source's quality; else the format's scale."""
    if out_format in ("PNG", "GIF"):
        return None
    if options.quality is not None:
        return options.quality
    if source_q is not None:
        return min(100, max(1, round(source_q * options.relative_quality)))
    return min(100, max(1, round(100 * options.relative_quality)))


def _encode(
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
    else:  # pragma: no cover - guarded by _output_format
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


# --------------------------------------------------------------------------- sniffing


def _sniff(data: bytes) -> str | None:
    """Identify the container from magic bytes (Pillow format names), None if not an image.

    Done before Pillow sees the data so non-images get a useful message and disallowed
    image formats never reach a parser.
    """
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


def _describe_non_image(data: bytes) -> str:
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
