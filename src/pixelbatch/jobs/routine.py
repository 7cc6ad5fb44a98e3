"""The one routine that processes images: fetch, transform, store, record.

Both dispatchers (the embedded worker pool and Celery) call ``handle_image`` or
``process_chunk``; they differ only in where images come from and where transforms run.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_lifecycle, images, recording
from pixelbatch.db.engine import reading, transaction
from pixelbatch.errors import PixelbatchError
from pixelbatch.fetch import Fetcher
from pixelbatch.fetch.urls import loggable_url
from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.jobs.transform_pool import TransformRunner
from pixelbatch.runtime import Runtime
from pixelbatch.storage import Storage
from pixelbatch.telemetry import instruments as metrics
from pixelbatch.telemetry.hosts import host_class
from pixelbatch.transform import TransformOptions

log = logging.getLogger(__name__)

# A query string of any URL quoted in an error message (a redirect hop's too).
_QUERY_IN_TEXT_RE = re.compile(r"(https?://[^\s'\"?#]*)[?#][^\s'\"]*")


@dataclass(frozen=True)
class Outcome:
    image_id: int
    batch_id: uuid.UUID
    success: images.ImageSuccess | None = None
    error_code: str | None = None
    error_message: str | None = None
    duration_ms: float = 0.0
    # Where the image sits, for the log line written when it is recorded.
    row_number: int = 0
    position: int = 0
    url: str = ""
    # Dropped at a stage boundary: its batch was cancelled (or its lease lost) meanwhile.
    abandoned: bool = False
    # Seconds per stage reached (queue, download, transform, store), and where it failed.
    stages: dict[str, float] = field(default_factory=dict)
    failed_stage: str | None = None


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


def record(
    sessions: sessionmaker[Session],
    outcome: Outcome,
    owner: str,
    storage: Storage | None = None,
    host_classes: dict[str, str] | None = None,
) -> bool:
    """Record the outcome once; returns True when this recording completed its batch."""
    return bool(record_many(sessions, [outcome], owner, storage, host_classes))


def record_many(
    sessions: sessionmaker[Session],
    outcomes: Sequence[Outcome],
    owner: str,
    storage: Storage | None = None,
    host_classes: dict[str, str] | None = None,
) -> list[uuid.UUID]:
    """Record outcomes in one transaction, each once; returns the batches this recording
    completed (each once, in the order first seen).

    One transaction for many images spares each the cost of its own (on SQLite, the write
    lock and a commit) and each batch's counters are updated once, not per image. All or
    nothing: when it fails, none is recorded and the caller hands them all back.

    An abandoned outcome records nothing. A stored image whose recording finds it cancelled
    (the cancel came between the last boundary and the store) or deleted with its batch
    (after ``delete_prefix`` ran) is removed from ``storage``: nothing stays stored for an
    image that is not recorded as done. The metrics count an image here, after its recording
    committed: a re-leased image is counted by the worker whose recording won, never twice."""
    recorded: list[tuple[Outcome, int]] = []
    with transaction(sessions) as session:
        owed = recording.BatchTotals()
        for outcome in outcomes:
            if outcome.abandoned:
                log.info(
                    "image %s abandoned: its batch was cancelled or its lease lost",
                    outcome.image_id,
                )
                continue
            count = _record_one(session, outcome, owner, owed)
            if count:
                recorded.append((outcome, count))
            else:
                _not_recorded(session, outcome, storage)
        owed.flush(session)
        touched = dict.fromkeys(outcome.batch_id for outcome, _ in recorded)
        completed = [b for b in touched if batch_lifecycle.all_recorded(session, b)]
    for outcome, count in recorded:
        _count(outcome, count, host_classes or {})
        _log_finished(outcome)
    return completed


def _record_one(session: Session, outcome: Outcome, owner: str, owed: recording.BatchTotals) -> int:
    if outcome.success is not None:
        return images.record_success(session, outcome.image_id, owner, outcome.success, owed)
    return images.record_failure(
        session,
        outcome.image_id,
        owner,
        outcome.error_code or "error",
        outcome.error_message or "failed",
        outcome.duration_ms,
        owed,
    )


def _not_recorded(session: Session, outcome: Outcome, storage: Storage | None) -> None:
    """The image's lease was lost: to a cancel or delete (remove what it stored), or to
    another worker (which records it; its output key is the same)."""
    unwanted = images.cancelled_or_gone(session, outcome.image_id)
    if unwanted and outcome.success is not None and storage is not None:
        _remove(storage, outcome.success.output_key)
    log.info(
        "image %s %s",
        outcome.image_id,
        "was cancelled or deleted" if unwanted else "was recorded by another worker",
    )


def _count(outcome: Outcome, recorded: int, host_classes: dict[str, str]) -> None:
    success = outcome.success
    metrics.image_recorded(
        count=recorded,
        error_code=None if success is not None else outcome.error_code or "error",
        bytes_in=success.bytes_in if success is not None else 0,
        bytes_out=success.bytes_out if success is not None else 0,
        stages=outcome.stages,
        failed_stage=outcome.failed_stage,
        host_class=host_class(outcome.url, host_classes) if outcome.failed_stage else "",
        kept_original=success is not None and success.kept_original,
        grew=success is not None and success.grew,
    )


def _remove(storage: Storage, key: str) -> None:
    """Best effort: an object store that fails to delete leaves an orphan object (removed
    with its batch), never an unrecorded outcome or a failed chunk."""
    try:
        storage.delete(key)
    except PixelbatchError as exc:
        log.warning("could not remove %s of a cancelled image: %s", key, exc.message)


def _log_finished(outcome: Outcome) -> None:
    """The one INFO line per finished image; the URL without its query, which may be a
    credential (presigned URLs)."""
    url = loggable_url(outcome.url)
    success = outcome.success
    if success is not None:
        result = f"done, {success.bytes_in} -> {success.bytes_out} bytes"
        if success.kept_original:
            result += " (kept the original)"
    else:
        message = _QUERY_IN_TEXT_RE.sub(r"\1?…", outcome.error_message or "")
        result = f"failed, {outcome.error_code}: {message}"
    log.info(
        "image finished: batch %s row %d image %d: %s in %.0f ms (%s)",
        outcome.batch_id,
        outcome.row_number,
        outcome.position + 1,
        result,
        outcome.duration_ms,
        url,
        extra={
            "event": {
                "event": "image_finished",
                "batch_id": str(outcome.batch_id),
                "image_id": outcome.image_id,
                "row": outcome.row_number,
                "position": outcome.position + 1,
                "outcome": "done" if success is not None else "failed",
                "code": None if success is not None else outcome.error_code,
                "duration_ms": round(outcome.duration_ms, 1),
                "stages_ms": {k: round(v * 1000, 1) for k, v in outcome.stages.items()},
                "bytes_in": success.bytes_in if success is not None else None,
                "bytes_out": success.bytes_out if success is not None else None,
                "kept_original": success.kept_original if success is not None else None,
                "url": url,
            }
        },
    )


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
    Returns how many batches this chunk finalised."""

    def one(item: images.ClaimedImage) -> bool:
        try:
            return handle_image(runtime, item, owner, runner, still_wanted)
        finally:
            if on_done is not None:
                on_done(item.id)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        return sum(pool.map(one, items))
