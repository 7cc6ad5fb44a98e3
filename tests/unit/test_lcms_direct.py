"""LittleCMS called on Pillow's pixel memory must give exactly what Pillow's ImageCms gives,
touch nothing it should not, and stay the path transform() takes for tagged photos."""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from collections.abc import Iterator
from io import BytesIO

import pytest
from PIL import Image, ImageCms, ImageStat
from PIL import _imaging as pillow_core

from pixelbatch.transform import TransformOptions, colour, lcms_direct, transform
from pixelbatch.transform.srgb import is_srgb

# Adobe RGB (1998) colorants, D50-adapted as ICC profiles store them.
_ADOBE_COLORANTS = {
    b"rXYZ": (0.60974, 0.31111, 0.01947),
    b"gXYZ": (0.20528, 0.62567, 0.06087),
    b"bXYZ": (0.14919, 0.06322, 0.74457),
}


def _wide_gamut_profile() -> bytes:
    """LittleCMS's sRGB profile with Adobe RGB's primaries: a wide-gamut matrix profile,
    the kind photographers export, built here so no profile file is needed."""
    raw = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (count,) = struct.unpack_from(">I", raw, 128)
    for i in range(count):
        sig, offset, _size = struct.unpack_from(">4sII", raw, 132 + 12 * i)
        if sig in _ADOBE_COLORANTS:
            xyz = (round(v * 65536) for v in _ADOBE_COLORANTS[sig])
            struct.pack_into(">iii", raw, offset + 8, *xyz)
    raw[84:100] = b"\x00" * 16  # the profile ID (MD5) no longer matches; clear it
    return bytes(raw)


WIDE = _wide_gamut_profile()


def _linear_grey_profile() -> bytes:
    """A grey profile with a linear tone curve (gamma 1.0), made by LittleCMS itself: its
    mid-grey 128 is sRGB's 188."""
    lib = lcms_direct._library()
    assert lib is not None
    lib.cmsBuildGamma.restype, lib.cmsBuildGamma.argtypes = (
        ctypes.c_void_p,
        [
            ctypes.c_void_p,
            ctypes.c_double,
        ],
    )
    save = lib.cmsSaveProfileToMem
    save.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    curve = lib.cmsBuildGamma(None, 1.0)
    profile = lib.cmsCreateGrayProfile(lib.cmsD50_xyY(), curve)
    size = ctypes.c_uint32(0)
    save(profile, None, ctypes.byref(size))
    data = ctypes.create_string_buffer(size.value)
    save(profile, data, ctypes.byref(size))
    lib.cmsCloseProfile(profile)
    lib.cmsFreeToneCurve(curve)
    return data.raw


def _noise(mode: str, size: tuple[int, int]) -> Image.Image:
    """Every byte random (alpha included), so every input value and edge pixel is exercised."""
    return Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))


@pytest.fixture
def blocks() -> Iterator[None]:
    with lcms_direct.contiguous_pixels():
        yield


def _pillow_converted(im: Image.Image, icc: bytes) -> Image.Image:
    reference = im.copy()
    built = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(BytesIO(icc)),
        ImageCms.createProfile("sRGB"),
        im.mode,
        im.mode,
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    ImageCms.applyTransform(reference, built, inPlace=True)
    return reference


def test_available_with_the_pinned_pillow() -> None:
    # The fast path must not quietly vanish with a Pillow or packaging change.
    assert lcms_direct.available()


@pytest.mark.usefixtures("blocks")
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (333, 257)])
def test_matches_pillow_byte_for_byte(mode: str, size: tuple[int, int]) -> None:
    im = _noise(mode, size)
    expected = _pillow_converted(im, WIDE)
    assert im.im.isblock()
    assert lcms_direct.convert_in_place(im, WIDE)
    assert im.tobytes() == expected.tobytes()
    assert im.tobytes() != _noise(mode, size).tobytes()  # it did convert


@pytest.mark.usefixtures("blocks")
def test_alpha_is_left_as_it_was() -> None:
    im = _noise("RGBA", (64, 48))
    alpha = im.getchannel("A").tobytes()
    assert lcms_direct.convert_in_place(im, WIDE)
    assert im.getchannel("A").tobytes() == alpha


def test_declines_an_image_in_several_blocks() -> None:
    Image.core.set_block_size(4096)  # type: ignore[attr-defined]
    try:
        im = _noise("RGB", (1024, 16))  # 64 KB: sixteen blocks
    finally:
        Image.core.set_block_size(16 * 1024 * 1024)  # type: ignore[attr-defined]
    before = im.tobytes()
    assert not im.im.isblock()
    assert not lcms_direct.convert_in_place(im, WIDE)
    assert im.tobytes() == before


@pytest.mark.usefixtures("blocks")
def test_declines_other_modes_and_broken_profiles() -> None:
    grey = _noise("L", (16, 16))
    assert not lcms_direct.convert_in_place(grey, WIDE)
    im = _noise("RGB", (16, 16))
    before = im.tobytes()
    assert not lcms_direct.convert_in_place(im, b"not a profile at all")
    grey_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    assert not lcms_direct.convert_in_place(im, grey_profile)  # Lab data profile on RGB
    assert im.tobytes() == before


@pytest.mark.usefixtures("blocks")
def test_declines_an_empty_image() -> None:
    # One pixel would be read and written past a 0-pixel block.
    assert not lcms_direct.convert_in_place(Image.new("RGB", (0, 5)), WIDE)


@pytest.mark.usefixtures("blocks")
def test_grey_profiles_convert_to_srgb_tones_and_stay_grey() -> None:
    linear = _linear_grey_profile()
    ramp = Image.frombytes("L", (256, 1), bytes(range(256)))
    ramp.info["icc_profile"] = linear
    out = colour.to_srgb(ramp)
    assert out.mode == "L" and "icc_profile" not in out.info
    values = list(out.tobytes())
    assert values[0] == 0 and values[255] == 255
    assert abs(values[128] - 188) <= 1 and abs(values[32] - 99) <= 1  # sRGB of linear 0.5, 0.125
    assert values == sorted(values)
    assert not lcms_direct.convert_in_place(_noise("RGB", (4, 4)), linear)  # grey on RGB
    assert not lcms_direct.convert_in_place(_noise("L", (4, 4)), WIDE)  # RGB on grey


@pytest.mark.usefixtures("blocks")
def test_a_converted_image_is_tagged_srgb_so_converting_again_changes_nothing() -> None:
    im = _noise("RGB", (32, 32))
    im.info["icc_profile"] = WIDE
    once = colour.to_srgb(im)
    assert is_srgb(once.info["icc_profile"])
    pixels = once.tobytes()
    assert colour.to_srgb(once).tobytes() == pixels


def test_a_fork_inside_the_scope_starts_outside_it() -> None:
    with lcms_direct.contiguous_pixels():
        pid = os.fork()
        if pid == 0:  # the child: no thread of its own is inside the scope
            os._exit(0 if pillow_core.get_use_block_allocator() == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_allocator_is_restored_after_overlapping_users() -> None:
    assert pillow_core.get_use_block_allocator() == 0
    inside = threading.Event()
    leave = threading.Event()

    def other_user() -> None:
        with lcms_direct.contiguous_pixels():
            inside.set()
            leave.wait(5)

    thread = threading.Thread(target=other_user)
    thread.start()
    assert inside.wait(5)
    with lcms_direct.contiguous_pixels():
        assert pillow_core.get_use_block_allocator() == 1
    assert pillow_core.get_use_block_allocator() == 1  # the other user is still inside
    leave.set()
    thread.join(5)
    assert pillow_core.get_use_block_allocator() == 0
    with lcms_direct.contiguous_pixels(wanted=False):
        assert pillow_core.get_use_block_allocator() == 0


def _tagged_jpeg(size: tuple[int, int]) -> bytes:
    buf = BytesIO()
    _noise("RGB", size).save(buf, "JPEG", quality=92, icc_profile=WIDE)
    return buf.getvalue()


@pytest.mark.parametrize("options", [{}, {"max_width": 100}], ids=["full size", "shrunk"])
def test_transform_converts_tagged_photos_directly(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, int]
) -> None:
    data = _tagged_jpeg((300, 200))
    calls: list[bool] = []
    real = lcms_direct.convert_in_place

    def spy(im: Image.Image, icc: bytes) -> bool:
        calls.append(real(im, icc))
        return calls[-1]

    monkeypatch.setattr(lcms_direct, "convert_in_place", spy)
    direct = transform(data, TransformOptions(**options))
    assert calls == [True]
    assert pillow_core.get_use_block_allocator() == 0  # the decode's scope has ended

    monkeypatch.setattr(lcms_direct, "convert_in_place", lambda im, icc: False)
    through_pillow = transform(data, TransformOptions(**options))
    assert direct.data == through_pillow.data


def test_only_tagged_non_srgb_colour_images_ask_for_one_block() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc, expected in ((WIDE, True), (srgb, False), (None, False)):
        buf = BytesIO()
        _noise("RGB", (8, 8)).save(buf, "PNG", icc_profile=icc)
        assert colour.converts_in_place(Image.open(buf)) is expected


def test_transform_keeps_a_grey_photo_grey_in_srgb_tones() -> None:
    buf = BytesIO()
    Image.new("L", (64, 64), 128).save(buf, "JPEG", quality=95, icc_profile=_linear_grey_profile())
    out = Image.open(BytesIO(transform(buf.getvalue(), TransformOptions()).data))
    assert out.mode == "L" and not out.info.get("icc_profile")
    assert abs(ImageStat.Stat(out).mean[0] - 188) < 2
