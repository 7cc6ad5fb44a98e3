"""The state-moving queries: leases, exactly-once recording, one finaliser, fairness."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import queries
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, Image, ImageStatus
from pixelbatch.transform import TransformOptions
from tests import support


@pytest.fixture
def sessions(migrated_sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with support.sessions(migrated_sqlite_url) as factory:
        yield factory


def _batch(sessions: sessionmaker[Session], products: int, urls_per_product: int = 1) -> uuid.UUID:
    batch_id = uuid.uuid4()
    with transaction(sessions) as session:
        session.add(
            Batch(
                id=batch_id,
                input_filename="x.csv",
                input_key=f"{batch_id}/input.csv",
                options=TransformOptions().model_dump(mode="json"),
                extra_columns=[],
            )
        )
        session.flush()
        new = [
            queries.NewProduct(
                i + 2, str(i), f"p{i}", [], [f"http://h/{i}/{j}" for j in range(urls_per_product)]
            )
            for i in range(products)
        ]
        images = queries.insert_products(session, batch_id, new)
        batch = session.get_one(Batch, batch_id)
        batch.products_total = products
        batch.images_total = images
    return batch_id


def _success(key: str = "k") -> queries.ImageSuccess:
    return queries.ImageSuccess(key, "image/jpeg", 10, 5, 1, 1, "JPEG", 90, 45, 1.0)


def test_claim_leases_each_image_once(sessions: sessionmaker[Session]) -> None:
    _batch(sessions, 10)
    with transaction(sessions) as s:
        first = queries.claim_images(s, owner="a", limit=6, lease_seconds=60)
    with transaction(sessions) as s:
        second = queries.claim_images(s, owner="b", limit=6, lease_seconds=60)
    assert len(first) == 6 and len(second) == 4
    assert not {i.id for i in first} & {i.id for i in second}
    with transaction(sessions) as s:
        assert queries.claim_images(s, owner="c", limit=6, lease_seconds=60) == []


def test_expired_lease_is_reclaimed_and_loser_cannot_record(
    sessions: sessionmaker[Session],
) -> None:
    _batch(sessions, 1)
    with transaction(sessions) as s:
        [item] = queries.claim_images(s, owner="dead", limit=1, lease_seconds=-1)
    with transaction(sessions) as s:
        [again] = queries.claim_images(s, owner="alive", limit=1, lease_seconds=60)
    assert again.id == item.id
    with transaction(sessions) as s:
        assert not queries.record_success(s, item.id, "dead", _success())
        assert queries.record_success(s, item.id, "alive", _success())
        assert not queries.record_success(s, item.id, "alive", _success())
    with transaction(sessions) as s:
        image = s.get_one(Image, item.id)
        batch = s.get_one(Batch, item.batch_id)
        assert image.status == ImageStatus.DONE and image.attempts == 2
        assert batch.images_done == 1


def test_claims_are_shared_fairly_between_batches(sessions: sessionmaker[Session]) -> None:
    big = _batch(sessions, 100)
    small = _batch(sessions, 3)
    with transaction(sessions) as s:
        claimed = queries.claim_images(s, owner="w", limit=8, lease_seconds=60)
    by_batch = {b: sum(1 for c in claimed if c.batch_id == b) for b in (big, small)}
    assert by_batch[small] == 3 and by_batch[big] == 5


def test_only_one_of_many_racing_finalisers_wins(sessions: sessionmaker[Session]) -> None:
    batch_id = _batch(sessions, 2)
    with transaction(sessions) as s:
        items = queries.claim_images(s, owner="w", limit=2, lease_seconds=60)
    with transaction(sessions) as s:
        assert not queries.claim_finalization(s, batch_id, 60), "not ready yet"
        for item in items:
            queries.record_failure(s, item.id, "w", "http_404", "gone", 1.0)
    wins = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        with transaction(sessions) as s:
            if queries.claim_finalization(s, batch_id, 60):
                wins.append(1)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with transaction(sessions) as s:
        assert queries.complete_batch(
            s, batch_id, status=BatchStatus.FAILED, output_key="o", message="m", webhook_payload={}
        )
        assert not queries.complete_batch(
            s, batch_id, status=BatchStatus.FAILED, output_key="o", message="m", webhook_payload={}
        )


def test_cancel_stops_pending_images_and_retry_requeues_failures(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = _batch(sessions, 3)
    with transaction(sessions) as s:
        assert queries.cancel_batch(s, batch_id)
        assert not queries.cancel_batch(s, batch_id)
        statuses = set(s.scalars(select(Image.status).where(Image.batch_id == batch_id)))
    assert statuses == {ImageStatus.CANCELLED}

    other = _batch(sessions, 2)
    with transaction(sessions) as s:
        items = queries.claim_images(s, owner="w", limit=2, lease_seconds=60)
        queries.record_failure(s, items[0].id, "w", "timeout", "slow", 1.0)
        queries.record_success(s, items[1].id, "w", _success())
        assert queries.retry_failed_images(s, other) == 0, "only finished batches are retried"
        queries.complete_batch(
            s,
            other,
            status=BatchStatus.COMPLETED_WITH_ERRORS,
            output_key="o",
            message="m",
            webhook_payload=None,
        )
    with transaction(sessions) as s:
        assert queries.retry_failed_images(s, other) == 1
        batch = s.get_one(Batch, other)
        assert batch.status == BatchStatus.PROCESSING and batch.images_failed == 0


def test_a_repeated_url_is_claimed_once_and_recorded_for_every_occurrence(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = uuid.uuid4()
    with transaction(sessions) as session:
        session.add(
            Batch(
                id=batch_id,
                input_filename="x.csv",
                input_key="k",
                options=TransformOptions().model_dump(mode="json"),
                extra_columns=[],
            )
        )
        session.flush()
        urls = [["http://h/a", "http://h/b"], ["http://h/a"], ["http://h/c", "http://h/a"]]
        new = [queries.NewProduct(i + 2, str(i), "p", [], u) for i, u in enumerate(urls)]
        session.get_one(Batch, batch_id).images_total = queries.insert_products(
            session, batch_id, new
        )
        assert queries.link_duplicate_urls(session, batch_id) == 2
    with transaction(sessions) as s:
        assert queries.count_claimable(s) == 3
        claimed = queries.claim_images(s, owner="w", limit=10, lease_seconds=60)
    assert sorted(c.url for c in claimed) == ["http://h/a", "http://h/b", "http://h/c"]
    by_url = {c.url: c for c in claimed}
    with transaction(sessions) as s:
        queries.record_success(s, by_url["http://h/a"].id, "w", _success("out-a"))
        queries.record_failure(s, by_url["http://h/b"].id, "w", "http_404", "gone", 1.0)
    with transaction(sessions) as s:
        batch = s.get_one(Batch, batch_id)
        assert (batch.images_done, batch.images_failed) == (3, 1)
        a_images = s.scalars(select(Image).where(Image.url == "http://h/a")).all()
        assert {(i.status, i.output_key) for i in a_images} == {(ImageStatus.DONE, "out-a")}
        assert batch.bytes_in == 30
