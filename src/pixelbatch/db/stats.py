"""What the metrics endpoint reads from the database: counts by status, the queue per
priority, the oldest waiting batch, and the hosts that fail most (``GET /api/stats/hosts``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from pixelbatch.db.fair_share import claimable_now
from pixelbatch.db.models import (
    ACTIVE_BATCH_STATES,
    Batch,
    Image,
    ImageStatus,
    Priority,
    WebhookDelivery,
    utcnow,
)

_Status = TypeVar("_Status", bound=StrEnum)


@dataclass(frozen=True)
class StatusCounts:
    """Status value -> count; a status with no rows is absent, not zero."""

    batches: dict[str, int]
    images: dict[str, int]  # of unfinished batches only: finished ones are history
    deliveries: dict[str, int]


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
    )


def _counts(session: Session, query: Select[_Status, int]) -> dict[str, int]:
    return {str(status): int(count) for status, count in session.execute(query)}


PRIORITIES = tuple(p.value for p in Priority)


def queue_by_priority(session: Session) -> dict[str, int]:
    """Images waiting for a worker (pending, or leased with the lease run out) of active
    batches, per batch priority; every priority present, zeros included."""
    query = (
        select(Batch.priority, func.count())
        .select_from(Image)
        .join(Batch, Batch.id == Image.batch_id)
        .where(Batch.status.in_(ACTIVE_BATCH_STATES), claimable_now(utcnow()))
        .group_by(Batch.priority)
    )
    counts = dict.fromkeys(PRIORITIES, 0)
    counts.update({str(p): int(n) for p, n in session.execute(query)})
    return counts


def oldest_pending_seconds(session: Session) -> float:
    """Age of the oldest batch not yet finished (pending or processing); 0 when none is."""
    oldest = session.scalar(
        select(func.min(Batch.created_at)).where(Batch.status.in_(ACTIVE_BATCH_STATES))
    )
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - oldest).total_seconds())


def recent_failures(
    session: Session, tenant: str, since: datetime, cap: int
) -> list[tuple[str, str]]:
    """(url, error code) of up to ``cap`` images of this tenant's batches that failed since
    ``since``, newest first: the raw material of the failing-hosts report, bounded so one
    request never reads a whole table."""
    rows = session.execute(
        select(Image.url, Image.error_code)
        .join(Batch, Batch.id == Image.batch_id)
        .where(
            Batch.tenant == tenant,
            Image.status == ImageStatus.FAILED,
            Image.finished_at >= since,
        )
        .order_by(Image.finished_at.desc())
        .limit(cap)
    )
    return [(url, code or "error") for url, code in rows]
