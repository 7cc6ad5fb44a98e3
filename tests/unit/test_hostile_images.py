"""Hostile images: each sample would hurt a naive decode-then-check implementation (huge
allocations, hours of frame decoding, Ghostscript on untrusted bytes, grey-padded garbage).

Every sample is built in memory, a few hundred bytes to a few KiB: the point is what the
headers *claim*, not what the bytes carry.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import struct
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from PIL import Image

from pixelbatch.errors import ImageError
from pixelbatch.transform import TransformOptions, transform

DEFAULT_MAX_PIXELS = 50_000_000


# --------------------------------------------------------------------------- builders


def _encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _distinct_frames(count: int, size: tuple[int, int]) -> list[Image.Image]:
    # Distinct colours, so no encoder merges identical consecutive frames.
    return [
        Image.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 13 + 40) % 256))
        for i in range(count)
    ]


def _animation(fmt: str, count: int, size: tuple[int, int]) -> bytes:
    first, *rest = _distinct_frames(count, size)
    return _encode(first, fmt, save_all=True, append_images=rest, duration=40, loop=0)


def _gif_tiny_frames(screen: tuple[int, int], frames: int) -> bytes:
    """A GIF whose logical screen is ``screen`` but whose frames are each one pixel:
    a few bytes per frame, yet decoding all frames costs frames x screen pixels."""
    width, height = screen
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0))
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    # One 1x1 frame: local colour table of 2 entries; LZW min code size 2; the codes
    # clear(4), 0, end(5) in 3 bits each, LSB first = 0x44 0x01.
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control extension, 10 ms
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0x80)
        + b"\xff\x00\x00\x00\x00\xff"
        + b"\x02\x02\x44\x01\x00"
    )
    out += frame * frames
    out += b"\x3b"
    return bytes(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_claiming(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """A PNG whose IHDR claims ``width x height`` with a token IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + extra_chunks
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _apng_claiming_frames(frames: int, size: tuple[int, int] = (100, 100)) -> bytes:
    """A real one-frame APNG whose acTL claims ``frames`` frames."""
    real = _animation("PNG", 2, size)
    start = real.index(b"acTL") - 4
    body = struct.pack(">II", frames, 0)
    return real[:start] + _png_chunk(b"acTL", body) + real[start + 20 :]


def _png_text_bomb() -> bytes:
    """A small valid PNG carrying a zTXt chunk that inflates to 64 MiB."""
    small = _encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    ztxt = b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)
    return small[:33] + _png_chunk(b"zTXt", ztxt) + small[33:]


def _jpeg_with_sof(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF0 frame header is rewritten to claim another size."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), (200, 50, 50)), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _tiff_claiming(width: int, height: int, next_ifd_self: bool = False) -> bytes:
    """A little-endian greyscale TIFF whose tags claim ``width x height`` with 16 bytes of
    strip data; optionally its next-IFD offset points back at itself (an IFD loop)."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 0),  # StripOffsets, patched below
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, min(width * height, 0xFFFFFFFF)),  # StripByteCounts (a lie)
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    strip_offset = ifd_offset + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            value = strip_offset
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", ifd_offset if next_ifd_self else 0)
    out += b"\x80" * 16
    return bytes(out)


def _truncated_webp() -> bytes:
    data = _encode(Image.effect_noise((256, 256), 60).convert("RGB"), "WEBP", quality=80)
    return data[: len(data) // 2]


def _webp_lying_riff_size() -> bytes:
    data = bytearray(_encode(Image.new("RGB", (32, 32), (9, 9, 9)), "WEBP"))
    struct.pack_into("<I", data, 4, 0xFFFFFFF0)
    return bytes(data)


SVG = (
    b'<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">&x;</svg>'
)
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
    b"(%pipe%touch /tmp/pixelbatch-pwned) (w) file\nshowpage\n"
)
DOS_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIII", 32, len(EPS), 0, 0) + b"\x00" * 12 + EPS
PSD = b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 100_000, 100_000, 8, 3)
POLYGLOT = b"<!doctype html><html><body><script>alert(1)</script>" + _encode(
    Image.new("RGB", (16, 16), (10, 200, 10)), "JPEG"
)

# name -> (builder, expected error code, or None when a correct output is also fine)
Sample = tuple[Callable[[], bytes], str | None]
HOSTILE: dict[str, Sample] = {
    "gif-1000-frames-4000x4000-screen": (
        lambda: _gif_tiny_frames((4000, 4000), 1000),
        "image_too_large",
    ),
    "gif-65535x65535-screen": (lambda: _gif_tiny_frames((65535, 65535), 1), "image_too_large"),
    "apng-claims-2e31-frames": (lambda: _apng_claiming_frames(0x7FFFFFFF), "image_too_large"),
    "png-ihdr-100000x100000": (lambda: _png_claiming(100_000, 100_000), "image_too_large"),
    "png-ihdr-1x2e31": (lambda: _png_claiming(1, 0x7FFFFFFF), "image_too_large"),
    "png-ztxt-bomb": (_png_text_bomb, None),
    "jpeg-sof-65000x65000": (lambda: _jpeg_with_sof(65_000, 65_000), "image_too_large"),
    # libjpeg pads a scan that ends (at EOI) before the frame does: decodable, and bounded
    # by the pixel cap. Without EOI it is truncated, which must never be padded.
    "jpeg-sof-3000x3000-scan-of-16x16": (lambda: _jpeg_with_sof(3000, 3000), None),
    "jpeg-sof-3000x3000-truncated": (lambda: _jpeg_with_sof(3000, 3000)[:-2], "corrupt_image"),
    "tiff-5000x5000-strip-missing": (lambda: _tiff_claiming(5000, 5000), "corrupt_image"),
    "tiff-100000x100000": (lambda: _tiff_claiming(100_000, 100_000), "image_too_large"),
    "tiff-ifd-loop": (lambda: _tiff_claiming(64, 64, next_ifd_self=True), "corrupt_image"),
    "webp-truncated": (_truncated_webp, "corrupt_image"),
    "webp-lying-riff-size": (_webp_lying_riff_size, None),
    "svg-xxe": (lambda: SVG, "unsupported_format"),
    "eps-ghostscript": (lambda: EPS, "unsupported_format"),
    "dos-eps-binary-header": (lambda: DOS_EPS, "unsupported_format"),
    "psd-100000x100000": (lambda: PSD, "unsupported_format"),
    "html-jpeg-polyglot": (lambda: POLYGLOT, "unsupported_format"),
}


def _outcome(data: bytes) -> str:
    try:
        transform(data, TransformOptions())
    except ImageError as exc:
        return exc.code
    return "ok"


# --------------------------------------------------------------------------- animations


def test_many_large_frames_are_refused_before_decoding() -> None:
    data = _gif_tiny_frames((4000, 4000), 1000)
    assert len(data) < 30_000
    started = time.monotonic()
    with pytest.raises(ImageError) as info:
        transform(data, TransformOptions())
    assert time.monotonic() - started < 1.0
    assert info.value.code == "image_too_large"
    assert "frames" in info.value.message
    assert info.value.details["max_frames"] == DEFAULT_MAX_PIXELS // (4000 * 4000)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_frame_cap_is_exactly_frames_times_area(fmt: str) -> None:
    """Ten 64x64 frames: allowed at a cap of ten frames' pixels, refused at nine."""
    data = _animation(fmt, 10, (64, 64))
    assert getattr(Image.open(BytesIO(data)), "n_frames", 1) == 10
    with pytest.raises(ImageError) as info:
        transform(data, TransformOptions(), max_pixels=64 * 64 * 9)
    assert info.value.code == "image_too_large"
    assert "frames" in info.value.message
    result = transform(data, TransformOptions(), max_pixels=64 * 64 * 10)
    out = Image.open(BytesIO(result.data))
    assert (out.size, getattr(out, "n_frames", 1)) == ((64, 64), 1)
    expected = _distinct_frames(1, (64, 64))[0].getpixel((5, 5))
    assert all(
        abs(a - b) <= 12
        for a, b in zip(out.convert("RGB").getpixel((5, 5)), expected, strict=True)  # type: ignore[arg-type]
    )


def test_small_hand_built_gif_animation_gives_its_first_frame() -> None:
    result = transform(_gif_tiny_frames((1, 1), 3), TransformOptions())
    assert (result.width, result.height, result.source_format) == (1, 1, "gif")


def test_apng_lying_about_its_frame_count_is_refused_fast() -> None:
    started = time.monotonic()
    with pytest.raises(ImageError) as info:
        transform(_apng_claiming_frames(0x7FFFFFFF), TransformOptions())
    assert time.monotonic() - started < 1.0
    assert info.value.code == "image_too_large"
    assert "frames" in info.value.message


# --------------------------------------------------------------------------- lying headers


def test_png_claiming_100000x100000_allocates_nothing() -> None:
    data = _png_claiming(100_000, 100_000)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ImageError) as info:
            transform(data, TransformOptions(), max_pixels=10**12)  # Pillow's own bomb limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.0
    assert info.value.code == "image_too_large"
    assert peak < 5 * 1024 * 1024


def test_jpeg_with_lying_sof_is_refused_from_the_header() -> None:
    started = time.monotonic()
    with pytest.raises(ImageError) as info:
        transform(_jpeg_with_sof(65_000, 65_000), TransformOptions())
    assert time.monotonic() - started < 1.0
    assert info.value.code == "image_too_large"


def test_jpeg_sof_bigger_than_its_truncated_data_is_corrupt_not_grey() -> None:
    with pytest.raises(ImageError) as info:
        transform(_jpeg_with_sof(3000, 3000)[:-2], TransformOptions())
    assert info.value.code == "corrupt_image"


def test_tiff_whose_strip_is_missing_is_corrupt_not_grey() -> None:
    with pytest.raises(ImageError) as info:
        transform(_tiff_claiming(5000, 5000), TransformOptions())
    assert info.value.code == "corrupt_image"


def test_tiff_claiming_a_huge_size_is_refused() -> None:
    with pytest.raises(ImageError) as info:
        transform(_tiff_claiming(100_000, 100_000), TransformOptions())
    assert info.value.code == "image_too_large"


def test_truncated_webp_is_corrupt() -> None:
    with pytest.raises(ImageError) as info:
        transform(_truncated_webp(), TransformOptions())
    assert info.value.code == "corrupt_image"


# --------------------------------------------------------------------------- not images


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fails (and records) any attempt to start a program, e.g. Ghostscript for EPS."""
    started: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        started.append(args)
        raise AssertionError(f"a subprocess was started: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse, raising=False)
    monkeypatch.setattr(os, "system", refuse)
    return started


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("svg-xxe", "SVG"),
        ("eps-ghostscript", "EPS"),
        ("dos-eps-binary-header", "EPS"),
        ("psd-100000x100000", "PSD"),
        ("html-jpeg-polyglot", "HTML"),
    ],
)
def test_delegate_formats_and_polyglots_never_reach_a_parser(
    name: str, needle: str, no_subprocess: list[object]
) -> None:
    with pytest.raises(ImageError) as info:
        transform(HOSTILE[name][0](), TransformOptions())
    assert info.value.code == "unsupported_format"
    assert needle in info.value.message
    assert no_subprocess == []


# --------------------------------------------------------------------------- one worker


def _transform_in_worker(name: str, data: bytes) -> tuple[str, str, int, float, int]:
    started = time.monotonic()
    outcome = _outcome(data)
    elapsed = time.monotonic() - started
    return name, outcome, os.getpid(), elapsed, _peak_rss_kib()


def _peak_rss_kib() -> int:
    """This process's own high-water RSS. Not ``ru_maxrss``: Linux carries that across
    fork and exec, so a spawned child reports the parent's peak (pytest's, after hundreds
    of tests) rather than its own."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")


def test_one_worker_process_survives_every_hostile_sample() -> None:
    samples = {name: build() for name, (build, _) in HOSTILE.items()}
    context = multiprocessing.get_context("spawn")  # a fresh process: its own peak RSS
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        results = list(pool.map(_transform_in_worker, samples, samples.values()))

    pids = {pid for _, _, pid, _, _ in results}
    assert len(pids) == 1 and os.getpid() not in pids
    for name, outcome, _, elapsed, _ in results:
        expected = HOSTILE[name][1]
        allowed = {expected} if expected else {"ok", "corrupt_image", "image_too_large"}
        assert outcome in allowed, f"{name}: {outcome}"
        assert elapsed < 5.0, f"{name} took {elapsed:.1f}s"
    peak_mib = max(peak for *_, peak in results) / 1024
    assert peak_mib < 300, f"worker peak RSS {peak_mib:.0f} MiB"
