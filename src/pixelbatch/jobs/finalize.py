"""Finish a batch exactly once: write the output CSV, set the final state, queue the webhook."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pixelbatch.catalog import CsvDialect, OutputRow, format_image_error, write_output_csv
from pixelbatch.db import batch_lifecycle
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, ImageStatus
from pixelbatch.db.output_rows import OutputImage, OutputProduct, output_rows_page
from pixelbatch.jobs.leases import heartbeat, renewal_period
from pixelbatch.runtime import Runtime
from pixelbatch.telemetry import instruments as metrics

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
CANCELLED_REASON = "CANCELLED: the batch was cancelled before this image was processed"


def output_csv_key(batch_id: uuid.UUID) -> str:
    return f"{batch_id}/output.csv"


def output_csv_url(runtime: Runtime, batch_id: uuid.UUID, base: str | None = None) -> str:
    """``base``: ``Runtime.public_base`` for the batch (and request), if known."""
    base = base or runtime.public_base(None)
    if base.startswith("file:"):  # no server: the stored file itself
        return runtime.storage.url(output_csv_key(batch_id), base)
    return f"{base}/api/batches/{batch_id}/output.csv"


def image_note(image: OutputImage) -> str | None:
    """The ``Output Notes`` entry of a done image: its original kept, or its growth."""
    if image.kept_original:
        return (
            f"image {image.position + 1}: kept the original, metadata stripped"
            f" ({image.bytes_in} -> {image.bytes_out} bytes; a re-encode was not smaller)"
        )
    if image.grew:
        return (
            f"image {image.position + 1}: grew {image.bytes_in} -> {image.bytes_out} bytes"
            " (the format or size change asked for)"
        )
    return None


def _product_row(runtime: Runtime, base: str, product: OutputProduct) -> OutputRow:
    images = product.images
    outputs: list[str | None] = []
    errors: list[str] = []
    notes: list[str] = []
    cancelled = False
    for image in images:
        if image.status == ImageStatus.DONE and image.output_key:
            outputs.append(runtime.storage.url(image.output_key, base))
            note = image_note(image)
            if note:
                notes.append(note)
        else:
            outputs.append(None)
            if image.status == ImageStatus.CANCELLED:
                cancelled = True
                reason = CANCELLED_REASON
            else:
                reason = image.error_message or image.status.value.lower()
            errors.append(format_image_error(image.position + 1, image.url, reason))
    done = sum(1 for o in outputs if o is not None)
    if done == len(outputs):
        status = "OK"
    elif cancelled:
        status = "CANCELLED"
    else:
        status = "FAILED" if done == 0 else "PARTIAL"
    return OutputRow(
        serial=product.serial,
        name=product.name,
        input_urls=[i.url for i in images],
        output_urls=outputs,
        extra=product.extra,
        status=status,
        errors=errors,
        notes=notes,
    )


def _rows(runtime: Runtime, batch_id: uuid.UUID, base: str, extra: bool) -> Iterator[OutputRow]:
    after = 0
    while True:
        with transaction(runtime.sessions) as session:
            page = output_rows_page(session, batch_id, after, PAGE_SIZE, extra=extra)
        if not page:
            return
        for product in page:
            yield _product_row(runtime, base, product)
        after = page[-1].row_number


def _urls_expire_at(runtime: Runtime, base: str) -> datetime | None:
    """When the output URLs about to be written expire, taken before the first is signed:
    each is signed at or after this second for the storage's lifetime, so all of them stay
    valid at least until the instant returned (S3 signatures have second resolution)."""
    lifetime = runtime.storage.url_lifetime(base)
    if lifetime is None:
        return None
    return datetime.fromtimestamp(int(time.time()) + lifetime, UTC)


def final_status(done: int, failed: int) -> BatchStatus:
    if failed == 0:
        return BatchStatus.COMPLETED
    return BatchStatus.FAILED if done == 0 else BatchStatus.COMPLETED_WITH_ERRORS


def finalize_batch(runtime: Runtime, batch_id: uuid.UUID) -> bool:
    """Returns True if this call finalised the batch; False if it was not ready or another
    worker holds or finished the job."""
    with transaction(runtime.sessions) as session:
        lease = runtime.settings.finalize_lease_seconds
        if not batch_lifecycle.claim_finalization(session, batch_id, lease):
            return False
        batch = session.get(Batch, batch_id)
        assert batch is not None
        cancelled = batch.status == BatchStatus.CANCELLED
        extra_columns = list(batch.extra_columns)
        dialect = CsvDialect.from_json(batch.csv_dialect)
        base = runtime.public_base(batch.public_url)

    def renew() -> None:
        with transaction(runtime.sessions) as session:
            batch_lifecycle.renew_finalization(session, batch_id, lease)

    # The finaliser's lease is short, so a dead finaliser's batch is taken over within
    # seconds; a heartbeat keeps it while a large batch's CSV is written.
    with heartbeat(renewal_period(lease), renew, f"pixelbatch-finalize-{batch_id}"):
        return _write_and_complete(runtime, batch_id, cancelled, extra_columns, dialect, base)


def _write_and_complete(
    runtime: Runtime,
    batch_id: uuid.UUID,
    cancelled: bool,
    extra_columns: list[str],
    dialect: CsvDialect,
    base: str,
) -> bool:
    """Write the output CSV to storage, then set the final state and queue the webhook."""
    key = output_csv_key(batch_id)
    expire_at = _urls_expire_at(runtime, base)
    tmp_dir = runtime.settings.data_dir if runtime.settings.is_embedded else None
    fd, name = tempfile.mkstemp(suffix=".csv", dir=tmp_dir)
    tmp_path = Path(name)
    with open(fd, "w", encoding="utf-8", newline="") as fh:
        write_output_csv(
            fh, extra_columns, _rows(runtime, batch_id, base, bool(extra_columns)), dialect
        )
    try:
        with tmp_path.open("rb") as csv_file:
            runtime.storage.put_file(key, csv_file, "text/csv")
    finally:
        tmp_path.unlink(missing_ok=True)
    with transaction(runtime.sessions) as session:
        batch = session.get(Batch, batch_id)
        if batch is None:  # deleted while this finaliser ran: leave nothing behind
            runtime.storage.delete(key)
            return False
        status = (
            BatchStatus.CANCELLED
            if cancelled
            else final_status(batch.images_done, batch.images_failed)
        )
        message = _message(batch, cancelled)
        payload = {
            "request_id": str(batch_id),
            "status": status.value,
            "output_csv": output_csv_url(runtime, batch_id, base),
            "counts": {
                "products": batch.products_total,
                "images_total": batch.images_total,
                "images_done": batch.images_done,
                "images_failed": batch.images_failed,
                "images_kept_original": batch.images_kept_original,
                "images_grew": batch.images_grew,
            },
            "message": message,
        }
        finished = batch_lifecycle.complete_batch(
            session,
            batch_id,
            status=status,
            output_key=key,
            message=message,
            webhook_payload=payload,
            output_urls_expire_at=expire_at,
        )
        if not finished:  # cancelled while this finaliser ran: the next pass finalises it
            batch_lifecycle.release_finalization(session, batch_id)
    if finished:
        metrics.batch_finished(status.value)
        log.info(
            "batch %s finished: %s (%s)",
            batch_id,
            status.value,
            message,
            extra={
                "event": {
                    "event": "batch_finished",
                    "batch_id": str(batch_id),
                    "status": status.value,
                    "counts": payload["counts"],
                }
            },
        )
    return finished


def _message(batch: Batch, cancelled: bool) -> str:
    message = f"{batch.images_done} of {batch.images_total} images processed" + (
        f", {batch.images_failed} failed" if batch.images_failed else ""
    )
    if not cancelled:
        return message
    left = batch.images_total - batch.images_done - batch.images_failed
    return f"cancelled by client: {message}, {left} cancelled"


def finalize_ready_batches(runtime: Runtime, only: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Finalise every ready batch that no live finaliser holds: the recovery path when a
    worker died between its last image and the output CSV, and for a cancelled batch whose
    finalisation at cancel time did not happen (the API process died, or lost a race)."""
    with transaction(runtime.sessions) as session:
        ready = batch_lifecycle.batches_ready_to_finalize(session)
    return [
        batch_id
        for batch_id in ready
        if (only is None or batch_id == only) and finalize_batch(runtime, batch_id)
    ]
