"""Counts of batches, images and webhook deliveries by status, and of queued images by
priority, for the metrics endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from pixelbatch.db.models import ACTIVE_BATCH_STATES, Batch, Image, ImageStatus, WebhookDelivery

_Status = TypeVar("_Status", bound=StrEnum)


@dataclass(frozen=True)
class StatusCounts:
    """Status value -> count; a status with no rows is absent, not zero."""

    batches: dict[str, int]
    images: dict[str, int]  # of unfinished batches only: finished ones are history
    deliveries: dict[str, int]
    # Pending images of active batches by their batch's priority: the queue per level.
    queued: dict[str, int]


def status_counts(session: Session) -> StatusCounts:
    return StatusCounts(
        batches=_counts(session, select(Batch.status, func.count()).group_by(Batch.status)),
        images=_counts(
            session,
            select(Image.status, func.count())
            .join(Batch, Batch.id == Image.batch_id)
            .where(Batch.finished_at.is_(None))
            .group_by(Image.status),
        ),
        deliveries=_counts(
            session,
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status),
        ),
        queued=_counts(
            session,
            select(Batch.priority, func.count())
            .join(Image, Image.batch_id == Batch.id)
            .where(Batch.status.in_(ACTIVE_BATCH_STATES), Image.status == ImageStatus.PENDING)
            .group_by(Batch.priority),
        ),
    )


def _counts(session: Session, query: Select[_Status, int]) -> dict[str, int]:
    return {str(status): int(count) for status, count in session.execute(query)}
