"""The bounded Content-Encoding decoder (pixelbatch.fetch.decoding)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from pixelbatch.errors import FetchError
from pixelbatch.fetch.decoding import BoundedDecoder

PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def _decode(decoder: BoundedDecoder, body: bytes, room: int, chunk: int = 1000) -> bytes | None:
    out = b""
    for start in range(0, len(body), chunk):
        part = decoder.feed(body[start : start + chunk], room - len(out))
        if part is None:
            return None
        out += part
    tail = decoder.flush(room - len(out))
    return None if tail is None else out + tail


@pytest.mark.parametrize("header", [None, "", "identity", " Identity "])
def test_identity_passes_bytes_through(header: str | None) -> None:
    decoder = BoundedDecoder(header, "u")
    assert decoder.identity
    assert _decode(decoder, PAYLOAD, len(PAYLOAD)) == PAYLOAD
    assert BoundedDecoder(header, "u").feed(PAYLOAD, len(PAYLOAD) - 1) is None


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ("gzip", gzip.compress(PAYLOAD)),
        ("x-gzip", gzip.compress(PAYLOAD)),
        ("deflate", zlib.compress(PAYLOAD)),
        ("deflate", zlib.compress(PAYLOAD)[2:-4]),  # raw deflate, no zlib header
        ("identity, gzip", gzip.compress(PAYLOAD)),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "identity-then-gzip"],
)
def test_compressed_bodies_are_decoded(header: str, body: bytes) -> None:
    decoder = BoundedDecoder(header, "u")
    assert not decoder.identity
    assert _decode(decoder, body, len(PAYLOAD)) == PAYLOAD


def test_bomb_stops_at_the_room_without_inflating_it_all() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    decoder = BoundedDecoder("gzip", "u")
    assert decoder.feed(bomb, 1 << 20) is None


def test_exactly_the_room_fits() -> None:
    assert _decode(BoundedDecoder("gzip", "u"), gzip.compress(PAYLOAD), len(PAYLOAD)) == PAYLOAD
    assert _decode(BoundedDecoder("gzip", "u"), gzip.compress(PAYLOAD), len(PAYLOAD) - 1) is None


@pytest.mark.parametrize("header", ["br", "gzip, gzip", "compress"])
def test_other_encodings_are_refused(header: str) -> None:
    with pytest.raises(FetchError) as info:
        BoundedDecoder(header, "http://x/a.png")
    assert info.value.code == "unsupported_encoding"
    assert info.value.details == {"url": "http://x/a.png"}


@pytest.mark.parametrize("header", ["gzip", "deflate"])
def test_corrupt_body_is_a_decode_error(header: str) -> None:
    with pytest.raises(FetchError) as info:
        BoundedDecoder(header, "u").feed(b"this is not compressed at all", 1000)
    assert info.value.code == "decode_error"
