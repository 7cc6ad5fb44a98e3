"""Transform one image, bytes in, bytes out: decode within limits, orient, resize, re-encode.

Everything here is pure and CPU-bound so it can run in a process pool; every failure a
hostile or broken input can cause surfaces as an ``ImageError`` that fails that image only.
The limits (pixels, animation frames x area) are checked from headers, before decoding,
because a decompression bomb must be refused before it has taken the memory.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Final

from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps

from pixelbatch.errors import ImageError
from pixelbatch.transform import lcms_direct
from pixelbatch.transform.colour import converts_in_place, to_srgb
from pixelbatch.transform.encode import CONTENT_TYPES, encode, output_format, output_quality
from pixelbatch.transform.options import TransformOptions
from pixelbatch.transform.quality import estimate_jpeg_quality
from pixelbatch.transform.sniff import describe_non_image, sniff
from pixelbatch.transform.strip import strip_metadata

# Only these Pillow plugins may ever parse input. This keeps delegate-backed formats
# (EPS runs Ghostscript) and rarely-exercised parsers away from untrusted bytes.
ALLOWED_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "AVIF")


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
    # The source itself, metadata stripped losslessly: a re-encode was not smaller.
    kept_original: bool = False


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
    sniffed = sniff(data)
    if sniffed is None:
        raise ImageError(
            f"not an image: looks like {describe_non_image(data)}", code="unsupported_format"
        )
    if sniffed not in ALLOWED_FORMATS:
        raise ImageError(f"unsupported image format: {sniffed}", code="unsupported_format")

    # Pillow would silently pad truncated images with grey if this were ever flipped on.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with _as_decode_errors():
        im, header_size = _open_checked(data, max_pixels)
    # A photo LittleCMS will convert is decoded into one block, which it can then convert
    # in place at its fastest (see ``lcms_direct``).
    with lcms_direct.contiguous_pixels(converts_in_place(im)):
        with _as_decode_errors():
            _decode(im, options)
        return _finish(im, data, options, header_size, sniffed, jpeg_optimize)


def _finish(
    im: Image.Image,
    data: bytes,
    options: TransformOptions,
    header_size: tuple[int, int],
    sniffed: str,
    jpeg_optimize: bool,
) -> TransformResult:
    """Orient, convert, resize and encode a decoded image (or keep its source)."""
    source_format = "JPEG" if im.format == "MPO" else (im.format or sniffed)
    source_quality: int | None = None
    if source_format == "JPEG":
        source_quality = estimate_jpeg_quality(getattr(im, "quantization", None) or {})

    try:
        facts = _SourceFacts(
            size=header_size,
            mode=im.mode,
            orientation=int(im.getexif().get(ExifTags.Base.Orientation, 1) or 1),
            frames=int(getattr(im, "n_frames", 1)),
        )
        box = _bounding_box(options) if _resizes(options) else None
        if box is not None and _shrinks_before_colour(im):
            # Rotating and converting colour then touch the output's pixels, not the
            # decoded ones (4 to 16 times as many after ``draft``, more without it).
            im.thumbnail(_stored_box(box, facts.orientation), Image.Resampling.LANCZOS)
            box = None
        # In place, and each step rebinds ``im``: a 24 MP photo is 72 MB decoded, and a
        # copy kept alive per step would double or triple a worker's peak memory.
        ImageOps.exif_transpose(im, in_place=True)
        # Read after transposing: exif_transpose drops the orientation tag it applied.
        exif_bytes = _kept_exif(im) if options.keep_metadata else None
        im = to_srgb(im)
        if box is not None:
            im.thumbnail(box, Image.Resampling.LANCZOS)
        out_format = output_format(source_format, options.output_format, im)
        quality = output_quality(out_format, options, source_quality)
        encoded, final = encode(im, out_format, quality, exif_bytes, jpeg_optimize)
        del im
        original = _original_if_smaller(
            data, source_format, out_format, facts, final.size, exif_bytes, len(encoded)
        )
    except (OSError, ValueError, SyntaxError, struct.error, ImageCms.PyCMSError) as exc:
        raise ImageError(
            f"image data is truncated or corrupt: {exc}", code="corrupt_image"
        ) from None

    content_type, extension = CONTENT_TYPES[out_format]
    kept = original is not None
    return TransformResult(
        data=original if original is not None else encoded,
        content_type=content_type,
        extension=extension,
        width=final.width,
        height=final.height,
        source_format=source_format.lower(),
        source_quality=source_quality,
        # A kept original has the source's own coding (None for PNG).
        output_quality=source_quality if kept else quality,
        kept_original=kept,
    )


# --------------------------------------------------------------------------- decoding


@contextmanager
def _as_decode_errors() -> Iterator[None]:
    """What a hostile or broken file can raise while it is opened and decoded, as the
    ``ImageError`` that fails that image alone (a decompression-bomb warning included)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
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


def _open_checked(data: bytes, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
    """Open with the allowlist and enforce the pixel cap from the header, before any pixel
    is decoded. Returns the image and its size in the header (``draft`` may shrink it)."""
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
    return im, (width, height)


def _decode(im: Image.Image, options: TransformOptions) -> None:
    if im.format in ("JPEG", "MPO") and _resizes(options):
        # DCT-domain downscaling is far cheaper than decoding full size and resizing.
        target = _draft_target(im, options)
        if target is not None:
            im.draft("RGB", target)
    # Animated GIF/WebP/AVIF and multi-page TIFF: the freshly opened image is frame 0.
    im.load()


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


def _resizes(options: TransformOptions) -> bool:
    return options.max_width is not None or options.max_height is not None


def _shrinks_before_colour(im: Image.Image) -> bool:
    """Whether resampling can come first: the pixels are already channels to average.
    Palettes and colour keys must become RGB(A) first (a palette image would be resampled
    by nearest neighbour, a colour key smeared into its neighbours), and 16-bit or float
    data scaled to 8 bits. Turning and colour management commute with a resize: on the
    bench's tagged and turned photos shrunk to 1000 px, the outputs differ from those of
    the full-size order by 0.1-0.6 of a level per channel on average."""
    return im.mode in ("L", "RGB", "RGBA", "CMYK") and "transparency" not in im.info


def _stored_box(box: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The box, turned for the image as stored when its EXIF orientation turns it by 90°."""
    return (box[1], box[0]) if orientation in (5, 6, 7, 8) else box


def _bounding_box(options: TransformOptions) -> tuple[int, int]:
    """A missing side is unbounded; ``thumbnail`` then only ever shrinks."""
    unbounded = 1 << 30
    return (options.max_width or unbounded, options.max_height or unbounded)


# --------------------------------------------------------------------------- never bigger


@dataclass(frozen=True)
class _SourceFacts:
    """What decides whether the source's own bytes can stand for the output."""

    size: tuple[int, int]  # from the header
    mode: str
    orientation: int
    frames: int


def _original_if_smaller(
    data: bytes,
    source_format: str,
    out_format: str,
    facts: _SourceFacts,
    final_size: tuple[int, int],
    exif: bytes | None,
    encoded_size: int,
) -> bytes | None:
    """The source with its metadata stripped losslessly, when it can stand for the output
    and the re-encode is not smaller than it; else None (the re-encode is stored).

    It can stand for the output when nothing but the coding would change: same format,
    same size, upright (an orientation tag would be stripped with the EXIF, turning the
    picture), one frame (the output of an animation is its first frame), and for JPEG not
    CMYK (outputs are RGB). Compared with the *stripped* source, so a re-encode that only
    beats the source by its metadata does not win over the source at its own quality."""
    if out_format != source_format or final_size != facts.size:
        return None
    if facts.orientation != 1 or facts.frames > 1:
        return None
    if source_format == "JPEG" and facts.mode not in ("RGB", "L"):
        return None
    stripped = strip_metadata(data, source_format, exif)
    if stripped is None or len(stripped) > encoded_size:
        return None
    return stripped


# --------------------------------------------------------------------------- metadata


def _kept_exif(im: Image.Image) -> bytes | None:
    """Source EXIF minus orientation (pixels are already upright), or None if empty."""
    exif = im.getexif()
    exif.pop(ExifTags.Base.Orientation, None)
    if not exif:
        return None
    return exif.tobytes()
