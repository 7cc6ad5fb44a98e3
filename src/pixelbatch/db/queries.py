"""The few queries that move state. Callers own the transaction; nothing here commits.

Every state change is a conditional UPDATE whose WHERE clause says which state it expects,
so a duplicate delivery, a lost lease or two workers racing change nothing twice: the
loser's UPDATE matches no row and it knows it lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from pixelbatch.db.models import (
    Batch,
    BatchStatus,
    DeliveryStatus,
    Image,
    ImageStatus,
    Product,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)

ACTIVE_BATCH_STATES = (BatchStatus.PENDING, BatchStatus.PROCESSING)


@dataclass(frozen=True)
class NewProduct:
    row_number: int
    serial: str
    name: str
    extra: list[str]
    urls: Sequence[str]


@dataclass(frozen=True)
class ClaimedImage:
    id: int
    batch_id: uuid.UUID
    url: str
    row_number: int
    position: int
    options: dict[str, Any]


@dataclass(frozen=True)
class ImageSuccess:
    output_key: str
    content_type: str
    bytes_in: int
    bytes_out: int
    width: int
    height: int
    source_format: str
    source_quality: int | None
    output_quality: int | None
    duration_ms: float


def insert_products(session: Session, batch_id: uuid.UUID, products: Sequence[NewProduct]) -> int:
    """Insert one slice of a catalog; returns the number of images it added."""
    if not products:
        return 0
    product_ids = session.scalars(
        insert(Product).returning(Product.id, sort_by_parameter_order=True),
        [
            {
                "batch_id": batch_id,
                "row_number": p.row_number,
                "serial": p.serial,
                "name": p.name,
                "extra": p.extra,
            }
            for p in products
        ],
    ).all()
    image_rows = [
        {
            "batch_id": batch_id,
            "product_id": product_id,
            "position": position,
            "url": url,
            "status": ImageStatus.PENDING,
        }
        for product_id, product in zip(product_ids, products, strict=True)
        for position, url in enumerate(product.urls)
    ]
    session.execute(insert(Image), image_rows)
    return len(image_rows)


def claim_images(
    session: Session,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    batch_id: uuid.UUID | None = None,
) -> list[ClaimedImage]:
    """Lease up to ``limit`` images that are pending or whose lease ran out.

    The limit is shared fairly across the active batches, oldest first, so one large batch
    cannot starve the others.
    """
    if limit <= 0:
        return []
    now = utcnow()
    batch_query = (
        select(Batch.id, Batch.options)
        .where(Batch.status.in_(ACTIVE_BATCH_STATES))
        .order_by(Batch.created_at)
        .limit(limit)
    )
    if batch_id is not None:
        batch_query = batch_query.where(Batch.id == batch_id)
    batches = session.execute(batch_query).all()
    if not batches:
        return []
    per_batch = max(1, -(-limit // len(batches)))
    claimed: list[ClaimedImage] = []
    # First an equal share each; then what is left goes to batches that had more to give.
    hungry = []
    for bid, options in batches:
        take = min(per_batch, limit - len(claimed))
        if take <= 0:
            break
        got = _claim_from_batch(session, bid, options, take, owner, now, lease_seconds)
        claimed.extend(got)
        if len(got) == take:
            hungry.append((bid, options))
    for bid, options in hungry:
        take = limit - len(claimed)
        if take <= 0:
            break
        claimed.extend(_claim_from_batch(session, bid, options, take, owner, now, lease_seconds))
    return claimed


def _claim_from_batch(
    session: Session,
    batch_id: uuid.UUID,
    options: dict[str, Any],
    take: int,
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> list[ClaimedImage]:
    query = (
        select(Image.id, Image.url, Image.position, Product.row_number)
        .join(Product, Product.id == Image.product_id)
        .where(Image.batch_id == batch_id, _claimable_now(now))
        .order_by(Image.id)
        .limit(take)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Image)
    rows = session.execute(query).all()
    if not rows:
        return []
    session.execute(
        update(Image)
        .where(Image.id.in_([r.id for r in rows]))
        .values(
            status=ImageStatus.PROCESSING,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=Image.attempts + 1,
        )
    )
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.PENDING)
        .values(status=BatchStatus.PROCESSING, started_at=now)
    )
    return [
        ClaimedImage(
            id=r.id,
            batch_id=batch_id,
            url=r.url,
            row_number=r.row_number,
            position=r.position,
            options=options,
        )
        for r in rows
    ]


def _claimable_now(now: datetime) -> Any:
    return and_(
        Image.duplicate_of.is_(None),
        or_(
            Image.status == ImageStatus.PENDING,
            and_(Image.status == ImageStatus.PROCESSING, Image.lease_until < now),
        ),
    )


def count_claimable(session: Session) -> int:
    """Images of active batches that no live lease covers: work waiting for a worker."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Image)
            .join(Batch, Batch.id == Image.batch_id)
            .where(Batch.status.in_(ACTIVE_BATCH_STATES), _claimable_now(utcnow()))
        )
        or 0
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


def renew_leases(session: Session, *, owner: str, ids: Iterable[int], lease_seconds: float) -> int:
    id_list = list(ids)
    if not id_list:
        return 0
    result = session.execute(
        update(Image)
        .where(
            Image.id.in_(id_list),
            Image.lease_owner == owner,
            Image.status == ImageStatus.PROCESSING,
        )
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _record(
    session: Session, image_id: int, owner: str, values: dict[str, Any]
) -> tuple[uuid.UUID, int] | None:
    """Set an image's final values if we still hold its lease, and copy them to the images
    of the same batch that repeat its URL (fetched once, recorded for each). Returns the
    batch and how many images were recorded, or None when the lease was lost."""
    now = utcnow()
    batch_id = session.execute(
        update(Image)
        .where(
            Image.id == image_id,
            Image.status == ImageStatus.PROCESSING,
            Image.lease_owner == owner,
        )
        .values(**values, lease_until=None, finished_at=now)
        .returning(Image.batch_id)
    ).scalar_one_or_none()
    if batch_id is None:
        return None
    copies = session.execute(
        update(Image)
        .where(Image.duplicate_of == image_id, Image.status == ImageStatus.PENDING)
        .values(**values, finished_at=now)
    ).rowcount  # type: ignore[attr-defined]
    return batch_id, 1 + int(copies)


def record_success(session: Session, image_id: int, owner: str, outcome: ImageSuccess) -> bool:
    """Record a processed image once. False when the lease was lost to another worker."""
    recorded = _record(
        session,
        image_id,
        owner,
        {
            "status": ImageStatus.DONE,
            "output_key": outcome.output_key,
            "content_type": outcome.content_type,
            "bytes_in": outcome.bytes_in,
            "bytes_out": outcome.bytes_out,
            "width": outcome.width,
            "height": outcome.height,
            "source_format": outcome.source_format,
            "source_quality": outcome.source_quality,
            "output_quality": outcome.output_quality,
            "duration_ms": outcome.duration_ms,
            "error_code": None,
            "error_message": None,
        },
    )
    if recorded is None:
        return False
    batch_id, count = recorded
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(
            images_done=Batch.images_done + count,
            bytes_in=Batch.bytes_in + outcome.bytes_in * count,
            bytes_out=Batch.bytes_out + outcome.bytes_out * count,
        )
    )
    return True


def record_failure(
    session: Session, image_id: int, owner: str, code: str, message: str, duration_ms: float
) -> bool:
    recorded = _record(
        session,
        image_id,
        owner,
        {
            "status": ImageStatus.FAILED,
            "error_code": code,
            "error_message": message,
            "duration_ms": duration_ms,
        },
    )
    if recorded is None:
        return False
    batch_id, count = recorded
    session.execute(
        update(Batch).where(Batch.id == batch_id).values(images_failed=Batch.images_failed + count)
    )
    return True


def link_duplicate_urls(session: Session, batch_id: uuid.UUID) -> int:
    """Point every repeat of a URL within a batch at its first occurrence, so it is fetched
    and processed once. Returns how many images are repeats."""
    first = (
        select(func.min(Image.id))
        .where(Image.batch_id == batch_id)
        .group_by(Image.url)
        .having(func.count() > 1)
    )
    primaries = select(Image.id, Image.url).where(Image.id.in_(first)).subquery()
    result = session.execute(
        update(Image)
        .where(
            Image.batch_id == batch_id,
            Image.url == primaries.c.url,
            Image.id != primaries.c.id,
        )
        .values(duplicate_of=primaries.c.id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def claim_finalization(session: Session, batch_id: uuid.UUID, lease_seconds: float) -> bool:
    """Win the right to finalise a batch whose images are all recorded; only one caller does."""
    now = utcnow()
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status.in_(ACTIVE_BATCH_STATES),
            Batch.images_done + Batch.images_failed >= Batch.images_total,
            or_(Batch.finalizer_lease_until.is_(None), Batch.finalizer_lease_until < now),
        )
        .values(finalizer_lease_until=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def batches_ready_to_finalize(session: Session) -> list[uuid.UUID]:
    """Batches whose images are all recorded but that no live finaliser holds (crash recovery)."""
    now = utcnow()
    return list(
        session.scalars(
            select(Batch.id).where(
                Batch.status.in_(ACTIVE_BATCH_STATES),
                Batch.images_done + Batch.images_failed >= Batch.images_total,
                or_(Batch.finalizer_lease_until.is_(None), Batch.finalizer_lease_until < now),
            )
        )
    )


def output_rows_page(
    session: Session, batch_id: uuid.UUID, after_row: int, page_size: int
) -> list[tuple[Product, list[Image]]]:
    """One page of products with their images in CSV order; callers page by row number so
    memory stays flat and no transaction stays open across a whole large batch."""
    products = session.scalars(
        select(Product)
        .where(Product.batch_id == batch_id, Product.row_number > after_row)
        .order_by(Product.row_number)
        .limit(page_size)
    ).all()
    if not products:
        return []
    images: dict[int, list[Image]] = {p.id: [] for p in products}
    for image in session.scalars(
        select(Image).where(Image.product_id.in_(images.keys())).order_by(Image.position)
    ):
        images[image.product_id].append(image)
    return [(product, images[product.id]) for product in products]


def complete_batch(
    session: Session,
    batch_id: uuid.UUID,
    *,
    status: BatchStatus,
    output_key: str | None,
    message: str,
    webhook_payload: dict[str, Any] | None,
) -> bool:
    """Set the final state and, in the same transaction, put the webhook in the outbox."""
    now = utcnow()
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(ACTIVE_BATCH_STATES))
        .values(status=status, output_key=output_key, message=message, finished_at=now)
        .returning(Batch.webhook_url)
    )
    row = result.one_or_none()
    if row is None:
        return False
    if row.webhook_url and webhook_payload is not None:
        # A retried batch finishes again: a new event with its own id, history kept.
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
                url=row.webhook_url,
                payload=webhook_payload,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
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


def claim_due_deliveries(
    session: Session, *, limit: int, lease_seconds: float
) -> list[WebhookDelivery]:
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
