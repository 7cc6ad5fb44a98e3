"""Work entering the system: uploads and retries, validated and committed, then the doorbell.

The API, the CLI and the web UI all call these, so a rate limit, a default or a check
added here holds for every face at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from pixelbatch import batches
from pixelbatch.auth.keys import ANONYMOUS, Principal
from pixelbatch.catalog import CatalogReader, CsvLimits
from pixelbatch.db import bulk, images
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, Priority
from pixelbatch.db.planner import analyze_after_bulk_load
from pixelbatch.errors import FetchError, InvalidInput, PixelbatchError
from pixelbatch.fetch import effective_port, parse_http_url
from pixelbatch.fetch.urls import normalize_http_url
from pixelbatch.jobs.dispatch import Dispatcher
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import OutputFormat, TransformOptions

log = logging.getLogger(__name__)

# Rows per insert_products call: large enough that per-statement costs vanish, small enough
# that the slice waiting to be written stays a few MB whatever the catalog's size.
INSERT_SLICE = 5000


def input_csv_key(batch_id: uuid.UUID) -> str:
    return f"{batch_id}/input.csv"


def validate_url(runtime: Runtime, url: str, *, field: str = "webhook_url") -> str:
    """A URL pixelbatch will call (``field`` names it in the error), normalised.

    Besides its syntax, the fetch address policy refuses what it can before any name is
    resolved: a literal loopback, private or link-local address, or a port, not on
    ``PIXELBATCH_FETCH_ALLOW``. Such a URL could never be reached, so it is refused now
    rather than accepted and retried for an hour. Names are checked when connecting.
    """
    try:
        parsed = parse_http_url(url, max_length=runtime.settings.max_url_length)
        host = parsed.raw_host.decode("ascii")
        runtime.fetcher.policy.check_target(host, effective_port(parsed))
    except (InvalidInput, FetchError) as exc:
        raise InvalidInput(
            f"{field}: {exc.message}",
            code=f"invalid_{field}",
            details={"field": field, **(exc.details or {})},
        ) from None
    return str(parsed)


def processing_options(
    settings: Settings,
    *,
    quality: int | None = None,
    relative_quality: float | None = None,
    output_format: OutputFormat = OutputFormat.KEEP,
    max_width: int | None = None,
    max_height: int | None = None,
    keep_metadata: bool = False,
) -> TransformOptions:
    """The options a client asked for, with the deployment's defaults for the rest.

    ``quality`` (absolute) and ``relative_quality`` both say how hard to compress; a request
    that gives both is ambiguous and refused rather than one silently winning.
    """
    if quality is not None and relative_quality is not None:
        raise InvalidInput(
            "quality and relative_quality are exclusive: give an absolute quality or a"
            " fraction of the source's quality, not both",
            code="conflicting_options",
            status_code=422,
            details={"fields": ["quality", "relative_quality"]},
        )
    try:
        return TransformOptions(
            quality=quality,
            relative_quality=relative_quality or settings.default_relative_quality,
            output_format=output_format,
            max_width=max_width,
            max_height=max_height,
            keep_metadata=keep_metadata,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid processing options: {exc.errors()[0]['msg']}") from None


class PriorityNotAllowed(PixelbatchError):
    """The caller's API key may not ask for this priority (``keys create --max-priority``)."""

    code = "priority_not_allowed"
    status_code = 403


def allowed_priority(principal: Principal, priority: Priority) -> Priority:
    """``priority`` if the caller's key may ask for it; refused (403) above the key's cap.
    Checked in the one submission path, so the API, the UI and the CLI agree."""
    cap = principal.max_priority
    if cap is not None and priority.rank > cap.rank:
        raise PriorityNotAllowed(
            f"priority: this API key may ask for at most {cap.value!r}, not {priority.value!r}",
            details={"field": "priority", "max_priority": cap.value},
        )
    return priority


def upload(
    runtime: Runtime,
    dispatcher: Dispatcher | None,
    source: IO[bytes],
    *,
    filename: str,
    options: TransformOptions,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    principal: Principal = ANONYMOUS,
    public_url: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> tuple[Batch, bool]:
    """Validate and store a catalog as a new batch, all or nothing, then ring the doorbell.

    Returns the batch and whether it was created now (False: the idempotency key named an
    earlier one). Uploads with an API key count against that key's rate limit. The batch is
    committed before the dispatcher (if any) hears of it, so it can never be lost and a
    message never names work that is not there. ``public_url``: the base URL the upload
    reached the API through, recorded as the base of the batch's URLs. ``priority``: how
    soon its images are leased, within the caller's key's cap.
    """
    allowed_priority(principal, priority)
    if principal.key_id is not None:
        runtime.rate_limiter.hit(str(principal.key_id))
    if webhook_url:
        webhook_url = validate_url(runtime, webhook_url)
    fingerprint = None
    if idempotency_key:
        fingerprint = request_fingerprint(source, options, webhook_url, priority)
    earlier = _earlier_batch(runtime, principal, idempotency_key, fingerprint)
    if earlier is not None:
        return earlier, False
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
                request_fingerprint=fingerprint,
                input_filename=Path(filename or "upload.csv").name[:255],
                input_key=input_csv_key(batch_id),
                webhook_url=webhook_url,
                priority=priority,
                options=options.model_dump(mode="json"),
                extra_columns=list(reader.extra_columns),
                csv_dialect=reader.dialect.to_json(),
                public_url=public_url,
            )
            session.add(batch)
            session.flush()
            products = 0
            image_count = 0
            # Closed on the way out, error or not: its thread stops before the upload ends.
            with contextlib.closing(_read_ahead(_product_slices(reader, INSERT_SLICE))) as slices:
                for pending in slices:
                    image_count += bulk.insert_products(session, batch_id, pending)
                    products += len(pending)
            batch.products_total = products
            batch.images_total = image_count
            images.link_duplicate_urls(session, batch_id)
            _keep_input(runtime, source, batch_id)
    except IntegrityError:
        # A concurrent upload with the same idempotency key committed first: name its batch.
        earlier = _earlier_batch(runtime, principal, idempotency_key, fingerprint)
        if earlier is None:
            raise
        return earlier, False
    log.info(
        "batch %s accepted: %d products, %d images",
        batch.id,
        batch.products_total,
        batch.images_total,
        extra={
            "event": {
                "event": "batch_accepted",
                "batch_id": str(batch.id),
                "products": batch.products_total,
                "images": batch.images_total,
            }
        },
    )
    analyze_after_bulk_load(runtime.engine, batch.images_total)
    if dispatcher is not None:
        dispatcher.new_work(batch.images_total)
    return batch, True


def request_fingerprint(
    source: IO[bytes],
    options: TransformOptions,
    webhook_url: str | None,
    priority: Priority = Priority.NORMAL,
) -> str:
    """SHA-256 of everything an upload asks for: the file's bytes, the options in effect,
    the webhook and the priority. Two requests with one idempotency key must have the same
    one. A ``normal`` priority adds nothing, so fingerprints stored before priorities
    existed still match their retries."""
    file_digest = hashlib.sha256()
    source.seek(0)
    for chunk in iter(functools.partial(source.read, 1 << 16), b""):
        file_digest.update(chunk)
    source.seek(0)
    asked: list[object] = [file_digest.hexdigest(), options.model_dump(mode="json"), webhook_url]
    if priority != Priority.NORMAL:
        asked.append(priority.value)
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _earlier_batch(
    runtime: Runtime,
    principal: Principal,
    idempotency_key: str | None,
    fingerprint: str | None,
) -> Batch | None:
    """The batch an earlier request with this key made, if any; refused when that request
    asked for something else (a batch stored before fingerprints existed is trusted)."""
    if not idempotency_key:
        return None
    earlier = batches.find_by_idempotency_key(runtime, principal.tenant, idempotency_key)
    if earlier is None or earlier.request_fingerprint in (None, fingerprint):
        return earlier
    raise InvalidInput(
        f"idempotency key {idempotency_key!r} was already used for a different request"
        f" (batch {earlier.id}): a retry must send the same file, options and webhook_url;"
        " use a new key for a new request",
        code="idempotency_key_reused",
        status_code=422,
        details={"request_id": str(earlier.id)},
    )


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


def _read_ahead(
    slices: Iterator[list[bulk.NewProduct]],
) -> Generator[list[bulk.NewProduct], None, None]:
    """The next slice is parsed on a thread of its own while the caller writes this one.

    Writing a slice is mostly the database's work (each row goes to the table, its indexes
    and the WAL), so parsing the next one meanwhile takes the CSV reader's seconds off a
    large upload's time to ``202``. One slice ahead at most, so memory stays flat; leaving
    (done, or on an error) waits for the thread, so nothing reads the upload after this
    returns.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="pixelbatch-csv") as ahead:
        upcoming = ahead.submit(next, slices, None)
        while (current := upcoming.result()) is not None:
            upcoming = ahead.submit(next, slices, None)
            yield current


def _keep_input(runtime: Runtime, source: IO[bytes], batch_id: uuid.UUID) -> None:
    """Keep the uploaded CSV beside the outputs for audit and re-runs."""
    source.seek(0)
    runtime.storage.put_file(input_csv_key(batch_id), source, "text/csv")


def retry_failed(
    runtime: Runtime, dispatcher: Dispatcher, batch_id: uuid.UUID, *, tenant: str
) -> tuple[Batch, int]:
    """Queue a finished batch's failed images again; returns the batch and how many."""
    batch, count = batches.retry_failed(runtime, batch_id, tenant=tenant)
    log.info(
        "batch %s: %d failed images queued again",
        batch_id,
        count,
        extra={"event": {"event": "batch_retried", "batch_id": str(batch_id), "images": count}},
    )
    dispatcher.new_work(count)
    return batch, count
