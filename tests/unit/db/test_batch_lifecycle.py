"""A batch after upload: one finaliser among many, completion once, cancel and retry."""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_lifecycle, images
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, Image, ImageStatus
from tests.unit.db.factories import new_batch, success


def test_only_one_of_many_racing_finalisers_wins(sessions: sessionmaker[Session]) -> None:
    batch_id = new_batch(sessions, 2)
    with transaction(sessions) as s:
        items = images.claim_images(s, owner="w", limit=2, lease_seconds=60)
    with transaction(sessions) as s:
        assert not batch_lifecycle.claim_finalization(s, batch_id, 60), "not ready yet"
        for item in items:
            images.record_failure(s, item.id, "w", "http_404", "gone", 1.0)
    wins = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        with transaction(sessions) as s:
            if batch_lifecycle.claim_finalization(s, batch_id, 60):
                wins.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with transaction(sessions) as s:
        assert batch_lifecycle.complete_batch(
            s, batch_id, status=BatchStatus.FAILED, output_key="o", message="m", webhook_payload={}
        )
        assert not batch_lifecycle.complete_batch(
            s, batch_id, status=BatchStatus.FAILED, output_key="o", message="m", webhook_payload={}
        )


def test_cancel_stops_pending_images_and_retry_requeues_failures(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = new_batch(sessions, 3)
    with transaction(sessions) as s:
        assert batch_lifecycle.cancel_batch(s, batch_id)
        assert not batch_lifecycle.cancel_batch(s, batch_id)
        statuses = set(s.scalars(select(Image.status).where(Image.batch_id == batch_id)))
    assert statuses == {ImageStatus.CANCELLED}

    other = new_batch(sessions, 2)
    with transaction(sessions) as s:
        items = images.claim_images(s, owner="w", limit=2, lease_seconds=60)
        images.record_failure(s, items[0].id, "w", "timeout", "slow", 1.0)
        images.record_success(s, items[1].id, "w", success())
        assert batch_lifecycle.retry_failed_images(s, other) == 0, (
            "only finished batches are retried"
        )
        batch_lifecycle.complete_batch(
            s,
            other,
            status=BatchStatus.COMPLETED_WITH_ERRORS,
            output_key="o",
            message="m",
            webhook_payload=None,
        )
    with transaction(sessions) as s:
        assert batch_lifecycle.retry_failed_images(s, other) == 1
        batch = s.get_one(Batch, other)
        assert batch.status == BatchStatus.PROCESSING and batch.images_failed == 0
