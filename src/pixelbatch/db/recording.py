"""Recording an image's outcome: the three UPDATEs every finished image costs, prebuilt.

Recording runs once per image, so its statements are built once per shape of outcome (done,
failed) and run as plain Core: built anew for each image, with its values inline, the ORM
UPDATEs cost more CPU than decoding and encoding a 640 px image. Callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, Update, bindparam, update
from sqlalchemy.orm import Session

from pixelbatch.db.models import Batch, Image, ImageStatus, utcnow


@dataclass(frozen=True)
class _RecordStatements:
    finish: Update  # the image itself, if its lease is still ours
    copies: Update  # the pending images of its batch that repeat its URL
    count: Update  # the batch's counters


# One set per shape of outcome (its columns and counters); their cache keys are memoised.
_record_statements: dict[tuple[tuple[str, ...], tuple[str, ...]], _RecordStatements] = {}


def _statements_for(columns: tuple[str, ...], totals: tuple[str, ...]) -> _RecordStatements:
    key = (columns, totals)
    built = _record_statements.get(key)
    if built is not None:
        return built
    images = cast(Table, Image.__table__)
    batches = cast(Table, Batch.__table__)
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
        count=update(batches)
        .where(batches.c.id == bindparam("p_batch_id"))
        .values({name: batches.c[name] + bindparam(f"t_{name}") for name in totals}),
    )
    return _record_statements.setdefault(key, built)


def record(
    session: Session,
    image_id: int,
    owner: str,
    values: dict[str, Any],
    batch_totals: dict[str, int],
) -> int:
    """Set an image's final values if we still hold its lease, copy them to the images of
    the same batch that repeat its URL (fetched once, recorded for each), and add
    ``batch_totals`` (what one image adds to the batch's counters) once per image recorded.
    Returns how many images were recorded (it and its copies; the metrics count them): 0,
    and nothing changed, when the lease was lost."""
    statements = _statements_for(tuple(values), tuple(batch_totals))
    params = {f"v_{name}": value for name, value in values.items()}
    params.update(p_image_id=image_id, p_owner=owner, p_now=utcnow())
    connection = session.connection()
    batch_id = connection.execute(statements.finish, params).scalar_one_or_none()
    if batch_id is None:
        return 0
    copies = connection.execute(statements.copies, params).rowcount
    count = 1 + int(copies)
    connection.execute(
        statements.count,
        {"p_batch_id": batch_id, **{f"t_{n}": each * count for n, each in batch_totals.items()}},
    )
    return count
