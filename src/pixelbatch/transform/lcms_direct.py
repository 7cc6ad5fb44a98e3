"""Convert pixels to sRGB by calling LittleCMS on Pillow's own pixel memory.

Pillow hands LittleCMS its 4-byte RGB pixels as ``TYPE_RGBA_8``, a layout for which
LittleCMS has no specialised reader: on a 12 MP AdobeRGB photo the conversion takes
~170 ms, against ~103 ms for the layouts it does specialise (``TYPE_ARGB_8``, the extra
byte first). Pillow keeps each pixel as R, G, B, X (or A), so four bytes read from one byte
before a pixel's red are that layout exactly: the previous pixel's X, then R, G, B. One
call converts every pixel but the first that way, in place, and a one-pixel call in
Pillow's own layout converts the first. The output is byte for byte what Pillow's
``ImageCms`` gives (same library, transform, intent and flags; a test checks it).

Greyscale images with a grey profile (Photoshop's "Dot Gain 20%", "Gray Gamma 1.8") are
converted to sRGB's tone curve and stay greyscale: ``ImageCms`` can only build sRGB as an
RGB profile, and an untagged grey image is shown with sRGB's curve, so without this the
profile, stripped with the metadata, would take the image's tones with it.

The pixel memory is reached through Pillow's Arrow export (the Arrow C data interface, a
stable ABI), which requires the image to be one block: ``contiguous_pixels`` makes Pillow
allocate so while an image that will be converted is decoded. Where any of this is
missing (another interpreter, another Pillow, an image in several blocks)
``convert_in_place`` returns False and the caller falls back.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from PIL import Image
from PIL import _imaging as pillow_core

__all__ = ["available", "contiguous_pixels", "convert_in_place", "one_block_fits"]

_INTENT_PERCEPTUAL: Final = 0  # what colour.py asks Pillow for; matrix/TRC profiles ignore it
_GRAY_DATA: Final = 0x47524159  # "GRAY", a profile's data colour space
# sRGB's tone curve (IEC 61966-2-1) as LittleCMS's parametric curve of type 4.
_SRGB_CURVE: Final = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
# Pillow 13 allocates a single block only below 2 GiB, with no fallback to smaller blocks.
_ONE_BLOCK_LIMIT: Final = 1 << 31


def _format(colorspace: int, channels: int, *, extra: int = 0, extra_first: bool = False) -> int:
    """A LittleCMS pixel format of 8-bit samples (lcms2.h's TYPE_* macros)."""
    return colorspace << 16 | int(extra_first) << 14 | extra << 7 | channels << 3 | 1


_PILLOW_RGB: Final = _format(4, 3, extra=1)  # TYPE_RGBA_8: R, G, B, X as Pillow keeps them
_SHIFTED_RGB: Final = _format(4, 3, extra=1, extra_first=True)  # TYPE_ARGB_8
_GREY: Final = _format(3, 1)  # TYPE_GRAY_8


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]

_P, _U32 = ctypes.c_void_p, ctypes.c_uint32
_SIGNATURES: Final[dict[str, tuple[Any, list[Any]]]] = {
    "cmsOpenProfileFromMem": (_P, [ctypes.c_char_p, _U32]),
    "cmsCreate_sRGBProfile": (_P, []),
    "cmsD50_xyY": (_P, []),
    "cmsBuildParametricToneCurve": (_P, [_P, ctypes.c_int32, ctypes.POINTER(ctypes.c_double)]),
    "cmsCreateGrayProfile": (_P, [_P, _P]),
    "cmsFreeToneCurve": (None, [_P]),
    "cmsGetColorSpace": (_U32, [_P]),
    "cmsCloseProfile": (ctypes.c_int, [_P]),
    # input profile, input format, output profile, output format, intent, flags
    "cmsCreateTransform": (_P, [_P, _U32, _P, _U32, _U32, _U32]),
    "cmsDeleteTransform": (None, [_P]),
    "cmsDoTransform": (None, [_P, _P, _P, _U32]),  # ctypes releases the GIL around it
}


@functools.cache
def _library() -> ctypes.CDLL | None:
    """LittleCMS as Pillow's ``ImageCms`` extension links it (its wheels bundle their own):
    symbols looked up through the extension resolve to the very library it calls, so both
    paths run the same code whatever else the process has loaded."""
    if not hasattr(Image.Image, "__arrow_c_array__") or not hasattr(ctypes, "pythonapi"):
        return None  # Pillow < 11.2, or not CPython (the capsules need its C API)
    try:
        from PIL import _imagingcms

        lib = ctypes.CDLL(_imagingcms.__file__)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    except (ImportError, OSError, AttributeError):
        return None
    return lib


def available() -> bool:
    """Whether the direct path can run in this process."""
    return _library() is not None


def one_block_fits(im: Image.Image) -> bool:
    """Whether the image's pixels can be allocated as one block (4 bytes a pixel at most)."""
    return im.width * im.height * 4 < _ONE_BLOCK_LIMIT


class _Transforms:
    """The LittleCMS transforms of one source profile, freed with the object."""

    def __init__(self, lib: ctypes.CDLL, grey: bool, handles: list[int]) -> None:
        self.lib, self.grey, self.handles = lib, grey, handles

    def __del__(self) -> None:
        for handle in self.handles:
            self.lib.cmsDeleteTransform(handle)


def _srgb_profile(lib: ctypes.CDLL, grey: bool) -> int:
    if not grey:
        return int(lib.cmsCreate_sRGBProfile())
    curve = lib.cmsBuildParametricToneCurve(None, 4, (ctypes.c_double * 5)(*_SRGB_CURVE))
    try:
        return int(lib.cmsCreateGrayProfile(lib.cmsD50_xyY(), curve))
    finally:
        lib.cmsFreeToneCurve(curve)


@functools.lru_cache(maxsize=32)
def _transforms(icc: bytes) -> _Transforms | None:
    """Built once per profile, like ``colour._transform_to_srgb``: RGB to sRGB in Pillow's
    layout and shifted, or grey to sRGB's grey; None if the profile is unusable."""
    lib = _library()
    if lib is None:
        return None
    source = lib.cmsOpenProfileFromMem(icc, len(icc))
    if not source:
        return None
    grey = lib.cmsGetColorSpace(source) == _GRAY_DATA
    layouts = (_GREY,) if grey else (_PILLOW_RGB, _SHIFTED_RGB)
    srgb = _srgb_profile(lib, grey)
    try:
        made = [
            lib.cmsCreateTransform(source, layout, srgb, layout, _INTENT_PERCEPTUAL, 0)
            for layout in layouts
        ]
    finally:
        lib.cmsCloseProfile(source)
        lib.cmsCloseProfile(srgb)
    transforms = _Transforms(lib, grey, [h for h in made if h])
    return transforms if all(made) else None


@functools.cache
def _capsule_pointer() -> Any:
    """CPython's ``PyCapsule_GetPointer``, looked up when first used (not at import, so
    another interpreter can still import this module)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get


def _capsule(capsule: object, name: bytes) -> int:
    return int(_capsule_pointer()(capsule, name))


def _pixel_address(im: Image.Image, schema: object, array: object) -> int | None:
    """Where the image's pixels start, if Pillow exported them as one run without offsets:
    4-byte pixels (``+w:4`` of ``C``) for RGB(A), bytes (``C``) for L."""
    head = ctypes.cast(_capsule(schema, b"arrow_schema"), ctypes.POINTER(_ArrowSchema)).contents
    body = ctypes.cast(_capsule(array, b"arrow_array"), ctypes.POINTER(_ArrowArray)).contents
    count = im.width * im.height
    if body.offset != 0 or body.length != count:
        return None
    if im.mode == "L":
        if head.format != b"C" or head.n_children != 0 or body.n_buffers != 2:
            return None
        return body.buffers[1] or None
    if head.format != b"+w:4" or head.n_children != 1 or body.n_children != 1:
        return None
    pixels = body.children[0].contents
    if head.children[0].contents.format != b"C" or pixels.n_buffers != 2:
        return None
    if pixels.offset != 0 or pixels.length != 4 * count:
        return None
    return pixels.buffers[1] or None


def convert_in_place(im: Image.Image, icc: bytes) -> bool:
    """Convert an RGB, RGBA or L image from ``icc`` to sRGB in place (alpha untouched).
    False, with the pixels untouched, when the direct path cannot run on this image or
    this profile does not describe its kind of pixels."""
    if im.mode not in ("RGB", "RGBA", "L") or im.readonly or im.width * im.height == 0:
        return False
    if not im.im.isblock():
        return False
    transforms = _transforms(icc)
    if transforms is None or transforms.grey != (im.mode == "L"):
        return False
    schema, array = im.__arrow_c_array__()  # holds the pixels until both are released
    address = _pixel_address(im, schema, array)
    if address is None:
        return False
    lib, count, handles = transforms.lib, im.width * im.height, transforms.handles
    if im.mode == "L":
        lib.cmsDoTransform(handles[0], address, address, count)
        return True
    lib.cmsDoTransform(handles[0], address, address, 1)
    if count > 1:
        # From the first pixel's extra byte: each 4 bytes are X(n-1), R(n), G(n), B(n).
        lib.cmsDoTransform(handles[1], address + 3, address + 3, count - 1)
    return True


_allocator_lock = threading.Lock()
_allocator_users = 0
_allocator_default = 0


def _forget_users_after_fork() -> None:
    """A child forked while a thread of its parent was inside the scope has no such thread:
    without this the count would never fall back to zero there."""
    global _allocator_users
    if _allocator_users:
        _allocator_users = 0
        pillow_core.set_use_block_allocator(_allocator_default)


os.register_at_fork(after_in_child=_forget_users_after_fork)


@contextmanager
def contiguous_pixels(wanted: bool = True) -> Iterator[None]:
    """Have Pillow allocate each new image as one block while inside, so that an image
    decoded here can be converted in place. Counted, so overlapping users on several
    threads leave Pillow's default (blocks of 16 MB) only once the last one leaves."""
    global _allocator_users, _allocator_default
    if not wanted or not available():
        yield
        return
    with _allocator_lock:
        _allocator_users += 1
        if _allocator_users == 1:
            _allocator_default = pillow_core.get_use_block_allocator()
            pillow_core.set_use_block_allocator(1)
    try:
        yield
    finally:
        with _allocator_lock:
            _allocator_users -= 1
            if _allocator_users == 0:
                pillow_core.set_use_block_allocator(_allocator_default)
