"""Recording finished images: each once, many per transaction, counted and logged once.

``produce`` makes an :class:`Outcome` without touching the database; the functions here
write it: ``record_group`` for images that finished together (the embedded worker's
``jobs.recorder`` and a Celery chunk; one ``record_many`` transaction, image by image if
that fails), ``record`` for one. Only the worker whose lease still
holds records an image, so a re-leased or cancelled image is never counted twice.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_lifecycle, images, recording
from pixelbatch.db.engine import transaction
from pixelbatch.errors import PixelbatchError
from pixelbatch.fetch.urls import loggable_url
from pixelbatch.storage import Storage
from pixelbatch.telemetry import instruments as metrics
from pixelbatch.telemetry.hosts import host_class

# The finished-image line keeps the logger it always had (operators filter on its name).
log = logging.getLogger("pixelbatch.jobs.routine")

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
    # Whether other images repeat its URL (``ClaimedImage.has_copies``).
    has_copies: bool = True


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
    kept: list[Outcome] = []
    for outcome in outcomes:
        if not outcome.abandoned:
            kept.append(outcome)
            continue
        log.info("image %s abandoned: its batch was cancelled or its lease lost", outcome.image_id)
    with transaction(sessions) as session:
        counts = recording.record(session, owner, [_finished(outcome) for outcome in kept])
        for outcome, count in zip(kept, counts, strict=True):
            if count:
                recorded.append((outcome, count))
            else:
                _not_recorded(session, outcome, storage)
        touched = dict.fromkeys(outcome.batch_id for outcome, _ in recorded)
        completed = [b for b in touched if batch_lifecycle.all_recorded(session, b)]
    for outcome, count in recorded:
        _count(outcome, count, host_classes or {})
        _log_finished(outcome)
    return completed


@dataclass(frozen=True)
class GroupRecording:
    """What ``record_group`` did: the batches it completed, and the outcomes it could not
    record with the first error that stopped them (None when all were recorded)."""

    completed: list[uuid.UUID]
    unrecorded: list[Outcome]
    error: Exception | None


def record_group(
    sessions: sessionmaker[Session],
    outcomes: Sequence[Outcome],
    owner: str,
    storage: Storage | None = None,
    host_classes: dict[str, str] | None = None,
) -> GroupRecording:
    """``record_many`` for outcomes that finished together; when the group's transaction
    fails, each is tried alone, so one image that cannot be recorded does not take the
    others with it (when the database is down, every one of them fails anyway)."""
    try:
        return GroupRecording(
            record_many(sessions, outcomes, owner, storage, host_classes), [], None
        )
    except Exception as exc:
        if len(outcomes) == 1:
            return GroupRecording([], list(outcomes), exc)
        first: Exception = exc
    completed: list[uuid.UUID] = []
    unrecorded: list[Outcome] = []
    for outcome in outcomes:
        try:
            completed += record_many(sessions, [outcome], owner, storage, host_classes)
        except Exception:
            unrecorded.append(outcome)
    return GroupRecording(completed, unrecorded, first if unrecorded else None)


def _finished(outcome: Outcome) -> recording.Finished:
    if outcome.success is not None:
        values, totals = images.success_values(outcome.success)
    else:
        values, totals = images.failure_values(
            outcome.error_code or "error", outcome.error_message or "failed", outcome.duration_ms
        )
    return recording.Finished(
        outcome.image_id, outcome.batch_id, values, totals, outcome.has_copies
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
    credential (presigned URLs). Nothing is built for a logger that would drop the line."""
    if not log.isEnabledFor(logging.INFO):
        return
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
        extra={"event": functools.partial(_finished_event, outcome, url)},
    )


def _finished_event(outcome: Outcome, url: str) -> dict[str, object]:
    """The finished-image line's fields, built only by a formatter that writes them (JSON):
    a text line never reads them, and building them cost as much as the rest of the line."""
    success = outcome.success
    return {
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
