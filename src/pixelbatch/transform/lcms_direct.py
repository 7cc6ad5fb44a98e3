"""Convert RGB(A) pixels to sRGB by calling LittleCMS on Pillow's own pixel memory.

Pillow hands LittleCMS its 4-byte RGB pixels as ``TYPE_RGBA_8``, a layout for which
LittleCMS has no specialised reader: on a 12 MP AdobeRGB photo the conversion takes
~170 ms, against ~103 ms for the layouts it does specialise (``TYPE_ARGB_8``, the extra
byte first). Pillow keeps each pixel as R, G, B, X (or A), so four bytes read from one byte
before a pixel's red are that layout exactly: the previous pixel's X, then R, G, B. One
call converts every pixel but the first that way, in place, and a one-pixel call in
Pillow's own layout converts the first. The output is byte for byte what Pillow's
``ImageCms`` gives (same library, transform, intent and flags; a test checks it).

The pixel memory is reached through Pillow's Arrow export (the Arrow C data interface, a
stable ABI), which requires the image to be one block: ``contiguous_pixels`` makes Pillow
allocate so while an image that will be converted is decoded. Where any of this is
missing (another platform, another Pillow, the library not found) ``convert_in_place``
returns False and the caller uses ``ImageCms``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from PIL import (
    Image,
    _imagingcms,  # noqa: F401  (loads the LittleCMS that _library_path looks for)
)
from PIL import _imaging as pillow_core

__all__ = ["available", "contiguous_pixels", "convert_in_place"]

_PT_RGB: Final = 4
_INTENT_PERCEPTUAL: Final = 0  # what colour.py asks Pillow for; matrix/TRC profiles ignore it


def _rgb_format(*, extra_first: bool) -> int:
    """A LittleCMS pixel format: RGB, 8 bits, one extra byte (after the colours or before)."""
    colorspace, extra, channels, size = _PT_RGB << 16, 1 << 7, 3 << 3, 1
    return colorspace | extra | channels | size | (int(extra_first) << 14)


_PILLOW_LAYOUT: Final = _rgb_format(extra_first=False)  # TYPE_RGBA_8
_SHIFTED_LAYOUT: Final = _rgb_format(extra_first=True)  # TYPE_ARGB_8


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

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _library_path() -> str | None:
    """The LittleCMS that Pillow's ``ImageCms`` loaded (its wheels bundle their own), so
    both paths run the same code; else the system's."""
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split(maxsplit=5)[-1]
            if "/liblcms2" in path:
                return path
    return ctypes.util.find_library("lcms2")


@functools.cache
def _library() -> ctypes.CDLL | None:
    path = _library_path()
    if path is None or not hasattr(Image.Image, "__arrow_c_array__"):  # Pillow < 11.2
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.cmsOpenProfileFromMem.restype = ctypes.c_void_p
    lib.cmsOpenProfileFromMem.argtypes = [ctypes.c_char_p, ctypes.c_uint32]
    lib.cmsCreate_sRGBProfile.restype = ctypes.c_void_p
    lib.cmsCreate_sRGBProfile.argtypes = []
    lib.cmsCloseProfile.restype = ctypes.c_int
    lib.cmsCloseProfile.argtypes = [ctypes.c_void_p]
    lib.cmsCreateTransform.restype = ctypes.c_void_p
    lib.cmsCreateTransform.argtypes = [
        ctypes.c_void_p,  # input profile
        ctypes.c_uint32,  # input format
        ctypes.c_void_p,  # output profile
        ctypes.c_uint32,  # output format
        ctypes.c_uint32,  # intent
        ctypes.c_uint32,  # flags
    ]
    lib.cmsDeleteTransform.restype = None
    lib.cmsDeleteTransform.argtypes = [ctypes.c_void_p]
    lib.cmsDoTransform.restype = None  # ctypes releases the GIL around the call
    lib.cmsDoTransform.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_uint32,
    ]
    return lib


def available() -> bool:
    """Whether the direct path can run in this process."""
    return _library() is not None


class _Transforms:
    """The two LittleCMS transforms of one source profile, freed with the object."""

    def __init__(self, lib: ctypes.CDLL, first_pixel: int, shifted: int) -> None:
        self._lib = lib
        self.first_pixel = first_pixel
        self.shifted = shifted

    def __del__(self) -> None:
        self._lib.cmsDeleteTransform(self.first_pixel)
        self._lib.cmsDeleteTransform(self.shifted)


@functools.lru_cache(maxsize=32)
def _transforms(icc: bytes) -> _Transforms | None:
    """Built once per profile, like ``colour._transform_to_srgb``; None if unusable."""
    lib = _library()
    if lib is None:
        return None
    source = lib.cmsOpenProfileFromMem(icc, len(icc))
    if not source:
        return None
    srgb = lib.cmsCreate_sRGBProfile()
    try:
        made = [
            lib.cmsCreateTransform(source, layout, srgb, layout, _INTENT_PERCEPTUAL, 0)
            for layout in (_PILLOW_LAYOUT, _SHIFTED_LAYOUT)
        ]
    finally:
        lib.cmsCloseProfile(source)
        lib.cmsCloseProfile(srgb)
    if not all(made):
        for handle in filter(None, made):
            lib.cmsDeleteTransform(handle)
        return None
    return _Transforms(lib, made[0], made[1])


def _pixel_address(im: Image.Image, schema: object, array: object) -> int | None:
    """Where the image's pixels start, if Pillow exported them as one run of 4-byte
    pixels (``+w:4`` of ``C``) without offsets."""
    head = ctypes.cast(_capsule_pointer(schema, b"arrow_schema"), ctypes.POINTER(_ArrowSchema))
    body = ctypes.cast(_capsule_pointer(array, b"arrow_array"), ctypes.POINTER(_ArrowArray))
    fmt, data = head.contents, body.contents
    if fmt.format != b"+w:4" or fmt.n_children != 1 or fmt.children[0].contents.format != b"C":
        return None
    if data.n_children != 1 or data.offset != 0 or data.length != im.width * im.height:
        return None
    pixels = data.children[0].contents
    if pixels.n_buffers != 2 or pixels.offset != 0 or pixels.length != 4 * data.length:
        return None
    return pixels.buffers[1] or None


def convert_in_place(im: Image.Image, icc: bytes) -> bool:
    """Convert an RGB or RGBA image from ``icc`` to sRGB in place (alpha untouched).
    False, with the pixels untouched, when the direct path cannot run on this image."""
    if im.mode not in ("RGB", "RGBA") or im.readonly or not im.im.isblock():
        return False
    transforms = _transforms(icc)
    if transforms is None:
        return False
    schema, array = im.__arrow_c_array__()  # holds the pixels until both are released
    address = _pixel_address(im, schema, array)
    if address is None:
        return False
    lib, count = transforms._lib, im.width * im.height
    lib.cmsDoTransform(transforms.first_pixel, address, address, 1)
    if count > 1:
        # From the first pixel's extra byte: each 4 bytes are X(n-1), R(n), G(n), B(n).
        lib.cmsDoTransform(transforms.shifted, address + 3, address + 3, count - 1)
    del schema, array
    return True


_allocator_lock = threading.Lock()
_allocator_users = 0
_allocator_default = 0


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
