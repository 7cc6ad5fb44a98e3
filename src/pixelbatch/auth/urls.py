"""Expiring signed URLs for stored outputs, so an output CSV's links work without a key
while a guessed or copied key path without a valid signature does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


class UrlSigner:
    def __init__(self, secret: str, ttl: int) -> None:
        self._key = hashlib.sha256(b"pixelbatch-url:" + secret.encode()).digest()
        self.ttl = ttl

    def _sig(self, key: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def query(self, key: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl)
        return f"expires={expires}&sig={self._sig(key, expires)}"

    def valid(
        self, key: str, expires: str | None, sig: str | None, now: float | None = None
    ) -> bool:
        if not expires or not sig or not expires.isdigit():
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._sig(key, int(expires)), sig)
