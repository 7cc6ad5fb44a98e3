from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pixelbatch.webhooks.signing import InvalidSignature, new_secret, signature_headers, verify


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
def test_tampering_is_detected(mutate) -> None:
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
