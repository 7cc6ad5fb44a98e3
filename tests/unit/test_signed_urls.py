"""Signed output URLs: expiry, key separation and path binding, each tested on its own.

The integration test tampers ``expires``, which also breaks the signature, so it would pass
even if expiry were never checked. Here the clock is moved instead (``now=``), with an
untouched, correctly signed URL, so only the expiry check can refuse it.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest

from pixelbatch.auth.urls import UrlSigner

ISSUED = 1_700_000_000.0
TTL = 3600
KEY = "0b6f2d7e-1c1f-4e8b-9a7e-3f1d2c3b4a5e/outputs/1-0.jpg"


def _params(signer: UrlSigner, key: str = KEY, now: float = ISSUED) -> tuple[str, str]:
    """The (expires, sig) pair exactly as a client would read it back from the URL."""
    query = parse_qs(signer.query(key, now=now), strict_parsing=True)
    return query["expires"][0], query["sig"][0]


def test_valid_until_the_ttl_and_refused_just_after() -> None:
    signer = UrlSigner("secret-a", ttl=TTL)
    expires, sig = _params(signer)
    assert int(expires) == ISSUED + TTL

    assert signer.valid(KEY, expires, sig, now=ISSUED)
    assert signer.valid(KEY, expires, sig, now=ISSUED + TTL - 1)
    assert signer.valid(KEY, expires, sig, now=ISSUED + TTL - 0.001)
    # Same URL, untouched signature: only the clock moved.
    assert not signer.valid(KEY, expires, sig, now=ISSUED + TTL + 0.001)
    assert not signer.valid(KEY, expires, sig, now=ISSUED + TTL + 1)
    assert not signer.valid(KEY, expires, sig, now=ISSUED + 10 * TTL)


def test_default_clock_is_the_real_time() -> None:
    """Without ``now`` the signer uses time.time(): a fresh URL works, an old one does not."""
    signer = UrlSigner("secret-a", ttl=TTL)
    expires, sig = _params(signer, now=time.time())
    assert signer.valid(KEY, expires, sig)
    old_expires, old_sig = _params(signer, now=ISSUED)  # expired in 2023
    assert not signer.valid(KEY, old_expires, old_sig)


def test_signature_from_another_secret_is_refused() -> None:
    signer_a = UrlSigner("secret-a", ttl=TTL)
    signer_b = UrlSigner("secret-b", ttl=TTL)
    expires, sig = _params(signer_a)
    assert signer_a.valid(KEY, expires, sig, now=ISSUED)
    assert not signer_b.valid(KEY, expires, sig, now=ISSUED)


def test_signature_for_one_path_is_refused_for_another() -> None:
    signer = UrlSigner("secret-a", ttl=TTL)
    expires, sig = _params(signer)
    other_batch = "5c0ffee0-0000-4000-8000-000000000000/outputs/1-0.jpg"
    for other in (other_batch, KEY.replace("1-0", "1-1"), KEY + "x", KEY[:-1], ""):
        assert not signer.valid(other, expires, sig, now=ISSUED), other


def test_the_expiry_cannot_be_extended() -> None:
    signer = UrlSigner("secret-a", ttl=TTL)
    expires, sig = _params(signer)
    later = str(int(expires) + 86_400)
    assert not signer.valid(KEY, later, sig, now=ISSUED)
    # A leading zero names the same instant: it may be accepted, but must expire on time.
    assert not signer.valid(KEY, "0" + expires, sig, now=ISSUED + TTL + 1)


@pytest.mark.parametrize(
    ("expires", "sig"),
    [
        (None, "x"),
        ("1700003600", None),
        ("", ""),
        ("-1", "x"),
        ("1e12", "x"),
        ("\u00b2", "x"),  # superscript two: str.isdigit() is True, int() raises
        ("\u0661\u0667\u0660\u0660", "x"),  # Arabic-Indic digits: int() reads them
        ("9" * 5000, "x"),  # past CPython's int() digit limit: ValueError
        ("99999999999", "\u00e9\u00e9\u00e9"),  # non-ASCII str: compare_digest raises
        ("99999999999", "\ud800"),  # a lone surrogate cannot even be encoded strictly
    ],
    ids=[
        "no-expires",
        "no-sig",
        "empty",
        "negative",
        "exponent",
        "superscript",
        "arabic-digits",
        "5000-digits",
        "non-ascii-sig",
        "surrogate-sig",
    ],
)
def test_malformed_parameters_are_invalid_not_errors(expires: str | None, sig: str | None) -> None:
    """Query parameters are attacker-controlled; a bad link must be a 404, never a 500."""
    signer = UrlSigner("secret-a", ttl=TTL)
    assert signer.valid(KEY, expires, sig, now=ISSUED) is False


def test_unicode_digits_do_not_alias_a_real_signature() -> None:
    """The signature is accepted only with the ASCII expiry it was issued with."""
    signer = UrlSigner("secret-a", ttl=TTL)
    expires, sig = _params(signer)
    arabic = expires.translate({ord(str(d)): chr(0x0660 + d) for d in range(10)})
    assert int(arabic) == int(expires)
    assert signer.valid(KEY, expires, sig, now=ISSUED)
    assert not signer.valid(KEY, arabic, sig, now=ISSUED)
