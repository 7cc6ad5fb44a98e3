"""Expiring signed URLs for stored outputs, so an output CSV's links work without a key
while a guessed or copied key path without a valid signature does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

# Expiry times are Unix seconds; 12 digits reach the year 33658. Anything longer is not a
# value we ever issued, and refusing it early keeps ``int()`` away from attacker-sized input
# (CPython raises ValueError past 4300 digits, which would surface as a 500).
_MAX_EXPIRES_DIGITS = 12


class UrlSigner:
    """Signs ``(storage key, expiry)`` pairs with a key derived from the deployment secret.

    The signing key is derived with a purpose label rather than used raw, so the same
    ``secret_key`` can never produce a signature that is valid in another context.
    """

    def __init__(self, secret: str, ttl: int) -> None:
        self._key = hashlib.sha256(b"pixelbatch-url:" + secret.encode()).digest()
        self.ttl = ttl

    def _sig(self, key: str, expires: int) -> str:
        # The expiry is the last line and digits only, so no other (key, expires) pair can
        # produce the same signed message.
        digest = hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def query(self, key: str, now: float | None = None) -> str:
        """The query string that makes ``key``'s URL readable for ``ttl`` seconds from ``now``
        (a parameter so tests can control the clock)."""
        expires = int((now if now is not None else time.time()) + self.ttl)
        return f"expires={expires}&sig={self._sig(key, expires)}"

    def valid(
        self, key: str, expires: str | None, sig: str | None, now: float | None = None
    ) -> bool:
        """True only for an unexpired signature that this signer made for this exact key.

        Query parameters are untrusted text: anything malformed is simply invalid, never an
        exception, because an exception here would turn a bad link into a 500.
        """
        if not expires or not sig:
            return False
        # str.isdigit() also accepts "²" and other Unicode digits that int() rejects or
        # reads differently; only the ASCII form we issue is accepted.
        if not (expires.isascii() and expires.isdigit()) or len(expires) > _MAX_EXPIRES_DIGITS:
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        # Bytes, not str: compare_digest raises TypeError on non-ASCII str arguments.
        expected = self._sig(key, int(expires)).encode()
        return hmac.compare_digest(expected, sig.encode("utf-8", "replace"))
