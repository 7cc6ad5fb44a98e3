"""Row-lock order on real PostgreSQL: the transactions that touch both an image and its
batch must take them in one order, or concurrent ones deadlock (SQLite serialises every
writer, so only PostgreSQL can show this)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_lifecycle, images
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, Image, ImageStatus
from tests import support
from tests.unit.db.factories import new_batch


@pytest.fixture
def sessions(migrated_pg_url: str) -> Iterator[sessionmaker[Session]]:
    with support.sessions(migrated_pg_url) as factory:
        yield factory


def test_cancel_while_a_worker_records_an_image_does_not_deadlock(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = new_batch(sessions, 3)
    with transaction(sessions) as session:
        claimed = images.claim_images(session, owner="w", limit=3, lease_seconds=60)
    engine = sessions.kw["bind"]

    # The recorder pauses between locking its image row and updating its batch row, until
    # the cancel has had time to take whatever lock it takes first.
    image_locked, resume = threading.Event(), threading.Event()

    def pause_after_image_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if conn.info.get("recorder") and statement.lstrip().upper().startswith("UPDATE IMAGES"):
            conn.info["recorder"] = False
            image_locked.set()
            resume.wait(10)

    event.listen(engine, "after_cursor_execute", pause_after_image_update)
    errors: list[BaseException] = []
    outcomes: dict[str, bool] = {}

    def record() -> None:
        try:
            with transaction(sessions) as session:
                session.connection().info["recorder"] = True
                outcomes["recorded"] = bool(
                    images.record_failure(session, claimed[0].id, "w", "http_404", "gone", 1.0)
                )
        except BaseException as exc:
            errors.append(exc)

    def cancel() -> None:
        try:
            with transaction(sessions) as session:
                outcomes["cancelled"] = batch_lifecycle.cancel_batch(session, batch_id)
        except BaseException as exc:
            errors.append(exc)

    recorder = threading.Thread(target=record)
    recorder.start()
    assert image_locked.wait(10)
    canceller = threading.Thread(target=cancel)
    canceller.start()
    canceller.join(1.5)  # PostgreSQL's deadlock_timeout is 1 s: long enough to show one
    resume.set()
    recorder.join(15)
    canceller.join(15)
    event.remove(engine, "after_cursor_execute", pause_after_image_update)

    assert not errors, errors
    assert outcomes == {"recorded": True, "cancelled": True}
    with transaction(sessions) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.status == BatchStatus.CANCELLED
        assert batch.images_failed == 1
        statuses = sorted(session.scalars(select(Image.status).where(Image.batch_id == batch_id)))
        cancelled = ImageStatus.CANCELLED
        assert statuses == sorted([ImageStatus.FAILED, cancelled, cancelled])


def test_cancel_of_a_finished_batch_changes_nothing(sessions: sessionmaker[Session]) -> None:
    batch_id = new_batch(sessions, 2)
    with transaction(sessions) as session:
        claimed = images.claim_images(session, owner="w", limit=2, lease_seconds=60)
    with transaction(sessions) as session:
        images.record_failure(session, claimed[0].id, "w", "http_404", "gone", 1.0)
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(status=BatchStatus.COMPLETED_WITH_ERRORS)
        )
    with transaction(sessions) as session:
        assert batch_lifecycle.cancel_batch(session, batch_id) is False
    with transaction(sessions) as session:
        statuses = sorted(session.scalars(select(Image.status).where(Image.batch_id == batch_id)))
    # The still-leased image stays as it was: the savepoint undid the cancel's update.
    assert statuses == sorted([ImageStatus.FAILED, ImageStatus.PROCESSING])
