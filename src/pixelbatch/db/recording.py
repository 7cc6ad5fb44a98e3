"""Recording an image's outcome: the UPDATEs every finished image costs, prebuilt.

Recording runs once per image, so its statements are built once per shape of outcome (done,
failed) and run as plain Core: built anew for each image, with its values inline, the ORM
UPDATEs cost more CPU than decoding and encoding a 640 px image. Callers own the transaction;
one that records many images passes a :class:`BatchTotals`, so each batch's counters are
updated once for all its images rather than once per image.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, update
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
        .values({**values, "lease_until": None, "finished_at": finished})
        .returning(images.c.batch_id),
        copies=update(images)
        .where(
            images.c.duplicate_of == bindparam("p_image_id"),
            images.c.status == ImageStatus.PENDING,
        )
        .values({**values, "finished_at": finished}),
    )
    return _record_statements.setdefault(columns, built)


def record(
    session: Session,
    image_id: int,
    owner: str,
    values: dict[str, Any],
    batch_totals: dict[str, int],
    owed: BatchTotals | None = None,
    has_copies: bool = True,
) -> int:
    """Set an image's final values if we still hold its lease, copy them to the images of
    the same batch that repeat its URL (fetched once, recorded for each), and add
    ``batch_totals`` (what one image adds to the batch's counters) once per image recorded:
    now, or into ``owed`` for the caller to flush before it commits. ``has_copies`` False
    (the claim found no repeat of the image) spares the copies' UPDATE.
    Returns how many images were recorded (it and its copies; the metrics count them): 0,
    and nothing changed, when the lease was lost."""
    statements = _statements_for(tuple(values))
    params = {f"v_{name}": value for name, value in values.items()}
    params.update(p_image_id=image_id, p_owner=owner, p_now=utcnow())
    connection = session.connection()
    batch_id = connection.execute(statements.finish, params).scalar_one_or_none()
    if batch_id is None:
        return 0
    copies = connection.execute(statements.copies, params).rowcount if has_copies else 0
    count = 1 + int(copies)
    pending = owed if owed is not None else BatchTotals()
    pending.add(batch_id, batch_totals, count)
    if owed is None:
        pending.flush(session)
    return count
