"""What a client may read about its batches: lookups scoped to a tenant, pages, summaries.

Nothing here writes; the services in ``pixelbatch.batches`` open the session and turn a
missing row into NotFound.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from pixelbatch.db.models import (
    Batch,
    BatchStatus,
    Image,
    ImageStatus,
    Priority,
    Product,
    WebhookDelivery,
)

# The error summary shows the commonest codes; a batch rarely has more than a handful.
ERROR_CODES_SHOWN = 20


@dataclass(frozen=True)
class ErrorCount:
    code: str
    count: int
    example: str


@dataclass(frozen=True)
class ImageRow:
    image: Image
    row_number: int
    serial: str
    product_name: str


# Built once: a status poll, the API's commonest request, runs these two. Building a
# statement per call (coercing each clause, then keying the compiled-SQL cache on it) cost
# more than running it on SQLite.
_BATCH_BY_ID = select(Batch).where(Batch.id == bindparam("batch_id"))
_ERROR_SUMMARY = (
    select(Image.error_code, func.count(), func.min(Image.error_message))
    .where(Image.batch_id == bindparam("batch_id"), Image.status == ImageStatus.FAILED)
    .group_by(Image.error_code)
    .order_by(func.count().desc())
    .limit(ERROR_CODES_SHOWN)
)


def batch_by_idempotency_key(session: Session, tenant: str, key: str) -> Batch | None:
    return session.scalar(select(Batch).where(Batch.tenant == tenant, Batch.idempotency_key == key))


def tenant_batch(session: Session, batch_id: uuid.UUID, tenant: str) -> Batch | None:
    """The batch if this tenant owns it. Another tenant's batch answers exactly like an
    unknown id, so ids cannot be probed."""
    batch = session.execute(_BATCH_BY_ID, {"batch_id": batch_id}).scalar_one_or_none()
    if batch is None or batch.tenant != tenant:
        return None
    return batch


def error_summary(session: Session, batch_id: uuid.UUID) -> list[ErrorCount]:
    """The batch's failed images grouped by error code, commonest first, each with one
    example message."""
    rows = session.execute(_ERROR_SUMMARY, {"batch_id": batch_id}).all()
    return [ErrorCount(code or "error", n, example or "") for code, n, example in rows]


def latest_delivery(session: Session, batch_id: uuid.UUID) -> WebhookDelivery | None:
    """The batch's most recent webhook event (a retried batch has one per finish)."""
    return session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.batch_id == batch_id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(1)
    )


def batches_page(
    session: Session,
    tenant: str,
    *,
    offset: int,
    limit: int,
    status: BatchStatus | None,
    priority: Priority | None = None,
) -> tuple[list[Batch], int]:
    """One page of a tenant's batches, newest first, and how many there are in all."""
    query = select(Batch).where(Batch.tenant == tenant)
    count = select(func.count()).select_from(Batch).where(Batch.tenant == tenant)
    if status is not None:
        query = query.where(Batch.status == status)
        count = count.where(Batch.status == status)
    if priority is not None:
        query = query.where(Batch.priority == priority)
        count = count.where(Batch.priority == priority)
    total = session.scalar(count) or 0
    batches = session.scalars(query.order_by(Batch.created_at.desc()).offset(offset).limit(limit))
    return list(batches), total


def images_page(
    session: Session, batch_id: uuid.UUID, *, offset: int, limit: int, status: ImageStatus | None
) -> tuple[list[ImageRow], int]:
    """One page of a batch's images in CSV order, and how many there are in all."""
    query = (
        select(Image, Product.row_number, Product.serial, Product.name)
        .join(Product, Product.id == Image.product_id)
        .where(Image.batch_id == batch_id)
    )
    count = select(func.count()).select_from(Image).where(Image.batch_id == batch_id)
    if status is not None:
        query = query.where(Image.status == status)
        count = count.where(Image.status == status)
    total = session.scalar(count) or 0
    rows = session.execute(
        query.order_by(Product.row_number, Image.position).offset(offset).limit(limit)
    ).all()
    return [ImageRow(*row) for row in rows], total


def batch_image(session: Session, batch_id: uuid.UUID, image_id: int) -> Image | None:
    """One image of one batch: an id of another batch's image answers None, like a missing
    one, so a tenant checked on the batch cannot reach past it."""
    image = session.get(Image, image_id)
    if image is None or image.batch_id != batch_id:
        return None
    return image
