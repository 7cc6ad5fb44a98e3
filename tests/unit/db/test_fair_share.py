"""The claim order: priorities first, low lifted by aging, then tenants, then batches.

Run against SQLite and PostgreSQL: the order comes from one SQL statement over every
active batch, and the PostgreSQL claims keep ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import images
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Priority, utcnow
from tests.unit.db.factories import new_batch, success


@pytest.fixture
def sessions(sessions_on_both: sessionmaker[Session]) -> sessionmaker[Session]:
    return sessions_on_both


def claim(
    sessions: sessionmaker[Session], limit: int, owner: str = "w", **kwargs: Any
) -> list[images.ClaimedImage]:
    with transaction(sessions) as s:
        return images.claim_images(s, owner=owner, limit=limit, lease_seconds=60, **kwargs)


def per_batch(claimed: list[images.ClaimedImage]) -> Counter[uuid.UUID]:
    return Counter(c.batch_id for c in claimed)


def test_a_high_batch_is_served_before_an_older_normal_one(
    sessions: sessionmaker[Session],
) -> None:
    big = new_batch(sessions, 100, created_at=utcnow() - timedelta(minutes=5))
    high = new_batch(sessions, 10, priority=Priority.HIGH)
    assert per_batch(claim(sessions, 6)) == {high: 6}
    # What the high batch cannot fill goes to the next level down.
    assert per_batch(claim(sessions, 6)) == {high: 4, big: 2}


def test_low_waits_behind_normal_until_it_has_aged(sessions: sessionmaker[Session]) -> None:
    normal = new_batch(sessions, 100)
    fresh_low = new_batch(sessions, 10, priority=Priority.LOW)
    assert per_batch(claim(sessions, 8, aging_seconds=600)) == {normal: 8}
    old_low = new_batch(
        sessions, 10, priority=Priority.LOW, created_at=utcnow() - timedelta(minutes=11)
    )
    # The aged low batch competes as normal: an even share with the normal batch, which
    # already holds 8 live leases, so it gets the next 8 first; the fresh one still waits.
    assert per_batch(claim(sessions, 12, aging_seconds=600)) == {old_low: 10, normal: 2}
    assert fresh_low not in per_batch(claim(sessions, 8, aging_seconds=600))
    # Without an aging time a low batch is never lifted above normal.
    assert per_batch(claim(sessions, 4)) == {normal: 4}


def test_tenants_share_evenly_whatever_their_batch_counts(
    sessions: sessionmaker[Session],
) -> None:
    # Tenant "one" uploaded first, one big batch; tenant "many" split its work into 12.
    single = new_batch(sessions, 200, tenant="one", created_at=utcnow() - timedelta(minutes=1))
    split = [new_batch(sessions, 20, tenant="many") for _ in range(12)]
    claimed = claim(sessions, 16)
    counts = per_batch(claimed)
    assert counts[single] == 8
    assert sum(counts[b] for b in split) == 8
    assert max(counts[b] for b in split) == 1, "within a tenant, its oldest batches one each"
    # Claims of one image at a time (the embedded runner's) alternate between tenants,
    # since each goes to the tenant holding the fewest live leases.
    tenants: list[str] = []
    for _ in range(10):
        [item] = claim(sessions, 1)
        tenants.append("one" if item.batch_id == single else "many")
    assert Counter(tenants) == {"one": 5, "many": 5}


def test_live_leases_decide_the_share_and_finished_ones_free_it(
    sessions: sessionmaker[Session],
) -> None:
    a = new_batch(sessions, 50, tenant="a")
    b = new_batch(sessions, 50, tenant="b")
    first = claim(sessions, 4, owner="x")
    assert per_batch(first) == {a: 2, b: 2}
    with transaction(sessions) as s:
        for item in first:
            if item.batch_id == a:
                images.record_success(s, item.id, "x", success())
    # a holds no live lease now, b holds 2: a gets the next 2 before they share again.
    assert per_batch(claim(sessions, 2)) == {a: 2}
    assert per_batch(claim(sessions, 4)) == {a: 2, b: 2}


def test_one_statement_reads_every_batch_whatever_their_number(
    sessions: sessionmaker[Session],
) -> None:
    for index in range(60):
        new_batch(sessions, 2, tenant=f"t{index % 3}")
    statements: list[str] = []
    engine = sessions.kw["bind"]

    def count(*args: Any) -> None:
        if not args[2].startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE is no query
            statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        claimed = claim(sessions, 4)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(claimed) == 4 and len(per_batch(claimed)) == 4
    # One read of the field, then the options, one select, one update and one start mark
    # for the 4 batches served together: not a statement per batch, active or served.
    assert len(statements) <= 5, statements
