"""Send due webhooks from the outbox; one attempt row per try, backoff between tries."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from pixelbatch.db import queries
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import ApiKey, Batch, utcnow
from pixelbatch.errors import FetchError
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.webhooks.signing import load_or_create_secret, signature_headers

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, settings: Settings) -> float:
    """Exponential backoff with jitter: base, 2*base, 4*base ... capped; spreads retries over
    hours with the defaults (10 s doubling to 1 h, 10 attempts)."""
    delay = min(settings.webhook_backoff_max, settings.webhook_backoff_base * 2.0 ** (attempt - 1))
    return float(delay * random.uniform(0.8, 1.2))


def encode_payload(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def client_secret(session: Session, batch_id: uuid.UUID) -> str | None:
    """The webhook secret of the API key that uploaded the batch, if any."""
    return session.scalar(
        select(ApiKey.webhook_secret)
        .join(Batch, Batch.api_key_id == ApiKey.id)
        .where(Batch.id == batch_id)
    )


def deliver_due(runtime: Runtime, limit: int = 20) -> int:
    """Attempt every delivery that is due; returns how many were attempted."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        due = queries.claim_due_deliveries(
            session, limit=limit, lease_seconds=settings.webhook_timeout * 3 + 30
        )
        work = [
            (d.id, d.event_id, d.url, d.payload, d.attempts, client_secret(session, d.batch_id))
            for d in due
        ]
    if not work:
        return 0
    default_secret = load_or_create_secret(settings)
    for delivery_id, event_id, url, payload, attempts, own_secret in work:
        secret = own_secret or default_secret
        body = encode_payload(payload)
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = runtime.fetcher.post(
                url,
                body,
                signature_headers(secret, event_id, body),
                timeout=settings.webhook_timeout,
            )
            if not 200 <= status_code < 300:
                error = f"receiver answered HTTP {status_code}"
        except FetchError as exc:
            error = exc.message
        duration_ms = (time.monotonic() - started) * 1000
        delivered = error is None
        attempt_number = attempts + 1
        next_at = None
        if not delivered and attempt_number < settings.webhook_max_attempts:
            next_at = utcnow() + timedelta(seconds=backoff_delay(attempt_number, settings))
        if not delivered:
            log.warning("webhook %s attempt %d failed: %s", event_id, attempt_number, error)
        with transaction(runtime.sessions) as session:
            queries.record_delivery_attempt(
                session,
                delivery_id,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
                delivered=delivered,
                next_attempt_at=next_at,
            )
    return len(work)
