"""Recording an image's outcome: the UPDATEs every finished image costs, prebuilt.

Recording runs once per image, so its statements are built once per shape of outcome (done,
failed) and run as plain Core: built anew for each image, with its values inline, the ORM
UPDATEs cost more CPU than decoding and encoding a 640 px image. The images recorded
together go out as one executemany per shape, and each batch's counters are updated once
for all its images rather than once per image (:class:`BatchTotals`). Callers own the
transaction.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, Update, bindparam, select, update
from sqlalchemy.orm import Session

from pixelbatch.db.models import Batch, Image, ImageStatus, utcnow


@dataclass(frozen=True)
class _RecordStatements:
    finish: Update  # the image itself, if its lease is still ours
    copies: Update  # the pending images of its batch that repeat its URL


# One set per shape of outcome (its columns); their cache keys are memoised.
_record_statements: dict[tuple[str, ...], _RecordStatements] = {}
# The batch counters' UPDATE, one per set of counters it adds to.
_count_statements: dict[tuple[str, ...], Update] = {}


def _count_statement(totals: tuple[str, ...]) -> Update:
    built = _count_statements.get(totals)
    if built is None:
        batches = cast(Table, Batch.__table__)
        built = (
            update(batches)
            .where(batches.c.id == bindparam("p_batch_id"))
            .values({name: batches.c[name] + bindparam(f"t_{name}") for name in totals})
        )
        built = _count_statements.setdefault(totals, built)
    return built


class BatchTotals:
    """What the images recorded in one transaction add to their batches' counters, written
    by :meth:`flush` with one UPDATE per batch."""

    def __init__(self) -> None:
        self._owed: dict[uuid.UUID, Counter[str]] = {}

    def add(self, batch_id: uuid.UUID, totals: dict[str, int], times: int) -> None:
        owed = self._owed.setdefault(batch_id, Counter())
        for name, each in totals.items():
            owed[name] += each * times

    def flush(self, session: Session) -> None:
        connection = session.connection()
        for batch_id, owed in self._owed.items():
            names = tuple(sorted(owed))
            params = {f"t_{name}": owed[name] for name in names}
            connection.execute(_count_statement(names), {"p_batch_id": batch_id, **params})
        self._owed.clear()


def _statements_for(columns: tuple[str, ...]) -> _RecordStatements:
    built = _record_statements.get(columns)
    if built is not None:
        return built
    images = cast(Table, Image.__table__)
    values = {name: bindparam(f"v_{name}", type_=images.c[name].type) for name in columns}
    finished = bindparam("p_now", type_=images.c.finished_at.type)
    built = _RecordStatements(
        finish=update(images)
        .where(
            images.c.id == bindparam("p_image_id"),
            images.c.status == ImageStatus.PROCESSING,
            images.c.lease_owner == bindparam("p_owner"),
        )
        .values({**values, "lease_until": None, "finished_at": finished}),
        copies=update(images)
        .where(
            images.c.duplicate_of == bindparam("p_image_id"),
            images.c.status == ImageStatus.PENDING,
        )
        .values({**values, "finished_at": finished}),
    )
    return _record_statements.setdefault(columns, built)


@dataclass(frozen=True)
class Finished:
    """One image's final values: ``values`` for its row, ``batch_totals`` for what it adds
    to its batch's counters, ``has_copies`` False when the claim found no repeat of its URL
    (the copies' UPDATE is then spared)."""

    image_id: int
    batch_id: uuid.UUID
    values: dict[str, Any]
    batch_totals: dict[str, int]
    has_copies: bool = True


def record(session: Session, owner: str, finished: Sequence[Finished]) -> list[int]:
    """Set each image's final values if we still hold its lease, copy them to the images of
    its batch that repeat its URL (fetched once, recorded for each), and add its
    ``batch_totals`` once per image recorded, with one UPDATE per batch.

    The images of one shape (same columns) go out as one executemany: per statement,
    SQLAlchemy's execution costs more than SQLite's own work, and a group records a dozen
    images. Returns, for each, how many images it recorded (it and its copies; the metrics
    count them): 0, and nothing changed, when its lease was lost, and 0 for an image listed
    again after its first place (recorded once, with its first outcome)."""
    now = utcnow()
    connection = session.connection()
    counts = [0] * len(finished)
    shapes: dict[tuple[str, ...], list[int]] = {}
    seen: set[int] = set()
    for index, item in enumerate(finished):
        if item.image_id in seen:
            continue  # listed again (a duplicate delivery): its first outcome is the one
        seen.add(item.image_id)
        shapes.setdefault(tuple(item.values), []).append(index)
    owed = BatchTotals()
    for columns, indexes in shapes.items():
        statements = _statements_for(columns)
        params = [_params(finished[i], owner, now) for i in indexes]
        changed = connection.execute(statements.finish, params).rowcount
        held = set(indexes)
        if changed != len(indexes):
            group = [finished[i] for i in indexes]
            held = {indexes[p] for p in _held(connection, group, owner, now)} if changed else set()
        for index, item_params in zip(indexes, params, strict=True):
            if index not in held:
                continue
            item = finished[index]
            copies = 0
            if item.has_copies:
                copies = connection.execute(statements.copies, item_params).rowcount
            counts[index] = 1 + int(copies)
            owed.add(item.batch_id, item.batch_totals, counts[index])
    owed.flush(session)
    return counts


def _params(item: Finished, owner: str, now: datetime) -> dict[str, Any]:
    params = {f"v_{name}": value for name, value in item.values.items()}
    params.update(p_image_id=item.image_id, p_owner=owner, p_now=now)
    return params


def _held(connection: Connection, group: list[Finished], owner: str, now: datetime) -> set[int]:
    """Which of ``group`` (positions) an executemany recorded when it recorded fewer than
    all: their rows now carry our owner and this recording's time, which no other statement
    wrote (each image is in one statement of a recording: ``record`` drops its repeats)."""
    images = cast(Table, Image.__table__)
    recorded = set(
        connection.execute(
            select(images.c.id).where(
                images.c.id.in_({item.image_id for item in group}),
                images.c.lease_owner == owner,
                images.c.finished_at == bindparam("p_now", now, type_=images.c.finished_at.type),
            )
        ).scalars()
    )
    return {position for position, item in enumerate(group) if item.image_id in recorded}
