"""A batch's life after upload: started, one finaliser, completion, cancel, retry.

Like the image state machine, each change is a conditional UPDATE that names the state it
expects, so racing callers change nothing twice. Callers own the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from pixelbatch.db import outbox
from pixelbatch.db.models import (
    ACTIVE_BATCH_STATES,
    Batch,
    BatchStatus,
    Image,
    ImageStatus,
    utcnow,
)

_MARK_STARTED = (
    update(Batch)
    .where(Batch.id.in_(bindparam("ids", expanding=True)), Batch.status == BatchStatus.PENDING)
    .values(status=BatchStatus.PROCESSING, started_at=bindparam("now"))
)


def mark_started(session: Session, batch_ids: Collection[uuid.UUID], now: datetime) -> None:
    """A pending batch becomes PROCESSING when its first image is leased (prebuilt: it runs
    with every claim)."""
    session.connection().execute(_MARK_STARTED, {"ids": list(batch_ids), "now": now})


_ALL_RECORDED = select(
    Batch.__table__.c.images_done + Batch.__table__.c.images_failed
    >= Batch.__table__.c.images_total
).where(Batch.__table__.c.id == bindparam("batch_id"))


def all_recorded(session: Session, batch_id: uuid.UUID) -> bool:
    """Whether every image of the batch is recorded (False for a batch that is gone). Asked
    after each recording, so a prebuilt Core query rather than loading the whole batch."""
    return bool(session.connection().execute(_ALL_RECORDED, {"batch_id": batch_id}).scalar())


def _unfinalised() -> ColumnElement[bool]:
    """A batch that needs its finaliser: an active one whose images are all recorded, or a
    cancelled one without its output CSV yet (a cancel leaves the rest of its images unrecorded
    and ends the batch, but the finaliser still writes its CSV and queues its webhook)."""
    return or_(
        and_(
            Batch.status.in_(ACTIVE_BATCH_STATES),
            Batch.images_done + Batch.images_failed >= Batch.images_total,
        ),
        and_(Batch.status == BatchStatus.CANCELLED, Batch.output_key.is_(None)),
    )


def claim_finalization(session: Session, batch_id: uuid.UUID, lease_seconds: float) -> bool:
    """Win the right to finalise a batch that is ready (see ``_unfinalised``); only one
    caller does."""
    now = utcnow()
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            _unfinalised(),
            or_(Batch.finalizer_lease_until.is_(None), Batch.finalizer_lease_until < now),
        )
        .values(finalizer_lease_until=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew_finalization(session: Session, batch_id: uuid.UUID, lease_seconds: float) -> bool:
    """Extend a finaliser's lease while it writes the output CSV (its heartbeat); False once
    the batch is finalised, gone, or its lease was given back."""
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.finalizer_lease_until.is_not(None), _unfinalised())
        .values(finalizer_lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_finalization(session: Session, batch_id: uuid.UUID) -> None:
    """Give the finaliser lease back at once (the batch changed under its finaliser, e.g. it
    was cancelled), so the next pass finalises it without waiting for the lease to run out."""
    session.execute(update(Batch).where(Batch.id == batch_id).values(finalizer_lease_until=None))


def batches_ready_to_finalize(session: Session) -> list[uuid.UUID]:
    """Batches ready to finalise that no live finaliser holds: crash recovery, and cancelled
    batches still waiting for their output CSV and webhook."""
    now = utcnow()
    return list(
        session.scalars(
            select(Batch.id).where(
                _unfinalised(),
                or_(Batch.finalizer_lease_until.is_(None), Batch.finalizer_lease_until < now),
            )
        )
    )


def complete_batch(
    session: Session,
    batch_id: uuid.UUID,
    *,
    status: BatchStatus,
    output_key: str | None,
    message: str,
    webhook_payload: dict[str, Any] | None,
    output_urls_expire_at: datetime | None = None,
) -> bool:
    """Set the final state and, in the same transaction, put the webhook in the outbox.

    ``status`` CANCELLED finalises a cancelled batch (once: it sets its output key); any other
    finalises an active one, and finds nothing to do if the batch was cancelled meanwhile."""
    now = utcnow()
    if status == BatchStatus.CANCELLED:
        expected = and_(Batch.status == BatchStatus.CANCELLED, Batch.output_key.is_(None))
    else:
        expected = Batch.status.in_(ACTIVE_BATCH_STATES)
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, expected)
        .values(
            status=status,
            output_key=output_key,
            output_urls_expire_at=output_urls_expire_at,
            message=message,
            finished_at=func.coalesce(Batch.finished_at, now),
        )
        .returning(Batch.webhook_url)
    )
    row = result.one_or_none()
    if row is None:
        return False
    if row.webhook_url and webhook_payload is not None:
        outbox.enqueue_delivery(session, batch_id, row.webhook_url, webhook_payload, now)
    return True


def cancel_batch(session: Session, batch_id: uuid.UUID) -> bool:
    """Cancel an active batch and its unfinished images. False when it is not active.

    Images are locked before the batch row, the order recording a result takes (image,
    then its batch's counters): the opposite order deadlocks PostgreSQL when a worker
    records an image of the batch at the moment it is cancelled. A savepoint undoes the
    images if the batch turns out to have finished meanwhile.
    """
    now = utcnow()
    with session.begin_nested() as savepoint:
        session.execute(
            update(Image)
            .where(
                Image.batch_id == batch_id,
                Image.status.in_((ImageStatus.PENDING, ImageStatus.PROCESSING)),
            )
            .values(status=ImageStatus.CANCELLED, lease_until=None)
        )
        result = session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.status.in_(ACTIVE_BATCH_STATES))
            .values(status=BatchStatus.CANCELLED, finished_at=now, message="cancelled by client")
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            savepoint.rollback()
            return False
    return True


def retry_failed_images(session: Session, batch_id: uuid.UUID) -> int:
    """Put a finished batch's failed images back in the queue; returns how many."""
    batch = session.get(Batch, batch_id, with_for_update=True)
    if batch is None or not batch.status.is_final or batch.status == BatchStatus.CANCELLED:
        return 0
    result = session.execute(
        update(Image)
        .where(Image.batch_id == batch_id, Image.status == ImageStatus.FAILED)
        .values(status=ImageStatus.PENDING, error_code=None, error_message=None, attempts=0)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=BatchStatus.PROCESSING,
                images_failed=Batch.images_failed - count,
                finished_at=None,
                finalizer_lease_until=None,
                output_key=None,
                message=None,
            )
        )
    return count
