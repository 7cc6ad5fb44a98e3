"""Content-Encoding decoding that never produces more bytes than the room it is given.

httpx's own decoders inflate a whole network chunk at once (a 64 KiB gzip bomb chunk
becomes ~64 MiB before anyone can count it), so bodies are read raw and decoded here with
zlib's ``max_length``.
"""

from __future__ import annotations

import zlib
from typing import Any

from pixelbatch.errors import FetchError


class BoundedDecoder:
    """Decodes identity, gzip or deflate; refuses any other encoding up front."""

    def __init__(self, header: str | None, url: str) -> None:
        self._url = url
        names = [e.strip().lower() for e in (header or "").split(",")]
        names = [e for e in names if e and e != "identity"]
        self._raw_deflate_fallback = False
        self._z: Any = None
        if not names:
            return
        if len(names) > 1 or names[0] not in ("gzip", "x-gzip", "deflate"):
            raise FetchError(
                f"Unsupported Content-Encoding {header!r} from {url}",
                code="unsupported_encoding",
                details={"url": url},
            )
        if names[0] == "deflate":
            self._z = zlib.decompressobj()
            self._raw_deflate_fallback = True
        else:
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def identity(self) -> bool:
        return self._z is None

    def feed(self, data: bytes, room: int) -> bytes | None:
        """Decoded bytes, or None when they would exceed ``room``."""
        if self._z is None:
            return data if len(data) <= room else None
        try:
            out: bytes = self._z.decompress(data, room + 1)
        except zlib.error:
            if not self._raw_deflate_fallback:
                raise self._corrupt() from None
            # Some servers send raw deflate without the zlib header.
            self._raw_deflate_fallback = False
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, room + 1)
            except zlib.error:
                raise self._corrupt() from None
        self._raw_deflate_fallback = False
        return out if len(out) <= room else None

    def flush(self, room: int) -> bytes | None:
        """The decoder's remaining bytes, or None when they would exceed ``room``."""
        if self._z is None:
            return b""
        try:
            out: bytes = self._z.flush()
        except zlib.error:
            raise self._corrupt() from None
        return out if len(out) <= room else None

    def _corrupt(self) -> FetchError:
        return FetchError(
            f"Corrupt compressed body from {self._url}",
            code="decode_error",
            details={"url": self._url},
        )
