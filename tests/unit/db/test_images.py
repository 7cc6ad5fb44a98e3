"""The image state machine: leases, exactly-once recording, fairness, repeated URLs."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import fair_share, images
from pixelbatch.db.bulk import NewProduct, insert_products
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, Image, ImageStatus
from tests.unit.db.factories import add_batch, new_batch, success


def test_claim_leases_each_image_once(sessions: sessionmaker[Session]) -> None:
    new_batch(sessions, 10)
    with transaction(sessions) as s:
        first = images.claim_images(s, owner="a", limit=6, lease_seconds=60)
    with transaction(sessions) as s:
        second = images.claim_images(s, owner="b", limit=6, lease_seconds=60)
    assert len(first) == 6 and len(second) == 4
    assert not {i.id for i in first} & {i.id for i in second}
    with transaction(sessions) as s:
        assert images.claim_images(s, owner="c", limit=6, lease_seconds=60) == []


def test_expired_lease_is_reclaimed_and_loser_cannot_record(
    sessions: sessionmaker[Session],
) -> None:
    new_batch(sessions, 1)
    with transaction(sessions) as s:
        [item] = images.claim_images(s, owner="dead", limit=1, lease_seconds=-1)
    with transaction(sessions) as s:
        [again] = images.claim_images(s, owner="alive", limit=1, lease_seconds=60)
    assert again.id == item.id
    with transaction(sessions) as s:
        assert not images.record_success(s, item.id, "dead", success())
        assert images.record_success(s, item.id, "alive", success())
        assert not images.record_success(s, item.id, "alive", success())
    with transaction(sessions) as s:
        image = s.get_one(Image, item.id)
        batch = s.get_one(Batch, item.batch_id)
        assert image.status == ImageStatus.DONE and image.attempts == 2
        assert batch.images_done == 1


def test_claims_are_shared_fairly_between_batches(sessions: sessionmaker[Session]) -> None:
    big = new_batch(sessions, 100)
    small = new_batch(sessions, 3)
    with transaction(sessions) as s:
        claimed = images.claim_images(s, owner="w", limit=8, lease_seconds=60)
    by_batch = {b: sum(1 for c in claimed if c.batch_id == b) for b in (big, small)}
    assert by_batch[small] == 3 and by_batch[big] == 5


def test_a_repeated_url_is_claimed_once_and_recorded_for_every_occurrence(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        batch_id = add_batch(session)
        session.flush()
        urls = [["http://h/a", "http://h/b"], ["http://h/a"], ["http://h/c", "http://h/a"]]
        new = [NewProduct(i + 2, str(i), "p", [], u) for i, u in enumerate(urls)]
        session.get_one(Batch, batch_id).images_total = insert_products(session, batch_id, new)
        assert images.link_duplicate_urls(session, batch_id) == 2
    with transaction(sessions) as s:
        assert fair_share.count_claimable(s, at_most=10) == 3
        assert fair_share.count_claimable(s, at_most=2) == 2  # a sweeper needs no more
        claimed = images.claim_images(s, owner="w", limit=10, lease_seconds=60)
    assert sorted(c.url for c in claimed) == ["http://h/a", "http://h/b", "http://h/c"]
    by_url = {c.url: c for c in claimed}
    with transaction(sessions) as s:
        images.record_success(s, by_url["http://h/a"].id, "w", success("out-a"))
        images.record_failure(s, by_url["http://h/b"].id, "w", "http_404", "gone", 1.0)
    with transaction(sessions) as s:
        batch = s.get_one(Batch, batch_id)
        assert (batch.images_done, batch.images_failed) == (3, 1)
        a_images = s.scalars(select(Image).where(Image.url == "http://h/a")).all()
        assert {(i.status, i.output_key) for i in a_images} == {(ImageStatus.DONE, "out-a")}
        assert batch.bytes_in == 30


def test_the_batch_counts_kept_originals_and_grown_outputs(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = new_batch(sessions, 4)
    with transaction(sessions) as s:
        kept, grown, smaller, failed = images.claim_images(s, owner="w", limit=4, lease_seconds=60)
        images.record_success(s, kept.id, "w", replace(success(), bytes_out=9, kept_original=True))
        images.record_success(s, grown.id, "w", replace(success(), bytes_out=11))
        images.record_success(s, smaller.id, "w", success())
        images.record_failure(s, failed.id, "w", "http_404", "gone", 1.0)
    with transaction(sessions) as s:
        batch = s.get_one(Batch, batch_id)
        assert (batch.images_done, batch.images_failed) == (3, 1)
        assert (batch.images_kept_original, batch.images_grew) == (1, 1)
        assert (batch.bytes_in, batch.bytes_out) == (30, 25)


def test_released_leases_are_claimable_again_at_once(sessions: sessionmaker[Session]) -> None:
    new_batch(sessions, 3)
    with transaction(sessions) as s:
        held = images.claim_images(s, owner="stopping", limit=2, lease_seconds=600)
        images.record_success(s, held[0].id, "stopping", success())
    with transaction(sessions) as s:
        assert images.release_leases(s, "someone-else") == 0
        assert images.release_leases(s, "stopping") == 1, "a recorded image stays recorded"
    with transaction(sessions) as s:
        again = images.claim_images(s, owner="next", limit=10, lease_seconds=60)
    ids = {c.id for c in again}
    assert len(ids) == 2 and held[1].id in ids and held[0].id not in ids
