"""status_counts: what the metrics endpoint reports, straight from the database."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_lifecycle, images
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import BatchStatus, Priority
from pixelbatch.db.stats import queue_by_priority, status_counts
from tests.unit.db.factories import new_batch, success


def test_counts_by_status_leave_out_finished_batches_images(
    sessions: sessionmaker[Session],
) -> None:
    done = new_batch(sessions, 2)
    with transaction(sessions) as s:
        for item in images.claim_images(s, owner="w", limit=2, lease_seconds=60, batch_id=done):
            images.record_success(s, item.id, "w", success())
        batch_lifecycle.complete_batch(
            s,
            done,
            status=BatchStatus.COMPLETED,
            output_key="o",
            message="m",
            webhook_payload=None,
        )
    new_batch(sessions, 3)
    with reading(sessions) as s:
        counts = status_counts(s)
    assert counts.batches == {"COMPLETED": 1, "PENDING": 1}
    assert counts.images == {"PENDING": 3}
    assert counts.deliveries == {}


def test_queue_depth_counts_pending_images_by_priority(sessions: sessionmaker[Session]) -> None:
    new_batch(sessions, 4, priority=Priority.HIGH)
    new_batch(sessions, 2, priority=Priority.LOW)
    new_batch(sessions, 5)
    with transaction(sessions) as s:
        images.claim_images(s, owner="w", limit=3, lease_seconds=60)  # 3 high leased
    with reading(sessions) as s:
        assert queue_by_priority(s) == {"high": 1, "normal": 5, "low": 2}
