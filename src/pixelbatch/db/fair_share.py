"""Who gets the next leases: priority first, then an even share per tenant, then per batch.

``claim_images`` asks :func:`contenders` for every active batch in one statement (its
priority, its tenant and how many live leases it holds now), then :func:`plan` hands the
slots out by water-filling: each slot goes to the tenant holding the fewest live leases
among the batches of the top level, and within that tenant to its batch holding the
fewest. Counting live leases rather than splitting each claim's limit evenly is what keeps
the shares even over time whatever the claim size: the embedded runner claims one image as
each slot frees up, a Celery chunk claims sixteen, and both see the same global picture.

Priority levels are strict: a level is served only when no batch of a higher level has
claimable work. So that ``low`` cannot starve forever behind a stream of ``normal`` work, a
``low`` batch that has waited longer than the aging time since its upload competes as
``normal``. ``normal`` is not lifted: ``high`` is meant for small urgent batches and can be
capped per API key, so an old normal batch never slows a new high one down.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Select, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from pixelbatch.db.models import ACTIVE_BATCH_STATES, Batch, Image, ImageStatus, Priority, utcnow


@dataclass
class Contender:
    """An active batch as the next claim sees it. ``live`` grows as the claim leases."""

    batch_id: uuid.UUID
    tenant: str
    level: int
    created_at: datetime
    live: int
    waiting: bool


# The claim's moment, bound per execution: the claim's statements are built once (below and
# in ``db.images``), since building and hashing them anew cost more CPU than running them.
NOW = bindparam("now", type_=Image.__table__.c.lease_until.type)


def claimable_now(now: datetime | BindParameter[datetime]) -> Any:
    """Images no live lease covers: pending, or leased by a holder whose lease ran out."""
    return and_(
        Image.duplicate_of.is_(None),
        or_(
            Image.status == ImageStatus.PENDING,
            and_(Image.status == ImageStatus.PROCESSING, Image.lease_until < now),
        ),
    )


def count_claimable(session: Session, at_most: int) -> int:
    """Images of active batches that no live lease covers (work waiting for a worker),
    counted up to ``at_most``. The sweeper only needs to know how many work messages to
    queue, at most a fan-out's worth; counting a 100,000-image backlog in full took 24 ms of
    every sweep of every worker on PostgreSQL."""
    waiting = (
        select(Image.id)
        .join(Batch, Batch.id == Image.batch_id)
        .where(Batch.status.in_(ACTIVE_BATCH_STATES), claimable_now(utcnow()))
        .limit(at_most)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(waiting)) or 0)


def effective_level(
    priority: Priority, created_at: datetime, now: datetime, aging_seconds: float | None
) -> int:
    """The level a batch competes at: its priority's, or ``normal``'s for a ``low`` batch
    that has waited longer than ``aging_seconds`` (None: never lifted)."""
    if (
        priority == Priority.LOW
        and aging_seconds is not None
        and now - created_at > timedelta(seconds=aging_seconds)
    ):
        return Priority.NORMAL.rank
    return priority.rank


def _contenders_statement(*, one_batch: bool) -> Select[Any]:
    """Every active batch (or the one bound as ``batch_id``) with its live lease count and
    whether it has claimable images, in one statement whatever the number of batches.

    Written so that its cost follows the number of active batches and of images in flight,
    never the number of images: the live counts are one aggregate over the live leases
    (``ix_images_status_lease``), and whether a batch has work is a ``LIMIT 1`` probe per
    batch on ``ix_images_batch_status_code`` (an ``EXISTS`` with an ``OR`` lets PostgreSQL hash
    a scan of the whole images table instead).
    """
    live = (
        select(Image.batch_id, func.count().label("live"))
        .where(Image.status == ImageStatus.PROCESSING, Image.lease_until >= NOW)
        .group_by(Image.batch_id)
        .subquery()
    )

    def probe(*conditions: Any) -> Any:
        return (
            select(Image.id)
            .where(Image.batch_id == Batch.id, Image.duplicate_of.is_(None), *conditions)
            .limit(1)
            .correlate(Batch)
            .scalar_subquery()
        )

    pending = probe(Image.status == ImageStatus.PENDING)
    expired = probe(Image.status == ImageStatus.PROCESSING, Image.lease_until < NOW)
    query = (
        select(
            Batch.id,
            Batch.tenant,
            Batch.priority,
            Batch.created_at,
            func.coalesce(live.c.live, 0).label("live"),
            # COALESCE runs the second probe only for a batch with nothing pending.
            func.coalesce(pending, expired).label("work"),
        )
        .outerjoin(live, live.c.batch_id == Batch.id)
        .where(Batch.status.in_(ACTIVE_BATCH_STATES))
    )
    if one_batch:
        query = query.where(Batch.id == bindparam("batch_id"))
    return query


_CONTENDERS = _contenders_statement(one_batch=False)
_CONTENDERS_OF_BATCH = _contenders_statement(one_batch=True)
_OPTIONS = select(Batch.id, Batch.options).where(Batch.id.in_(bindparam("ids", expanding=True)))


def contenders(
    session: Session,
    now: datetime,
    *,
    aging_seconds: float | None,
    batch_id: uuid.UUID | None = None,
) -> list[Contender]:
    """Every active batch (or only ``batch_id``) as the next claim sees it
    (``_contenders_statement``)."""
    if batch_id is None:
        rows = session.connection().execute(_CONTENDERS, {"now": now})
    else:
        rows = session.connection().execute(
            _CONTENDERS_OF_BATCH, {"now": now, "batch_id": batch_id}
        )
    return [
        Contender(
            batch_id=row.id,
            tenant=row.tenant,
            level=effective_level(row.priority, row.created_at, now, aging_seconds),
            created_at=row.created_at,
            live=int(row.live),
            waiting=row.work is not None,
        )
        for row in rows
    ]


def options_of(session: Session, batch_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The processing options of the batches a claim serves (read only for those)."""
    if not batch_ids:
        return {}
    rows = session.connection().execute(_OPTIONS, {"ids": batch_ids})
    return {row.id: row.options for row in rows}


def plan(field: list[Contender], slots: int) -> list[tuple[Contender, int]]:
    """How many of ``slots`` to ask of which batch: all of them within the top level that
    has waiting work, each slot to the least-served tenant, then its least-served batch
    (ties: the oldest upload first). Batches found exhausted are marked ``waiting=False``
    by the caller, which plans again for what is left."""
    open_ = [c for c in field if c.waiting]
    if not open_ or slots <= 0:
        return []
    top = max(c.level for c in open_)
    tenant_load: dict[str, int] = defaultdict(int)
    for contender in field:
        if contender.level == top:
            tenant_load[contender.tenant] += contender.live
    by_tenant: dict[str, list[Contender]] = defaultdict(list)
    for contender in open_:
        if contender.level == top:
            by_tenant[contender.tenant].append(contender)
    oldest = {t: min(c.created_at for c in batches) for t, batches in by_tenant.items()}
    load = {c.batch_id: c.live for c in open_}
    takes: dict[uuid.UUID, int] = defaultdict(int)
    for _ in range(slots):
        tenant = min(by_tenant, key=lambda t: (tenant_load[t], oldest[t]))
        chosen = min(by_tenant[tenant], key=lambda c: (load[c.batch_id], c.created_at))
        takes[chosen.batch_id] += 1
        load[chosen.batch_id] += 1
        tenant_load[tenant] += 1
    order = sorted(
        (c for c in open_ if c.batch_id in takes), key=lambda c: (c.created_at, str(c.batch_id))
    )
    return [(c, takes[c.batch_id]) for c in order]
