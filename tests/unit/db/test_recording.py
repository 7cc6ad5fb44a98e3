"""Recording a group of images at once, on SQLite and PostgreSQL: one executemany per shape
of outcome, and still each image once, only under its own lease."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import images, recording
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, Image, ImageStatus
from tests.unit.db.factories import new_batch, success


@pytest.fixture
def sessions(sessions_on_both: sessionmaker[Session]) -> sessionmaker[Session]:
    return sessions_on_both


@contextmanager
def image_updates(engine: Engine) -> Iterator[list[int]]:
    """How many parameter sets each UPDATE of ``images`` carried, in order."""
    seen: list[int] = []

    def watch(conn: object, cursor: object, statement: str, params: object, *rest: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE IMAGES"):
            seen.append(len(params) if isinstance(params, list) else 1)

    event.listen(engine, "before_cursor_execute", watch)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", watch)


def finished_done(item: images.ClaimedImage, key: str) -> recording.Finished:
    values, totals = images.success_values(success(key))
    return recording.Finished(item.id, item.batch_id, values, totals, has_copies=False)


def finished_failed(item: images.ClaimedImage) -> recording.Finished:
    values, totals = images.failure_values("http_404", "gone", 1.0)
    return recording.Finished(item.id, item.batch_id, values, totals, has_copies=False)


def test_a_group_goes_out_as_one_update_per_shape(sessions: sessionmaker[Session]) -> None:
    batch_id = new_batch(sessions, 6)
    with transaction(sessions) as s:
        items = images.claim_images(s, owner="w", limit=6, lease_seconds=60)
    group = [finished_done(item, f"k{item.id}") for item in items[:4]]
    group += [finished_failed(item) for item in items[4:]]
    engine = sessions.kw["bind"]

    with image_updates(engine) as updates, transaction(sessions) as s:
        counts = recording.record(s, "w", group)

    assert counts == [1] * 6
    assert updates == [4, 2]
    with transaction(sessions) as s:
        batch = s.get_one(Batch, batch_id)
        assert (batch.images_done, batch.images_failed) == (4, 2)
        assert (batch.bytes_in, batch.bytes_out) == (40, 20)
        keys = s.execute(select(Image.id, Image.output_key)).all()
    assert {image_id: key for image_id, key in keys if key} == {
        item.id: f"k{item.id}" for item in items[:4]
    }


def test_a_group_records_only_the_images_whose_lease_still_holds(
    sessions: sessionmaker[Session],
) -> None:
    # Of four images, one went to another worker, one was cancelled, and one is listed twice
    # (a duplicate delivery): each of the rest is recorded once, and the others not at all.
    batch_id = new_batch(sessions, 4)
    with transaction(sessions) as s:
        first, lost, cancelled, kept = images.claim_images(s, owner="w", limit=4, lease_seconds=60)
        s.get_one(Image, lost.id).lease_owner = "another worker"
        s.get_one(Image, cancelled.id).status = ImageStatus.CANCELLED
    group = [
        finished_done(first, "a"),
        finished_done(lost, "b"),
        finished_done(cancelled, "c"),
        finished_done(first, "a again"),
        finished_done(kept, "d"),
    ]

    with transaction(sessions) as s:
        counts = recording.record(s, "w", group)

    assert counts == [1, 0, 0, 0, 1]
    with transaction(sessions) as s:
        batch = s.get_one(Batch, batch_id)
        assert batch.images_done == 2
        assert s.get_one(Image, first.id).output_key == "a"
        assert s.get_one(Image, lost.id).status == ImageStatus.PROCESSING
        assert s.get_one(Image, cancelled.id).status == ImageStatus.CANCELLED
        # Nothing the group did not record changes on a second attempt either.
        assert recording.record(s, "w", group) == [0] * 5
        assert s.get_one(Batch, batch_id).images_done == 2


def test_one_image_recorded_alone_finds_its_batch_itself(sessions: sessionmaker[Session]) -> None:
    batch_id = new_batch(sessions, 1)
    with transaction(sessions) as s:
        [item] = images.claim_images(s, owner="w", limit=1, lease_seconds=60)
    with transaction(sessions) as s:
        assert images.record_failure(s, item.id, "w", "http_404", "gone", 1.0) == 1
        assert images.record_failure(s, item.id, "w", "http_404", "gone", 1.0) == 0
        assert images.record_failure(s, item.id + 1000, "w", "http_404", "gone", 1.0) == 0
    with transaction(sessions) as s:
        assert s.get_one(Batch, batch_id).images_failed == 1


def test_an_image_listed_with_two_outcomes_is_recorded_once_with_its_first(
    sessions: sessionmaker[Session],
) -> None:
    # A duplicate delivery whose two outcomes differ in shape (done, then failed): the
    # failed one must not count as a second recording, or the batch would look complete
    # while its last image still runs.
    batch_id = new_batch(sessions, 3)
    with transaction(sessions) as s:
        twice, failed, running = images.claim_images(s, owner="w", limit=3, lease_seconds=60)
    group = [finished_done(twice, "a"), finished_failed(twice), finished_failed(failed)]

    with transaction(sessions) as s:
        assert recording.record(s, "w", group) == [1, 0, 1]

    with transaction(sessions) as s:
        batch = s.get_one(Batch, batch_id)
        assert (batch.images_done, batch.images_failed) == (1, 1)
        assert s.get_one(Image, twice.id).status == ImageStatus.DONE
        assert s.get_one(Image, running.id).status == ImageStatus.PROCESSING
