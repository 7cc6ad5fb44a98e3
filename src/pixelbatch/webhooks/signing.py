"""Standard Webhooks signatures: HMAC-SHA256 over ``{id}.{timestamp}.{body}``.

Receivers verify with any Standard Webhooks library or with ``verify`` below.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from pixelbatch.errors import PixelbatchError
from pixelbatch.secrets import WEBHOOK_SECRET_PREFIX, load_or_create, new_secret
from pixelbatch.settings import Settings

SECRET_PREFIX = WEBHOOK_SECRET_PREFIX
SECRET_FILE = "webhook_secret"  # noqa: S105 - a file name


class InvalidSignature(PixelbatchError):
    code = "invalid_signature"
    status_code = 400


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (or of a raw string secret).

    Raises ValueError rather than returning an empty or partial key: ``b64decode`` would by
    default drop every character outside the alphabet, so a mistyped secret such as
    ``whsec_%%%`` - or an empty one - became the empty key, and signatures anyone can compute.
    """
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError:  # binascii.Error
            raise ValueError("webhook secret: the part after 'whsec_' is not base64") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def load_or_create_secret(settings: Settings) -> str:
    """The deployment's default webhook secret (clients with API keys get their own)."""
    return load_or_create(settings, settings.webhook_secret, SECRET_FILE, SECRET_PREFIX)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secret: str, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    tolerance: int = 300,
    now: float | None = None,
) -> None:
    """Receiver-side check: raises ``InvalidSignature`` unless a v1 signature matches and the
    timestamp is within ``tolerance`` seconds (replay protection).

    A malformed ``secret`` raises ValueError first, whatever the request: it is the
    receiver's configuration error, not something a sender did."""
    decode_secret(secret)
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        offered = lowered["webhook-signature"].split()
    except (KeyError, ValueError):
        raise InvalidSignature("missing or malformed webhook headers") from None
    current = now if now is not None else time.time()
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("webhook timestamp outside the tolerance window")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise InvalidSignature("no matching webhook signature")


__all__ = [
    "SECRET_PREFIX",
    "InvalidSignature",
    "decode_secret",
    "load_or_create_secret",
    "new_secret",
    "sign",
    "signature_headers",
    "verify",
]
