"""Turning what a server or the network did into a FetchError (pixelbatch.fetch.errors)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpcore
import httpx
import pytest

from pixelbatch.errors import FetchError
from pixelbatch.fetch import errors

URL = httpx.URL("http://images.example/a.png")


# ---- parse_retry_after


def test_retry_after_parsing() -> None:
    assert errors.parse_retry_after("0") == 0
    assert errors.parse_retry_after("2.5") == 2.5
    assert errors.parse_retry_after("-3") == 0
    assert errors.parse_retry_after("soon") is None
    assert errors.parse_retry_after(None) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = errors.parse_retry_after(later)
    assert parsed is not None and 25 < parsed <= 30


def test_retry_after_in_the_past_is_now() -> None:
    earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert errors.parse_retry_after(earlier) == 0


# ---- http_error


@pytest.mark.parametrize(
    ("status", "retryable"), [(404, False), (403, False), (429, True), (500, True), (503, True)]
)
def test_http_error_retries_throttling_and_server_errors(status: int, retryable: bool) -> None:
    error = errors.http_error(URL, status, "Whatever", "7")
    assert error.code == f"http_{status}"
    assert error.retryable is retryable
    assert error.retry_after == (7.0 if retryable else None)
    assert error.details == {"url": str(URL), "status": status}


def test_http_error_message_names_status_reason_and_url() -> None:
    error = errors.http_error(URL, 404, "Not Found", None)
    assert error.message == f"HTTP 404 Not Found from {URL}"


# ---- too_large, connection_error, with_url


def test_too_large_names_the_declared_size_and_the_limit() -> None:
    error = errors.too_large(URL, 1 << 20, declared=10 << 20)
    assert error.code == "too_large" and not error.retryable
    assert "declares 10 MiB, over the 1 MiB limit" in error.message
    assert error.details["max_bytes"] == 1 << 20
    assert "body exceeds the 1 MiB limit" in errors.too_large(URL, 1 << 20).message


def test_connection_error_is_retryable() -> None:
    error = errors.connection_error(URL, httpcore.ConnectError("refused"))
    assert error.code == "connection_error" and error.retryable
    assert error.message == f"Could not download {URL}: refused"


def test_bad_certificate_anywhere_in_the_chain_is_final() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "Hostname mismatch"
    try:
        try:
            raise cause
        except ssl.SSLError as exc:
            raise httpcore.ConnectError("TLS failed") from exc
    except httpcore.ConnectError as exc:
        error = errors.connection_error(URL, exc)
    assert error.code == "tls_error" and not error.retryable
    assert "Hostname mismatch" in error.message


def test_with_url_keeps_code_and_retryability() -> None:
    original = FetchError(
        "Blocked", code="dns_error", retryable=True, retry_after=1.0, details={"host": "h"}
    )
    error = errors.with_url(original, URL)
    assert error.message == f"Blocked for {URL}"
    assert (error.code, error.retryable, error.retry_after) == ("dns_error", True, 1.0)
    assert error.details == {"host": "h", "url": str(URL)}
