"""The one routine that processes images: fetch, transform, store, record.

Both dispatchers (the embedded worker pool and Celery) call ``handle_image`` or
``process_chunk``; they differ only in where images come from and where transforms run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace

from sqlalchemy.exc import SQLAlchemyError

from pixelbatch.db import images
from pixelbatch.db.engine import reading
from pixelbatch.errors import PixelbatchError
from pixelbatch.fetch import Fetcher
from pixelbatch.fetch.urls import loggable_url
from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.jobs.recording import Outcome, record, record_group
from pixelbatch.jobs.transform_pool import TransformRunner
from pixelbatch.runtime import Runtime
from pixelbatch.storage import Storage
from pixelbatch.telemetry import instruments as metrics
from pixelbatch.transform import TransformOptions

log = logging.getLogger(__name__)


def output_key(batch_id: uuid.UUID, row_number: int, position: int, extension: str) -> str:
    """Deterministic, so a re-run overwrites; under the batch's random id, so not guessable."""
    return f"{batch_id}/{row_number:07d}-{position + 1:02d}.{extension}"


def _always_wanted() -> bool:
    return True


class _Abandoned(Exception):
    """Raised at a stage boundary when the image is no longer wanted."""


def produce(
    item: images.ClaimedImage,
    fetcher: Fetcher,
    storage: Storage,
    runner: TransformRunner,
    wanted: Callable[[], bool] = _always_wanted,
) -> Outcome:
    """Fetch, transform and store one image. Never raises: every failure becomes an Outcome.

    ``wanted`` is asked at each stage boundary (before the download, after it, after the
    transform, which is just before the store); once it answers False the image is abandoned:
    nothing more is fetched, transformed or stored, and the Outcome says ``abandoned``. It
    touches no database itself, so it can run wherever the fetcher, storage and runner work."""
    started = time.monotonic()
    stages: dict[str, float] = {}
    if item.queued_at is not None and item.claimed_at is not None:
        stages["queue"] = (item.claimed_at - item.queued_at).total_seconds()
    stage = "download"
    mark = started

    def timed(name: str) -> None:
        """Close the running stage and start ``name``."""
        nonlocal stage, mark
        now = time.monotonic()
        stages[stage] = now - mark
        stage, mark = name, now

    def boundary() -> None:
        if not wanted():
            raise _Abandoned

    def elapsed() -> float:
        return (time.monotonic() - started) * 1000

    def outcome(
        success: images.ImageSuccess | None, code: str | None = None, message: str | None = None
    ) -> Outcome:
        duration = success.duration_ms if success is not None else elapsed()
        return Outcome(
            item.id,
            item.batch_id,
            success,
            code,
            message,
            duration,
            row_number=item.row_number,
            position=item.position,
            url=item.url,
            stages=stages,
            failed_stage=None if success is not None else stage,
            has_copies=item.has_copies,
        )

    try:
        options = TransformOptions.model_validate(item.options)
        boundary()
        fetched = fetcher.fetch(item.url)
        boundary()
        timed("transform")
        result = runner(fetched.data, options)
        key = output_key(item.batch_id, item.row_number, item.position, result.extension)
        boundary()
        timed("store")
        storage.put(key, result.data, result.content_type)
        stages["store"] = time.monotonic() - mark
    except _Abandoned:
        return replace(outcome(None, "abandoned", "abandoned: no longer wanted"), abandoned=True)
    except PixelbatchError as exc:
        stages[stage] = time.monotonic() - mark  # the failed stage took time too
        return outcome(None, exc.code, exc.message)
    except Exception:
        log.exception("unexpected error processing image %s (%s)", item.id, loggable_url(item.url))
        stages[stage] = time.monotonic() - mark
        return outcome(None, "internal_error", "internal error processing image")
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
        kept_original=result.kept_original,
    )
    return outcome(success)


def produce_image(
    runtime: Runtime,
    item: images.ClaimedImage,
    owner: str,
    runner: TransformRunner,
    still_wanted: Callable[[int], bool] | None = None,
) -> Outcome:
    """``produce`` with this process's fetcher and storage, counted as busy meanwhile.
    ``still_wanted(image_id)`` answers at each stage boundary (the dispatchers pass their
    ``LeaseKeeper.wanted``, one query for all their images); without it each boundary asks
    the database about this image."""

    def wanted() -> bool:
        if still_wanted is not None:
            return still_wanted(item.id)
        try:
            with reading(runtime.sessions) as session:
                return images.still_held(session, item.id, owner)
        except SQLAlchemyError:  # the database decides at record time; keep working
            log.warning("could not check image %s is still wanted", item.id, exc_info=True)
            return True

    metrics.busy(1)
    try:
        return produce(item, runtime.fetcher, runtime.storage, runner, wanted)
    finally:
        metrics.busy(-1)


def handle_image(
    runtime: Runtime,
    item: images.ClaimedImage,
    owner: str,
    runner: TransformRunner,
    still_wanted: Callable[[int], bool] | None = None,
) -> bool:
    """Process one leased image and record it on its own; returns True if it was its batch's
    last and this call finalised the batch (``produce_image`` for ``still_wanted``)."""
    outcome = produce_image(runtime, item, owner, runner, still_wanted)
    settings = runtime.settings
    return record(
        runtime.sessions, outcome, owner, runtime.storage, settings.host_classes
    ) and finalize_batch(runtime, item.batch_id)


def process_chunk(
    runtime: Runtime,
    items: Sequence[images.ClaimedImage],
    owner: str,
    runner: TransformRunner,
    threads: int,
    on_done: Callable[[int], None] | None = None,
    still_wanted: Callable[[int], bool] | None = None,
) -> int:
    """Process a chunk with its downloads overlapped: while one image decodes, others fetch.
    This thread records what has finished, together (``record_group``: one transaction for
    the images that finished while the last group was being recorded), and finalises the
    batches that completes. Returns how many batches this chunk finalised.

    A recording that fails does not stop the others: the chunk goes on and raises the first
    error at its end, and the caller hands back every image not recorded."""
    host_classes = runtime.settings.host_classes
    finalised = 0
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        pending = {
            pool.submit(produce_image, runtime, item, owner, runner, still_wanted) for item in items
        }
        first_error: Exception | None = None
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                outcomes = [future.result() for future in done]
                recorded = record_group(
                    runtime.sessions, outcomes, owner, runtime.storage, host_classes
                )
                if on_done is not None:
                    for outcome in outcomes:
                        on_done(outcome.image_id)
                first_error = first_error or recorded.error
                finalised += sum(
                    finalize_batch(runtime, batch_id) for batch_id in recorded.completed
                )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if first_error is not None:
        raise first_error
    return finalised
