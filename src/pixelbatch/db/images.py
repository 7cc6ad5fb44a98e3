"""The image state machine: claim (by priority, fairly), renew, release, record once.

Every change is a conditional UPDATE whose WHERE clause says which state it expects, so a
duplicate delivery, a lost lease or two workers racing change nothing twice: the loser's
UPDATE matches no row and it knows it lost. Callers own the transaction; nothing here commits.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Integer,
    Select,
    bindparam,
    exists,
    func,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, aliased

from pixelbatch.db import batch_lifecycle, fair_share, recording
from pixelbatch.db.models import (
    Image,
    ImageStatus,
    Product,
    utcnow,
)


@dataclass(frozen=True)
class ClaimedImage:
    id: int
    batch_id: uuid.UUID
    url: str
    row_number: int
    position: int
    options: dict[str, Any]
    # The level its batch was leased at (Priority.rank, aging included): an embedded
    # worker serves its own queues in this order too.
    priority: int = 1
    # When its batch was accepted and when this lease began: the queue stage of the metrics.
    queued_at: datetime | None = None
    claimed_at: datetime | None = None
    # Other images of its batch repeat its URL and take its result (``link_duplicate_urls``,
    # at intake, before any claim): without them, recording skips their UPDATE.
    has_copies: bool = True


@dataclass(frozen=True)
class ImageSuccess:
    output_key: str
    content_type: str
    bytes_in: int
    bytes_out: int
    width: int
    height: int
    source_format: str
    source_quality: int | None
    output_quality: int | None
    duration_ms: float
    # The source itself was stored, metadata stripped: a re-encode was not smaller.
    kept_original: bool = False

    @property
    def grew(self) -> bool:
        """Bigger than the source: only an asked-for format or size change does that."""
        return self.bytes_out > self.bytes_in


def claim_images(
    session: Session,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    batch_id: uuid.UUID | None = None,
    aging_seconds: float | None = None,
) -> list[ClaimedImage]:
    """Lease up to ``limit`` images that are pending or whose lease ran out.

    Higher priorities first; within the top level that has work, an even share per tenant,
    then per batch, counted in live leases (``db.fair_share``). ``aging_seconds``: how long
    a ``low`` batch waits before it competes as ``normal`` (None: never). A few statements
    whatever the number of batches: one reads the field, then per planning round one
    reads the options of the batches served and ``_claim_planned`` leases from all of them.
    """
    if limit <= 0:
        return []
    session.flush()  # the prebuilt statements run on the connection: no autoflush there
    now = utcnow()
    field = fair_share.contenders(session, now, aging_seconds=aging_seconds, batch_id=batch_id)
    claimed: list[ClaimedImage] = []
    options: dict[uuid.UUID, dict[str, Any]] = {}
    while len(claimed) < limit:
        planned = fair_share.plan(field, limit - len(claimed))
        if not planned:
            break
        unknown = [c.batch_id for c, _ in planned if c.batch_id not in options]
        options.update(fair_share.options_of(session, unknown))
        got = _claim_planned(session, planned, options, owner, now, lease_seconds)
        claimed.extend(got)
        per_batch = Counter(item.batch_id for item in got)
        for contender, take in planned:
            contender.live += per_batch[contender.batch_id]
            if per_batch[contender.batch_id] < take:
                # Exhausted (or the rest is locked by another claimer): plan without it.
                contender.waiting = False
    return claimed


# SQLite allows at most 500 terms in a compound SELECT; a claim rarely plans more than a
# few dozen batches, but a large CHUNK_SIZE could.
UNION_TERMS = 200


@functools.lru_cache(maxsize=64)
def _claim_statement(terms: int, postgres: bool) -> Select[Any] | CompoundSelect[Any]:
    """The first ``take_<n>`` claimable images of each batch ``batch_<n>``, n < ``terms``.

    Built once per number of terms: a claim runs every few images, and building and hashing
    these statements anew cost more CPU than the database spent on them."""
    copy = aliased(Image)
    has_copies = exists().where(copy.duplicate_of == Image.id).label("has_copies")
    parts: list[Select[*tuple[Any, ...]]] = []
    for n in range(terms):
        part = (
            select(
                Image.id, Image.batch_id, Image.url, Image.position, Product.row_number, has_copies
            )
            .join(Product, Product.id == Image.product_id)
            .where(
                Image.batch_id == bindparam(f"batch_{n}"), fair_share.claimable_now(fair_share.NOW)
            )
            .order_by(Image.id)
            .limit(bindparam(f"take_{n}", type_=Integer))
        )
        if postgres:
            part = part.with_for_update(skip_locked=True, of=Image)
        parts.append(part)
    return parts[0] if terms == 1 else union_all(*(select(p.subquery()) for p in parts))


_LEASE = (
    update(Image)
    .where(Image.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=ImageStatus.PROCESSING,
        lease_owner=bindparam("owner"),
        lease_until=bindparam("until"),
        attempts=Image.attempts + 1,
    )
)


def _claim_planned(
    session: Session,
    planned: list[tuple[fair_share.Contender, int]],
    options: dict[uuid.UUID, dict[str, Any]],
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> list[ClaimedImage]:
    """Lease what ``planned`` asks of each batch: one SELECT (a ``UNION ALL`` of each
    batch's first claimable images, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), one UPDATE,
    one start mark, however many batches the plan names."""
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    rows: list[Any] = []
    for start in range(0, len(planned), UNION_TERMS):
        terms = planned[start : start + UNION_TERMS]
        params: dict[str, Any] = {"now": now}
        for n, (contender, take) in enumerate(terms):
            params[f"batch_{n}"] = contender.batch_id
            params[f"take_{n}"] = take
        rows.extend(conn.execute(_claim_statement(len(terms), postgres), params).all())
    if not rows:
        return []
    conn.execute(
        _LEASE,
        {
            "ids": [r.id for r in rows],
            "owner": owner,
            "until": now + timedelta(seconds=lease_seconds),
        },
    )
    batch_lifecycle.mark_started(session, {r.batch_id for r in rows}, now)
    levels = {contender.batch_id: contender.level for contender, _ in planned}
    created = {contender.batch_id: contender.created_at for contender, _ in planned}
    return [
        ClaimedImage(
            id=r.id,
            batch_id=r.batch_id,
            url=r.url,
            row_number=r.row_number,
            position=r.position,
            options=options[r.batch_id],
            priority=levels[r.batch_id],
            queued_at=created[r.batch_id],
            claimed_at=now,
            has_copies=bool(r.has_copies),
        )
        for r in rows
    ]


def renew_leases(session: Session, *, owner: str, ids: Iterable[int], lease_seconds: float) -> int:
    id_list = list(ids)
    if not id_list:
        return 0
    result = session.execute(
        update(Image)
        .where(
            Image.id.in_(id_list),
            Image.lease_owner == owner,
            Image.status == ImageStatus.PROCESSING,
        )
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def release_leases(session: Session, owner: str, ids: Iterable[int] | None = None) -> int:
    """Hand an owner's unfinished images (all of them, or those of ``ids``) back to the queue
    at once, so a worker that stops cleanly, or gives up on an image it cannot record, does
    not leave them waiting for their leases to run out. Recorded images are left alone."""
    query = update(Image).where(Image.lease_owner == owner, Image.status == ImageStatus.PROCESSING)
    if ids is not None:
        id_list = list(ids)
        if not id_list:
            return 0
        query = query.where(Image.id.in_(id_list))
    result = session.execute(
        query.values(status=ImageStatus.PENDING, lease_owner=None, lease_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def still_held(session: Session, image_id: int, owner: str) -> bool:
    """Whether ``owner`` still holds the image's lease, so its result would be recorded: False
    once its batch was cancelled (the image is CANCELLED) or another worker took it over."""
    held = session.scalar(
        select(Image.id).where(
            Image.id == image_id,
            Image.status == ImageStatus.PROCESSING,
            Image.lease_owner == owner,
        )
    )
    return held is not None


def held_of(session: Session, ids: Iterable[int], owner: str) -> set[int]:
    """Which of ``ids`` ``owner`` still holds (``still_held`` for many images in one query)."""
    id_list = list(ids)
    if not id_list:
        return set()
    return set(
        session.scalars(
            select(Image.id).where(
                Image.id.in_(id_list),
                Image.status == ImageStatus.PROCESSING,
                Image.lease_owner == owner,
            )
        )
    )


def cancelled_or_gone(session: Session, image_id: int) -> bool:
    """Whether the image will never be recorded as done: cancelled, or deleted with its
    batch. (An image another worker took over is neither: its output key is shared.)"""
    status = session.scalar(select(Image.status).where(Image.id == image_id))
    return status is None or status == ImageStatus.CANCELLED


def lease_owners(session: Session, batch_id: uuid.UUID | None = None) -> list[str]:
    """The owners holding leases (of one batch's images, or of any): who is working now,
    or was when it died."""
    query = (
        select(Image.lease_owner)
        .distinct()
        .where(Image.status == ImageStatus.PROCESSING, Image.lease_owner.is_not(None))
    )
    if batch_id is not None:
        query = query.where(Image.batch_id == batch_id)
    return [owner for owner in session.scalars(query) if owner is not None]


def success_values(outcome: ImageSuccess) -> tuple[dict[str, Any], dict[str, int]]:
    """A processed image's final columns, and what it adds to its batch's counters."""
    values = {
        "status": ImageStatus.DONE,
        "output_key": outcome.output_key,
        "content_type": outcome.content_type,
        "bytes_in": outcome.bytes_in,
        "bytes_out": outcome.bytes_out,
        "width": outcome.width,
        "height": outcome.height,
        "source_format": outcome.source_format,
        "source_quality": outcome.source_quality,
        "output_quality": outcome.output_quality,
        "kept_original": outcome.kept_original,
        "duration_ms": outcome.duration_ms,
        "error_code": None,
        "error_message": None,
    }
    totals = {
        "images_done": 1,
        "bytes_in": outcome.bytes_in,
        "bytes_out": outcome.bytes_out,
        "images_kept_original": int(outcome.kept_original),
        "images_grew": int(outcome.grew),
    }
    return values, totals


def failure_values(
    code: str, message: str, duration_ms: float
) -> tuple[dict[str, Any], dict[str, int]]:
    """A failed image's final columns, and what it adds to its batch's counters."""
    values = {
        "status": ImageStatus.FAILED,
        "error_code": code,
        "error_message": message,
        "duration_ms": duration_ms,
    }
    return values, {"images_failed": 1}


def record_success(session: Session, image_id: int, owner: str, outcome: ImageSuccess) -> int:
    """Record one processed image on its own (``recording.record``, which the workers call
    for a group): how many images that recorded, 0 when the lease was lost."""
    return _record_alone(session, image_id, owner, *success_values(outcome))


def record_failure(
    session: Session, image_id: int, owner: str, code: str, message: str, duration_ms: float
) -> int:
    """Record one failed image, as ``record_success``."""
    return _record_alone(session, image_id, owner, *failure_values(code, message, duration_ms))


def _record_alone(
    session: Session, image_id: int, owner: str, values: dict[str, Any], totals: dict[str, int]
) -> int:
    batch_id = session.scalar(select(Image.batch_id).where(Image.id == image_id))
    if batch_id is None:
        return 0
    finished = recording.Finished(image_id, batch_id, values, totals)
    return recording.record(session, owner, [finished])[0]


def link_duplicate_urls(session: Session, batch_id: uuid.UUID) -> int:
    """Point every repeat of a URL within a batch at its first occurrence, so it is fetched
    and processed once. Returns how many images are repeats."""
    first = (
        select(func.min(Image.id))
        .where(Image.batch_id == batch_id)
        .group_by(Image.url)
        .having(func.count() > 1)
    )
    primaries = select(Image.id, Image.url).where(Image.id.in_(first)).subquery()
    result = session.execute(
        update(Image)
        .where(
            Image.batch_id == batch_id,
            Image.url == primaries.c.url,
            Image.id != primaries.c.id,
        )
        .values(duplicate_of=primaries.c.id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
