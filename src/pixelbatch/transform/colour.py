"""Bring decoded pixels to 8-bit L, RGB or RGBA in sRGB: palettes, CMYK, ICC profiles, 16-bit.

Web encoders and browsers assume sRGB and most drop embedded profiles, so colours are
converted once here, where the profile is still known, rather than left to each viewer.
"""

from __future__ import annotations

import functools
from io import BytesIO
from typing import Final

from PIL import Image, ImageCms

from pixelbatch.transform import lcms_direct
from pixelbatch.transform.srgb import is_srgb

__all__ = ["converts_in_place", "to_srgb"]

_SRGB_PROFILE: Final = ImageCms.createProfile("sRGB")


def to_srgb(im: Image.Image) -> Image.Image:
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

    if icc and im.mode in ("RGB", "RGBA") and is_srgb(icc):
        return im  # sRGB already: the conversion would be a full pass that changes nothing
    if icc and im.mode == "L":
        # A grey profile: to sRGB's tone curve, still grey (only the direct path can; an
        # RGB profile on grey pixels is as unusable here as for ImageCms).
        if lcms_direct.convert_in_place(im, icc):
            del im.info["icc_profile"]  # untagged grey is read with sRGB's curve
        return im
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        converted = _apply_icc(im, icc)
        if converted is not None:
            return converted
    if im.mode == "CMYK":
        # No usable profile: Pillow already undid Adobe's inversion when decoding.
        im = im.convert("RGB")
    return im


def converts_in_place(im: Image.Image) -> bool:
    """Whether ``to_srgb`` will run this (not yet decoded) image through its profile in
    place: then it is worth decoding into one block (``lcms_direct.contiguous_pixels``)."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "L") or not lcms_direct.one_block_fits(im):
        return False
    return not is_srgb(icc)


@functools.cache
def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(_SRGB_PROFILE).tobytes()


def _apply_icc(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert through the embedded profile; None if the profile is unusable."""
    out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
    # Same mode in and out (RGB photos, the common case): convert in place, so a 24 MP
    # photo does not need a second 72 MB buffer.
    in_place = im.mode == out_mode
    if in_place and lcms_direct.convert_in_place(im, icc):
        im.info["icc_profile"] = _srgb_icc()  # as ImageCms tags what it converts
        return im
    try:
        transform = _transform_to_srgb(icc, im.mode, out_mode)
        result = ImageCms.applyTransform(im, transform, inPlace=in_place)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken or mismatched profile (e.g. a grey profile on RGB data) is common in
        # the wild; the pixels are still usable, so treat them as sRGB already.
        return None
    return im if in_place else result


@functools.lru_cache(maxsize=32)
def _transform_to_srgb(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform:
    """Built once per profile: a catalog's photos share a handful of camera and editor
    profiles, and building a transform costs about 2 ms, a tenth of converting 1 MP."""
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(BytesIO(icc)),
        _SRGB_PROFILE,
        in_mode,
        out_mode,
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit/float greyscale to 8-bit by scaling, not clipping (convert('L') clips)."""
    as_float = im.convert("F")
    extrema = as_float.getextrema()
    high = float(extrema[1]) if isinstance(extrema[1], (int, float)) else 255.0
    if im.mode.startswith("I;16"):
        high = 65535.0
    factor = 255.0 / high if high > 255.0 else 1.0
    return as_float.point(lambda value: value * factor).convert("L")
