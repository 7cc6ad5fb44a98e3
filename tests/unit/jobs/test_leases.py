"""LeaseKeeper: a live worker keeps the leases of the images it holds, and only those; a lease
nobody renews runs out and the image goes to another worker."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from pixelbatch.db import batch_lifecycle, images
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Image, utcnow
from pixelbatch.jobs import leases as leases_mod
from pixelbatch.jobs.leases import LeaseKeeper
from pixelbatch.runtime import Runtime
from tests.unit.db.factories import new_batch, success
from tests.unit.jobs.helpers import RuntimeFactory, claim_all, wait_for

KEEPER_LEASE = 60.0


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    """Renewals extend a lease to ``KEEPER_LEASE`` seconds, far beyond any claim's here."""
    return make_runtime(lease_seconds=KEEPER_LEASE)


def _leases(runtime: Runtime) -> dict[int, tuple[str | None, datetime | None]]:
    with transaction(runtime.sessions) as session:
        rows = session.execute(select(Image.id, Image.lease_owner, Image.lease_until))
        return {row.id: (row.lease_owner, row.lease_until) for row in rows}


def _remaining(until: datetime | None) -> float:
    assert until is not None
    return (until - utcnow()).total_seconds()


def test_renew_extends_the_leases_of_held_ids_only(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 4)
    held, claimed_not_held, _ = claim_all(runtime, "keeper", limit=3, lease_seconds=5)
    [theirs] = claim_all(runtime, "other", lease_seconds=5)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([held.id, theirs.id])  # another owner's id must not be renewed for it

    keeper.renew()

    leases = _leases(runtime)
    assert leases[held.id][0] == "keeper"
    assert _remaining(leases[held.id][1]) > KEEPER_LEASE - 10
    assert _remaining(leases[claimed_not_held.id][1]) < 6
    assert leases[theirs.id][0] == "other" and _remaining(leases[theirs.id][1]) < 6


def test_release_stops_renewing(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 2)
    kept, released = claim_all(runtime, "keeper", lease_seconds=5)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([kept.id, released.id])
    assert len(keeper) == 2

    keeper.release(released.id)
    keeper.renew()

    assert len(keeper) == 1
    leases = _leases(runtime)
    assert _remaining(leases[kept.id][1]) > KEEPER_LEASE - 10
    assert _remaining(leases[released.id][1]) < 6


def test_renew_leaves_a_recorded_image_alone(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 1)
    [item] = claim_all(runtime, "keeper")
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([item.id])
    with transaction(runtime.sessions) as session:
        assert images.record_success(session, item.id, "keeper", success())

    keeper.renew()

    assert _leases(runtime)[item.id] == ("keeper", None)


def test_a_lease_not_renewed_expires_and_another_owner_claims_it(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 2)
    renewed, forgotten = claim_all(runtime, "keeper", lease_seconds=0.3)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([renewed.id])
    keeper.renew()
    time.sleep(0.4)

    taken = claim_all(runtime, "other")

    assert [item.id for item in taken] == [forgotten.id]
    with transaction(runtime.sessions) as session:
        assert not images.record_success(session, forgotten.id, "keeper", success())
        assert images.record_success(session, forgotten.id, "other", success())
        assert images.record_success(session, renewed.id, "keeper", success())


def test_the_background_thread_keeps_leases_alive_until_stopped(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(lease_seconds=0.75)  # renewed every 0.25 s
    new_batch(runtime.sessions, 1)
    [item] = claim_all(runtime, "keeper", lease_seconds=0.75)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([item.id])
    keeper.start()
    try:
        time.sleep(1.0)  # the claim alone would have run out by now
        assert claim_all(runtime, "other") == []
    finally:
        keeper.stop()
    stopped_at = time.monotonic()
    wait_for(lambda: bool(claim_all(runtime, "other")), timeout=5)
    assert time.monotonic() - stopped_at < 1.5
    assert _leases(runtime)[item.id][0] == "other"


def test_renewals_that_fail_are_retried_within_a_second(
    make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database outage makes renewals fail: they are retried every second, not every third
    of a lease, so the lease is renewed as soon as the database answers again."""
    runtime = make_runtime(lease_seconds=9.0)  # renewed every 3 s
    new_batch(runtime.sessions, 1)
    [item] = claim_all(runtime, "keeper", lease_seconds=9.0)
    real = images.renew_leases
    calls: list[float] = []

    def down_twice(session: Session, **kwargs: Any) -> int:
        calls.append(time.monotonic())
        if len(calls) <= 2:  # the outage: only this call fails, the database stays real
            raise OperationalError("UPDATE images", {}, Exception("database is down"))
        return real(session, **kwargs)

    monkeypatch.setattr(images, "renew_leases", down_twice)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([item.id])
    started = time.monotonic()
    keeper.start()
    try:
        wait_for(lambda: len(calls) >= 3, timeout=15)
    finally:
        keeper.stop()
    # First try after 3 s, then a second apart (was: 3 s apart, renewed only at 9 s).
    assert calls[2] - started < 7.5, [round(c - started, 2) for c in calls]
    assert calls[2] - calls[1] < 2.0
    assert _remaining(_leases(runtime)[item.id][1]) > 5


def test_wanted_answers_for_every_held_image_from_one_query_and_sees_a_cancel(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leases_mod, "WANTED_FRESHNESS", 3600.0)  # no stall makes it stale
    batch_id = new_batch(runtime.sessions, 12)
    items = claim_all(runtime, "keeper", limit=12)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold(item.id for item in items)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", seen)
    try:
        # Every image asks at each of its stage boundaries: one query answers them all.
        assert all(keeper.wanted(item.id) for item in items for _boundary in range(3))
        assert len([s for s in statements if "FROM images" in s]) == 1

        with transaction(runtime.sessions) as session:
            assert batch_lifecycle.cancel_batch(session, batch_id)
        # The cancel is seen once the answer is older than its freshness, by every image.
        assert all(keeper.wanted(item.id) for item in items)  # still fresh: still cached
        monkeypatch.setattr(leases_mod, "WANTED_FRESHNESS", 0.0)
        assert not any(keeper.wanted(item.id) for item in items)
        assert len([s for s in statements if "FROM images" in s]) > 1
    finally:
        event.remove(runtime.engine, "before_cursor_execute", seen)


def test_an_image_taken_over_by_another_worker_is_no_longer_wanted(runtime: Runtime) -> None:
    new_batch(runtime.sessions, 2)
    mine, still_mine = claim_all(runtime, "keeper", lease_seconds=0.01)
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold([mine.id, still_mine.id])
    time.sleep(0.05)  # our leases ran out (no renewal): another worker leases both
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Image)
            .where(Image.id == still_mine.id)
            .values(lease_owner="keeper", lease_until=utcnow() + timedelta(seconds=60))
        )
    [taken] = claim_all(runtime, "other")

    assert taken.id == mine.id
    assert not keeper.wanted(mine.id)
    assert keeper.wanted(still_mine.id)
    # Released (recorded or handed back): no longer tracked either way.
    keeper.release(mine.id)
    assert keeper.wanted(mine.id)


def test_check_now_sees_a_cancel_without_waiting_for_the_answer_to_go_stale(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leases_mod, "WANTED_FRESHNESS", 3600.0)  # answers never go stale
    batch_id = new_batch(runtime.sessions, 3)
    items = claim_all(runtime, "keeper")
    keeper = LeaseKeeper(runtime, "keeper")
    keeper.hold(item.id for item in items)
    assert all(keeper.wanted(item.id) for item in items)  # a fresh answer, now cached
    with transaction(runtime.sessions) as session:
        assert batch_lifecycle.cancel_batch(session, batch_id)
    assert all(keeper.wanted(item.id) for item in items)  # still the cached answer

    keeper.check_now()  # what the embedded dispatcher does when told a batch stopped

    assert not any(keeper.wanted(item.id) for item in items)
