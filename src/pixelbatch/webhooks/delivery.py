"""Send due webhooks from the outbox; one attempt row per try, backoff between tries.

A delivery keeps one ``webhook-id`` (the event id) across all its attempts so receivers
can de-duplicate, and is re-signed on each attempt. Anything but a 2xx answer - including
a redirect, an error status, a timeout or a refused connection - is a failed attempt,
retried with exponential backoff until ``webhook_max_attempts`` and then FAILED for good.
A refusal by the fetch address policy (a name that resolves to a private address, a port
that is not allowed) would be the same on every attempt, so it is FAILED at once.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pixelbatch import __version__
from pixelbatch.db import outbox
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import utcnow
from pixelbatch.errors import FetchError
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.telemetry import instruments as metrics
from pixelbatch.webhooks.signing import load_or_create_secret, signature_headers

log = logging.getLogger(__name__)

# A webhook is a JSON API call, not an image download: it does not carry the fetcher's
# image Accept header, and its User-Agent tells the receiver's logs what is calling.
WEBHOOK_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json",
    "user-agent": f"pixelbatch-webhooks/{__version__} (+https://github.com/pixelbatch/pixelbatch)",
}

# FetchError codes no retry can change: the address policy's refusals and a bad URL.
PERMANENT_ERRORS = frozenset({"blocked_address", "blocked_port", "invalid_url"})


def backoff_delay(attempt: int, settings: Settings) -> float:
    """Delay after failed attempt ``attempt`` (1-based): base, 2*base, 4*base ... capped at
    ``webhook_backoff_max``, times a +-20% jitter so deliveries that failed together (one
    receiver outage) do not all retry in the same second.

    With the defaults (base 10 s, cap 1 h, 10 attempts) the nine gaps run from 10 s to
    2560 s, about 85 minutes in all: long enough to ride out a deploy or a short outage."""
    delay = min(settings.webhook_backoff_max, settings.webhook_backoff_base * 2.0 ** (attempt - 1))
    return float(delay * random.uniform(0.8, 1.2))


def encode_payload(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class _Due:
    """What one attempt needs, copied out of the claiming transaction."""

    id: uuid.UUID
    event_id: str
    url: str
    payload: dict[str, Any]
    attempts: int
    own_secret: str | None


def _claim_one(runtime: Runtime, batch_id: uuid.UUID | None) -> _Due | None:
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        due = outbox.claim_due_deliveries(
            session,
            limit=1,
            lease_seconds=settings.webhook_timeout * 3 + 30,
            batch_id=batch_id,
        )
        if not due:
            return None
        d = due[0]
        return _Due(
            d.id,
            d.event_id,
            d.url,
            d.payload,
            d.attempts,
            outbox.uploader_webhook_secret(session, d.batch_id),
        )


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None = None
    permanent: bool = False  # no later attempt can succeed


def _send(runtime: Runtime, item: _Due) -> _Outcome:
    """POST once. Never raises: whatever goes wrong is this attempt's failure, so it is
    recorded and backed off like any other (or FAILED at once when it is permanent)."""
    settings = runtime.settings
    try:
        secret = item.own_secret or load_or_create_secret(settings)
        body = encode_payload(item.payload)
        # Signed now, not when queued: a retry hours later carries a current timestamp
        # that the receiver's replay window accepts, under the same webhook-id.
        headers = {**WEBHOOK_HEADERS, **signature_headers(secret, item.event_id, body)}
        status_code = runtime.fetcher.post(
            item.url, body, headers, timeout=settings.webhook_timeout
        )
    except FetchError as exc:
        return _Outcome(None, exc.message, permanent=exc.code in PERMANENT_ERRORS)
    except Exception:
        # A bad secret or payload must not wedge the outbox: left unrecorded, the delivery
        # would come back after its lease, fail the same way first in every pass, forever.
        log.exception("webhook %s could not be sent", item.event_id)
        return _Outcome(None, "internal error: the webhook could not be signed or sent")
    # Redirects are not followed (the target was never checked), so 3xx is a failure too.
    if not 200 <= status_code < 300:
        return _Outcome(status_code, f"receiver answered HTTP {status_code}")
    return _Outcome(status_code)


def deliver_due(runtime: Runtime, limit: int = 20, batch_id: uuid.UUID | None = None) -> int:
    """Attempt up to ``limit`` due deliveries (only ``batch_id``'s when given); returns how
    many were attempted.

    Deliveries are claimed one at a time, just before they are sent, so a lease only has
    to outlast one attempt (a few timeouts). Claiming a page up front would leave its tail
    waiting behind slow receivers until those leases ran out, and another worker would then
    send and record the same attempt again. It also lets several workers share the outbox.
    """
    settings = runtime.settings
    attempted = 0
    while attempted < limit:
        item = _claim_one(runtime, batch_id)
        if item is None:
            break
        attempted += 1
        started = time.monotonic()
        outcome = _send(runtime, item)
        status_code, error = outcome.status_code, outcome.error
        duration_ms = (time.monotonic() - started) * 1000
        delivered = error is None
        attempt_number = item.attempts + 1
        next_at = None
        retry = not delivered and not outcome.permanent
        if retry and attempt_number < settings.webhook_max_attempts:
            next_at = utcnow() + timedelta(seconds=backoff_delay(attempt_number, settings))
        if not delivered:
            log.warning("webhook %s attempt %d failed: %s", item.event_id, attempt_number, error)
        with transaction(runtime.sessions) as session:
            outbox.record_delivery_attempt(
                session,
                item.id,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
                delivered=delivered,
                next_attempt_at=next_at,
            )
        # Counted once the attempt is recorded: delivered, retrying (another attempt is
        # due), or failed for good.
        metrics.webhook_attempted(
            "delivered" if delivered else "retrying" if next_at is not None else "failed"
        )
    return attempted
