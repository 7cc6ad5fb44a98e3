"""Deleting batches: one on request (``batches.delete_batch``), and those retention expires.

One path for both: a running batch is cancelled first (its workers abandon their images at
the next stage boundary and can no longer record them), then its stored objects go (all
under ``"{batch_id}/"``: uploaded CSV, output images, output CSV), then its rows. Objects
first, so that a failure leaves a batch that can be deleted again rather than objects no
row points to; an object a worker in flight stores after this is removed by that worker
when it finds its image gone (``jobs.recording.record``), and a finaliser's CSV likewise
(``jobs.finalize``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from pixelbatch.db import batch_lifecycle, batch_removal
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import utcnow
from pixelbatch.jobs.dispatch import Dispatcher
from pixelbatch.runtime import Runtime

log = logging.getLogger(__name__)

# Retention removes at most this many batches per sweep, so one pass over a large backlog
# stays short and the rest goes on the next passes.
RETENTION_CHUNK = 50


def storage_prefix(batch_id: uuid.UUID) -> str:
    return f"{batch_id}/"


def remove_batch(
    runtime: Runtime, batch_id: uuid.UUID, dispatcher: Dispatcher | None = None
) -> int:
    """Cancel the batch if it runs (and tell ``dispatcher``), remove its objects and rows;
    returns how many objects were removed. Deleting a batch that is already gone removes
    nothing and is no error."""
    with transaction(runtime.sessions) as session:
        cancelled = batch_lifecycle.cancel_batch(session, batch_id)
    if cancelled:
        log.info("batch %s cancelled to be deleted", batch_id)
        if dispatcher is not None:
            dispatcher.stopped(batch_id)
    removed = runtime.storage.delete_prefix(storage_prefix(batch_id))
    with transaction(runtime.sessions) as session:
        existed = batch_removal.delete_batch_rows(session, batch_id)
    # Swept again once the rows are gone: a finaliser that stored its CSV after the first
    # sweep, and found its batch still there, committed before the rows went; one that
    # stores after this finds the batch gone and removes its CSV itself.
    removed += runtime.storage.delete_prefix(storage_prefix(batch_id))
    if existed:
        log.info("batch %s deleted (%d stored objects removed)", batch_id, removed)
    return removed


def remove_expired(runtime: Runtime, limit: int = RETENTION_CHUNK) -> list[uuid.UUID]:
    """Delete up to ``limit`` batches that finished more than ``PIXELBATCH_RETENTION_DAYS``
    ago (nothing when retention is off); returns the ids of those deleted."""
    days = runtime.settings.retention_days
    if days is None:
        return []
    with reading(runtime.sessions) as session:
        expired = batch_removal.expired_batches(session, utcnow() - timedelta(days=days), limit)
    removed = []
    for batch_id in expired:
        # One batch whose objects cannot be removed now (the store is down, a permission is
        # missing) must not stop the others: it is first again on the next pass.
        try:
            remove_batch(runtime, batch_id)
        except Exception:
            log.exception("retention: could not delete batch %s; retrying later", batch_id)
            continue
        removed.append(batch_id)
    if removed:
        log.info("retention: deleted %d batches finished over %s days ago", len(removed), days)
    return removed
