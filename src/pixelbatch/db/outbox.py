"""The webhook outbox: enqueue a batch's event, claim due deliveries, record each attempt.

An event is written in the transaction that finishes its batch, so it is sent if and only if
the batch finished; deliveries are leased like images so workers can share the outbox.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select
from sqlalchemy.orm import Session

from pixelbatch.db.models import (
    ApiKey,
    Batch,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)


def enqueue_delivery(
    session: Session, batch_id: uuid.UUID, url: str, payload: dict[str, Any], now: datetime
) -> None:
    """Put one event for the batch in the outbox, due now. A retried batch finishes again:
    each finish is a new event with its own id, the earlier ones kept as its history."""
    earlier = session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.batch_id == batch_id)
    )
    session.execute(
        insert(WebhookDelivery).values(
            id=uuid.uuid4(),
            batch_id=batch_id,
            event_id=f"msg_{batch_id.hex}_{earlier or 0}",
            url=url,
            payload=payload,
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def claim_due_deliveries(
    session: Session, *, limit: int, lease_seconds: float, batch_id: uuid.UUID | None = None
) -> list[WebhookDelivery]:
    """Lease up to ``limit`` due deliveries; only ``batch_id``'s when given (the one-batch
    worker of ``pixelbatch process`` must never send another run's webhook)."""
    now = utcnow()
    query = (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    if batch_id is not None:
        query = query.where(WebhookDelivery.batch_id == batch_id)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    deliveries = list(session.scalars(query))
    for delivery in deliveries:
        delivery.lease_until = now + timedelta(seconds=lease_seconds)
    return deliveries


def record_delivery_attempt(
    session: Session,
    delivery_id: uuid.UUID,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
    delivered: bool,
    next_attempt_at: datetime | None,
) -> None:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            number=delivery.attempts,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
    )
    delivery.last_status_code = status_code
    delivery.last_error = error
    delivery.lease_until = None
    if delivered:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = utcnow()
    elif next_attempt_at is None:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.next_attempt_at = next_attempt_at


def abandon_pending_deliveries(session: Session, batch_id: uuid.UUID, reason: str) -> int:
    """Give up the batch's undelivered events for good (FAILED, ``reason`` before the last
    attempt's error), so that no later process sends them; returns how many. Only unleased
    ones: one being sent is left to the attempt that holds it."""
    now = utcnow()
    pending = session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.batch_id == batch_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        )
    ).all()
    for delivery in pending:
        delivery.status = DeliveryStatus.FAILED
        delivery.lease_until = None
        last = delivery.last_error
        delivery.last_error = f"{reason} (last attempt: {last})" if last else reason
    return len(pending)


def uploader_webhook_secret(session: Session, batch_id: uuid.UUID) -> str | None:
    """The webhook secret of the API key that uploaded the batch, if any."""
    return session.scalar(
        select(ApiKey.webhook_secret)
        .join(Batch, Batch.api_key_id == ApiKey.id)
        .where(Batch.id == batch_id)
    )


def count_due_deliveries(session: Session) -> int:
    now = utcnow()
    return int(
        session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
            )
        )
        or 0
    )
