"""Batch services: the calls that the API, the CLI and the UI are thin faces over.

Services take a ``Runtime`` and do their own short transactions; none of them knows HTTP.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from pixelbatch.db import batch_lifecycle, batch_reads
from pixelbatch.db.batch_reads import ErrorCount, ImageRow
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import Batch, BatchStatus, ImageStatus, Priority, WebhookDelivery
from pixelbatch.errors import Conflict, NotFound
from pixelbatch.jobs.dispatch import Dispatcher
from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.jobs.removal import remove_batch
from pixelbatch.runtime import Runtime

log = logging.getLogger(__name__)


def find_by_idempotency_key(runtime: Runtime, tenant: str, key: str) -> Batch | None:
    with reading(runtime.sessions) as session:
        return batch_reads.batch_by_idempotency_key(session, tenant, key)


def _owned(session: Session, batch_id: uuid.UUID, tenant: str) -> Batch:
    batch = batch_reads.tenant_batch(session, batch_id, tenant)
    if batch is None:
        raise NotFound(f"no batch with request id {batch_id}")
    return batch


def get_batch(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> Batch:
    with reading(runtime.sessions) as session:
        return _owned(session, batch_id, tenant)


@dataclass(frozen=True)
class BatchDetail:
    batch: Batch
    errors: list[ErrorCount]
    webhook: WebhookDelivery | None


def batch_detail(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> BatchDetail:
    with reading(runtime.sessions) as session:
        batch = _owned(session, batch_id, tenant)
        errors = batch_reads.error_summary(session, batch_id) if batch.images_failed else []
        # Deliveries exist only for a batch uploaded with a webhook (``complete_batch``): one
        # query fewer on every status poll of the others.
        webhook = batch_reads.latest_delivery(session, batch_id) if batch.webhook_url else None
    return BatchDetail(batch=batch, errors=errors, webhook=webhook)


class Page(BaseModel):
    """Which slice of a list to return. Each list bounds its own page size, so that one
    request cannot read a whole table; the API reads these models as query parameters."""

    model_config = ConfigDict(frozen=True)

    # Bounded so that a huge offset is a 422 naming it, not an integer the database
    # cannot bind (SQLite: 64 bits); no list is anywhere near this long.
    offset: int = Field(0, ge=0, le=2**31 - 1)


class BatchQuery(Page):
    limit: int = Field(50, ge=1, le=500)
    status: BatchStatus | None = None
    priority: Priority | None = None


class ImageQuery(Page):
    limit: int = Field(100, ge=1, le=1000)
    status: ImageStatus | None = None


def list_batches(runtime: Runtime, query: BatchQuery, *, tenant: str) -> tuple[list[Batch], int]:
    with reading(runtime.sessions) as session:
        return batch_reads.batches_page(
            session,
            tenant,
            offset=query.offset,
            limit=query.limit,
            status=query.status,
            priority=query.priority,
        )


def list_images(
    runtime: Runtime, batch_id: uuid.UUID, query: ImageQuery, *, tenant: str
) -> tuple[Batch, list[ImageRow], int]:
    """The batch, one page of its images and how many match, from one snapshot."""
    with reading(runtime.sessions) as session:
        batch = _owned(session, batch_id, tenant)
        rows, total = batch_reads.images_page(
            session, batch, offset=query.offset, limit=query.limit, status=query.status
        )
    return batch, rows, total


def cancel_batch(
    runtime: Runtime,
    batch_id: uuid.UUID,
    *,
    tenant: str,
    dispatcher: Dispatcher | None = None,
) -> Batch:
    """Cancel, then finalise at once: the output CSV (done images with their URLs, the rest
    ``CANCELLED``) and the ``CANCELLED`` webhook. Images in flight are abandoned at their next
    stage boundary (``dispatcher`` is told) and can no longer be recorded, so the CSV is
    final. Should this finaliser lose the race or fail, the workers' recovery pass
    (``finalize_ready_batches``) does it."""
    with transaction(runtime.sessions) as session:
        _owned(session, batch_id, tenant)
        if not batch_lifecycle.cancel_batch(session, batch_id):
            raise Conflict("only a pending or processing batch can be cancelled")
    if dispatcher is not None:
        dispatcher.stopped(batch_id)
    log.info(
        "batch %s cancelled",
        batch_id,
        extra={"event": {"event": "batch_cancelled", "batch_id": str(batch_id)}},
    )
    try:
        finalize_batch(runtime, batch_id)
    except Exception:
        log.exception("could not finalise cancelled batch %s; the sweeper will", batch_id)
    return get_batch(runtime, batch_id, tenant=tenant)


def delete_batch(
    runtime: Runtime,
    batch_id: uuid.UUID,
    *,
    tenant: str | None,
    dispatcher: Dispatcher | None = None,
) -> int:
    """Delete a batch, its rows and its stored files, cancelling it first if it runs;
    returns how many stored objects went. ``tenant`` None is the operator (the CLI): any
    batch. Afterwards the id answers ``NotFound`` like one that never existed."""
    with reading(runtime.sessions) as session:
        if tenant is None:
            if session.get(Batch, batch_id) is None:
                raise NotFound(f"no batch with request id {batch_id}")
        else:
            _owned(session, batch_id, tenant)
    return remove_batch(runtime, batch_id, dispatcher)


def retry_failed(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> tuple[Batch, int]:
    with transaction(runtime.sessions) as session:
        _owned(session, batch_id, tenant)
        count = batch_lifecycle.retry_failed_images(session, batch_id)
        if not count:
            raise Conflict("the batch has no failed images to retry (or has not finished yet)")
    return get_batch(runtime, batch_id, tenant=tenant), count


def owns_batch(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> bool:
    try:
        get_batch(runtime, batch_id, tenant=tenant)
    except NotFound:
        return False
    return True


def output_csv_key_for(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> str:
    batch = get_batch(runtime, batch_id, tenant=tenant)
    if batch.output_key is None:
        raise Conflict(
            f"the output CSV is not ready: batch is {batch.status.value}",
            code="output_not_ready",
        )
    return batch.output_key
