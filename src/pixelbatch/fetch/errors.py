"""What went wrong with a download, as the ``FetchError`` a caller and a user can act on.

Every failure of the fetch package ends as one ``FetchError`` whose ``code`` is stable and
whose ``retryable`` decides whether the retry policy tries again; nothing from httpcore
escapes.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from datetime import UTC, datetime

import httpx

from pixelbatch.errors import FetchError


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def http_error(
    url: httpx.URL, status: int, reason: str, retry_after_header: str | None
) -> FetchError:
    """A non-2xx answer: 429 and 5xx are worth retrying, honouring their Retry-After."""
    retryable = status == 429 or 500 <= status <= 599
    retry_after = parse_retry_after(retry_after_header) if retryable else None
    return FetchError(
        f"HTTP {status} {reason} from {url}".replace("  ", " "),
        code=f"http_{status}",
        retryable=retryable,
        retry_after=retry_after,
        details={"url": str(url), "status": status},
    )


def too_large(url: httpx.URL, max_bytes: int, declared: int | None = None) -> FetchError:
    limit = human_bytes(max_bytes)
    if declared is not None:
        message = f"{url} is too large: it declares {human_bytes(declared)}, over the {limit} limit"
    else:
        message = f"{url} is too large: its body exceeds the {limit} limit"
    return FetchError(message, code="too_large", details={"url": str(url), "max_bytes": max_bytes})


def timeout_error(url: httpx.URL, deadline: float, total_timeout: float) -> FetchError:
    """A timeout; the message names the total deadline when that is what ran out."""
    if time.monotonic() >= deadline - 0.01:
        message = f"Download of {url} did not finish within {total_timeout:g}s"
    else:
        message = f"Timed out waiting for {url}"
    return FetchError(message, code="timeout", retryable=True, details={"url": str(url)})


def connection_error(url: httpx.URL, exc: Exception) -> FetchError:
    """A transport failure: retryable, except a certificate that retrying will not fix."""
    detail = str(exc).strip() or type(exc).__name__
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return FetchError(
                f"Could not download {url}: TLS certificate not valid ({cause.verify_message})",
                code="tls_error",
                details={"url": str(url)},
            )
        cause = cause.__cause__ or cause.__context__
    return FetchError(
        f"Could not download {url}: {detail}",
        code="connection_error",
        retryable=True,
        details={"url": str(url)},
    )


def with_url(exc: FetchError, url: httpx.URL) -> FetchError:
    """``exc`` naming ``url``: the network layer that raised it sees only host and port.
    A refusal's hint (which setting allows it) stays last, after the URL."""
    message = f"{exc.message} for {url}"
    hint = (exc.details or {}).get("hint")
    if isinstance(hint, str) and exc.message.endswith(f"; {hint}"):
        message = f"{exc.message[: -len(hint) - 2]} for {url}; {hint}"
    return FetchError(
        message,
        code=exc.code,
        retryable=exc.retryable,
        retry_after=exc.retry_after,
        details={**(exc.details or {}), "url": str(url)},
    )
