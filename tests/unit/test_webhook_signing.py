from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import pytest

from pixelbatch.webhooks.signing import (
    InvalidSignature,
    decode_secret,
    new_secret,
    signature_headers,
    verify,
)


def test_signature_matches_the_standard_webhooks_scheme() -> None:
    secret = new_secret()
    body = b'{"request_id":"abc"}'
    headers = signature_headers(secret, "msg_1", body, now=1_700_000_000)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    verify(secret, headers, body, now=1_700_000_010)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, b: (h, b + b" "),
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": "1700000001"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    ],
)
def test_tampering_is_detected(
    mutate: Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]],
) -> None:
    secret = new_secret()
    body = b"{}"
    headers, body2 = mutate(signature_headers(secret, "msg_1", body, now=1_700_000_000), body)
    with pytest.raises(InvalidSignature):
        verify(secret, headers, body2, now=1_700_000_000)


def test_old_timestamps_are_replays() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "m", b"{}", now=1_700_000_000)
    with pytest.raises(InvalidSignature):
        verify(secret, headers, b"{}", now=1_700_000_000 + 3600)


@pytest.mark.parametrize("secret", ["whsec_%%%", "whsec_", "", "whsec_dGVzdA=!", "whsec_dGVzdA"])
def test_malformed_secrets_are_refused_not_turned_into_a_weak_key(secret: str) -> None:
    """``b64decode`` drops characters outside the alphabet, so these used to decode to the
    empty (or a truncated) key; an empty HMAC key makes signatures anyone can compute."""
    with pytest.raises(ValueError):
        decode_secret(secret)
    with pytest.raises(ValueError):
        signature_headers(secret, "msg_1", b"{}")
    with pytest.raises(ValueError):
        verify(
            secret, {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,x"}, b""
        )


def test_valid_secrets_decode() -> None:
    secret = new_secret()
    assert len(decode_secret(secret)) == 32
    assert decode_secret("whsec_dGVzdA==") == b"test"
    assert decode_secret("raw-shared-secret") == b"raw-shared-secret"


def test_any_of_several_signatures_may_match() -> None:
    """Standard Webhooks sends space-separated signatures during secret rotation."""
    old, new = new_secret(), new_secret()
    headers = signature_headers(new, "msg_1", b"{}", now=1_700_000_000)
    rotated = {
        **headers,
        "webhook-signature": signature_headers(old, "msg_1", b"{}", now=1_700_000_000)[
            "webhook-signature"
        ]
        + " "
        + headers["webhook-signature"],
    }
    verify(new, rotated, b"{}", now=1_700_000_000)
    verify(old, rotated, b"{}", now=1_700_000_000)
    with pytest.raises(InvalidSignature):
        verify(new_secret(), rotated, b"{}", now=1_700_000_000)


def test_timestamps_too_far_in_the_future_are_refused() -> None:
    secret = new_secret()
    headers = signature_headers(secret, "m", b"{}", now=1_700_000_000 + 301)
    with pytest.raises(InvalidSignature):
        verify(secret, headers, b"{}", now=1_700_000_000)
    verify(secret, headers, b"{}", now=1_700_000_001)
