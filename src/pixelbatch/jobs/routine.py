"""The one routine that processes images: fetch, transform, store, record.

Both dispatchers (the embedded worker pool and Celery) call ``handle_image`` or
``process_chunk``; they differ only in where images come from and where transforms run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import images
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch
from pixelbatch.errors import PixelbatchError
from pixelbatch.fetch import Fetcher
from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.jobs.transform_pool import TransformRunner
from pixelbatch.runtime import Runtime
from pixelbatch.storage import Storage
from pixelbatch.transform import TransformOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    image_id: int
    batch_id: uuid.UUID
    success: images.ImageSuccess | None = None
    error_code: str | None = None
    error_message: str | None = None
    duration_ms: float = 0.0


def output_key(batch_id: uuid.UUID, row_number: int, position: int, extension: str) -> str:
    """Deterministic, so a re-run overwrites; under the batch's random id, so not guessable."""
    return f"{batch_id}/{row_number:07d}-{position + 1:02d}.{extension}"


def produce(
    item: images.ClaimedImage, fetcher: Fetcher, storage: Storage, runner: TransformRunner
) -> Outcome:
    """Fetch, transform and store one image. Never raises: every failure becomes an Outcome.

    It touches no database, so it can run wherever the fetcher, storage and runner work."""
    started = time.monotonic()

    def elapsed() -> float:
        return (time.monotonic() - started) * 1000

    try:
        options = TransformOptions.model_validate(item.options)
        fetched = fetcher.fetch(item.url)
        result = runner(fetched.data, options)
        key = output_key(item.batch_id, item.row_number, item.position, result.extension)
        storage.put(key, result.data, result.content_type)
    except PixelbatchError as exc:
        return Outcome(item.id, item.batch_id, None, exc.code, exc.message, elapsed())
    except Exception:
        log.exception("unexpected error processing image %s (%s)", item.id, item.url)
        return Outcome(
            item.id,
            item.batch_id,
            None,
            "internal_error",
            "internal error processing image",
            elapsed(),
        )
    success = images.ImageSuccess(
        output_key=key,
        content_type=result.content_type,
        bytes_in=len(fetched.data),
        bytes_out=len(result.data),
        width=result.width,
        height=result.height,
        source_format=result.source_format,
        source_quality=result.source_quality,
        output_quality=result.output_quality,
        duration_ms=elapsed(),
    )
    return Outcome(item.id, item.batch_id, success, duration_ms=success.duration_ms)


def record(sessions: sessionmaker[Session], outcome: Outcome, owner: str) -> bool:
    """Record the outcome once; returns True when this recording completed its batch."""
    with transaction(sessions) as session:
        if outcome.success is not None:
            recorded = images.record_success(session, outcome.image_id, owner, outcome.success)
        else:
            recorded = images.record_failure(
                session,
                outcome.image_id,
                owner,
                outcome.error_code or "error",
                outcome.error_message or "failed",
                outcome.duration_ms,
            )
        if not recorded:
            log.info("image %s was already recorded by another worker", outcome.image_id)
            return False
        batch = session.get(Batch, outcome.batch_id)
        return batch is not None and batch.images_done + batch.images_failed >= batch.images_total


def handle_image(
    runtime: Runtime, item: images.ClaimedImage, owner: str, runner: TransformRunner
) -> bool:
    """Process one leased image; returns True if it was its batch's last and this call
    finalised the batch."""
    outcome = produce(item, runtime.fetcher, runtime.storage, runner)
    return record(runtime.sessions, outcome, owner) and finalize_batch(runtime, item.batch_id)


def process_chunk(
    runtime: Runtime,
    items: Sequence[images.ClaimedImage],
    owner: str,
    runner: TransformRunner,
    threads: int,
    on_done: Callable[[int], None] | None = None,
) -> int:
    """Process a chunk with its downloads overlapped: while one image decodes, others fetch.
    Returns how many batches this chunk finalised."""

    def one(item: images.ClaimedImage) -> bool:
        try:
            return handle_image(runtime, item, owner, runner)
        finally:
            if on_done is not None:
                on_done(item.id)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        return sum(pool.map(one, items))
