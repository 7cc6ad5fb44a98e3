"""Batch services: the calls that the API, the CLI and the UI are thin faces over.

Services take a ``Runtime`` and do their own short transactions; none of them knows HTTP.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pixelbatch.auth.keys import ANONYMOUS, Principal
from pixelbatch.catalog import CatalogReader, CsvLimits
from pixelbatch.db import batch_lifecycle, batch_reads, bulk, images
from pixelbatch.db.batch_reads import ErrorCount, ImageRow
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import Batch, BatchStatus, ImageStatus, WebhookDelivery
from pixelbatch.errors import Conflict, NotFound
from pixelbatch.fetch import parse_http_url
from pixelbatch.fetch.urls import normalize_http_url
from pixelbatch.runtime import Runtime
from pixelbatch.transform import TransformOptions

# Rows per insert_products call: large enough that per-statement costs vanish, small enough
# that the slice waiting to be written stays a few MB whatever the catalog's size.
INSERT_SLICE = 5000


def input_csv_key(batch_id: uuid.UUID) -> str:
    return f"{batch_id}/input.csv"


def validate_url(runtime: Runtime, url: str) -> str:
    return str(parse_http_url(url, max_length=runtime.settings.max_url_length))


def submit_batch(
    runtime: Runtime,
    source: IO[bytes],
    *,
    filename: str,
    options: TransformOptions,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    principal: Principal = ANONYMOUS,
) -> tuple[Batch, bool]:
    """Validate and store a catalog as a new batch, all or nothing.

    Returns the batch and whether it was created now (False: the idempotency key named an
    earlier one). The batch is committed before this returns, so it can never be lost.
    """
    if idempotency_key:
        existing = find_by_idempotency_key(runtime, principal.tenant, idempotency_key)
        if existing is not None:
            return existing, False
    if webhook_url:
        webhook_url = validate_url(runtime, webhook_url)
    limits = CsvLimits.from_settings(runtime.settings)
    batch_id = uuid.uuid4()
    try:
        with transaction(runtime.sessions) as session:
            reader = CatalogReader(
                source,
                limits,
                functools.partial(normalize_http_url, max_length=runtime.settings.max_url_length),
            )
            batch = Batch(
                id=batch_id,
                status=BatchStatus.PENDING,
                tenant=principal.tenant,
                api_key_id=principal.key_id,
                idempotency_key=idempotency_key or None,
                input_filename=Path(filename or "upload.csv").name[:255],
                input_key=input_csv_key(batch_id),
                webhook_url=webhook_url,
                options=options.model_dump(mode="json"),
                extra_columns=list(reader.extra_columns),
            )
            session.add(batch)
            session.flush()
            products = 0
            image_count = 0
            for pending in _product_slices(reader, INSERT_SLICE):
                image_count += bulk.insert_products(session, batch_id, pending)
                products += len(pending)
            batch.products_total = products
            batch.images_total = image_count
            images.link_duplicate_urls(session, batch_id)
            _keep_input(runtime, source, batch_id)
    except IntegrityError:
        if idempotency_key:
            existing = find_by_idempotency_key(runtime, principal.tenant, idempotency_key)
            if existing is not None:
                return existing, False
        raise
    return batch, True


def _product_slices(reader: CatalogReader, size: int) -> Iterator[list[bulk.NewProduct]]:
    """The catalog's valid rows in slices of ``size``; the reader raises at the end if the
    file is rejected, so a caller that stops at that exception rolls every slice back."""
    pending: list[bulk.NewProduct] = []
    for row in reader:
        pending.append(bulk.NewProduct(row.row, row.serial, row.name, list(row.extra), row.urls))
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending


def _keep_input(runtime: Runtime, source: IO[bytes], batch_id: uuid.UUID) -> None:
    """Keep the uploaded CSV beside the outputs for audit and re-runs."""
    source.seek(0)
    runtime.storage.put_file(input_csv_key(batch_id), source, "text/csv")


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
        webhook = batch_reads.latest_delivery(session, batch_id)
    return BatchDetail(batch=batch, errors=errors, webhook=webhook)


def list_batches(
    runtime: Runtime,
    *,
    tenant: str,
    offset: int,
    limit: int,
    status: BatchStatus | None = None,
) -> tuple[list[Batch], int]:
    with reading(runtime.sessions) as session:
        return batch_reads.batches_page(session, tenant, offset=offset, limit=limit, status=status)


def list_images(
    runtime: Runtime,
    batch_id: uuid.UUID,
    *,
    tenant: str,
    offset: int,
    limit: int,
    status: ImageStatus | None = None,
) -> tuple[list[ImageRow], int]:
    with reading(runtime.sessions) as session:
        _owned(session, batch_id, tenant)
        return batch_reads.images_page(session, batch_id, offset=offset, limit=limit, status=status)


def cancel_batch(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> Batch:
    with transaction(runtime.sessions) as session:
        _owned(session, batch_id, tenant)
        if not batch_lifecycle.cancel_batch(session, batch_id):
            raise Conflict("only a pending or processing batch can be cancelled")
    return get_batch(runtime, batch_id, tenant=tenant)


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
