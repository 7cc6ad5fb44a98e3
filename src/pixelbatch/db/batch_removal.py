"""Removing a batch's rows: one batch at a time, and the finished batches retention expires.

Rows go child first (webhook attempts, deliveries, images, products, then the batch), the
order a worker recording a result locks them in (image, then its batch), so a delete racing
a recording waits instead of deadlocking; no foreign-key cascade is relied on. Callers own
the transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pixelbatch.db.models import (
    Batch,
    BatchStatus,
    Image,
    Product,
    WebhookAttempt,
    WebhookDelivery,
)

# What retention may delete: batches that ended (a cancelled one once its CSV is written).
FINISHED_STATES = (
    BatchStatus.COMPLETED,
    BatchStatus.COMPLETED_WITH_ERRORS,
    BatchStatus.FAILED,
    BatchStatus.CANCELLED,
)


def delete_batch_rows(session: Session, batch_id: uuid.UUID) -> bool:
    """Delete the batch and every row that references it; False when it did not exist."""
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.batch_id == batch_id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id))
    # Repeats point at their first occurrence (duplicate_of): clear the links before the rows.
    session.execute(
        delete(Image).where(Image.batch_id == batch_id, Image.duplicate_of.is_not(None))
    )
    session.execute(delete(Image).where(Image.batch_id == batch_id))
    session.execute(delete(Product).where(Product.batch_id == batch_id))
    result = session.execute(delete(Batch).where(Batch.id == batch_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def expired_batches(session: Session, finished_before: datetime, limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` finished batches whose finish time is before ``finished_before``,
    oldest first, so a large backlog is removed in bounded chunks."""
    return list(
        session.scalars(
            select(Batch.id)
            .where(
                Batch.status.in_(FINISHED_STATES),
                Batch.finished_at.is_not(None),
                Batch.finished_at < finished_before,
            )
            .order_by(Batch.finished_at)
            .limit(limit)
        )
    )
