"""The few queries that move state. Callers own the transaction; nothing here commits.

Every state change is a conditional UPDATE whose WHERE clause says which state it expects,
so a duplicate delivery, a lost lease or two workers racing change nothing twice: the
loser's UPDATE matches no row and it knows it lost.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from pixelbatch.db.models import (
    Batch,
    BatchStatus,
    DeliveryStatus,
    Image,
    ImageStatus,
    Product,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)

ACTIVE_BATCH_STATES = (BatchStatus.PENDING, BatchStatus.PROCESSING)


@dataclass(frozen=True)
class NewProduct:
    row_number: int
    serial: str
    name: str
    extra: list[str]
    urls: Sequence[str]


@dataclass(frozen=True)
class ClaimedImage:
    id: int
    batch_id: uuid.UUID
    url: str
    row_number: int
    position: int
    options: dict[str, Any]


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


def insert_products(session: Session, batch_id: uuid.UUID, products: Sequence[NewProduct]) -> int:
    """Insert one slice of a catalog; returns the number of images it added.

    This runs while an uploader waits for its 202 and a catalog can be 100,000 rows, so it
    bypasses the ORM and SQLAlchemy's per-row parameter handling (tens of µs a row): rows go
    to the driver ready-made, by COPY on PostgreSQL (psycopg's executemany costs a round
    trip per row) and by one executemany per table on SQLite. Product ids are read back by
    the unique (batch, row number) instead of with RETURNING, which neither COPY nor
    SQLite's executemany offers. Rows are written in the order given, CSV order, so image
    ids follow it too (``link_duplicate_urls`` and the claim order rely on that).
    """
    if not products:
        return 0
    session.flush()  # the batch row must exist before the rows that reference it
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        return _insert_by_copy(conn, batch_id, products)
    return _insert_by_executemany(conn, batch_id, products)


_PRODUCT_COLUMNS = ("batch_id", "row_number", "serial", "name", "extra")
_IMAGE_COLUMNS = ("batch_id", "product_id", "position", "url", "status", "attempts")
# Every column with a default must be listed: these inserts bypass SQLAlchemy's defaults
# (tests/unit/test_bulk_insert.py checks the models against these lists).
_COPY_PRODUCTS = f"COPY products ({', '.join(_PRODUCT_COLUMNS)}) FROM STDIN"
_COPY_IMAGES = f"COPY images ({', '.join(_IMAGE_COLUMNS)}) FROM STDIN"
_SELECT_IDS = {
    "qmark": "SELECT row_number, id FROM products"
    " WHERE batch_id = ? AND row_number BETWEEN ? AND ?",
    "pyformat": "SELECT row_number, id FROM products"
    " WHERE batch_id = %s AND row_number BETWEEN %s AND %s",
}
# What COPY's text format needs escaped; nothing else is special in it (we never send NULL).
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_encode_json_string = json.encoder.encode_basestring_ascii
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _insert_by_copy(conn: Connection, batch_id: uuid.UUID, products: Sequence[NewProduct]) -> int:
    """PostgreSQL: two COPYs in the session's transaction, about twice as fast as a
    multi-row INSERT. The slice's text is formatted here in one pass (psycopg's write_row
    costs µs a row) and escaped only if some value needs it."""
    driver: Any = conn.connection.driver_connection  # psycopg.Connection
    batch = str(batch_id)
    status = _bind_processor(conn, Image.__table__.c.status)(ImageStatus.PENDING)
    extras = [_json_list(p.extra) for p in products]
    texts = [*extras, *(p.serial for p in products), *(p.name for p in products)]
    texts += [url for p in products for url in p.urls]
    esc = _copy_escape if _COPY_SPECIAL.search("".join(texts)) else _identity
    with driver.cursor() as cursor:
        with cursor.copy(_COPY_PRODUCTS) as copy:
            copy.write(
                "".join(
                    [
                        f"{batch}\t{p.row_number}\t{esc(p.serial)}\t{esc(p.name)}\t{esc(extra)}\n"
                        for p, extra in zip(products, extras, strict=True)
                    ]
                )
            )
        ids = _product_ids(cursor, _SELECT_IDS["pyformat"], batch_id, products)
        lines = [
            f"{batch}\t{ids[p.row_number]}\t{position}\t{esc(url)}\t{status}\t0\n"
            for p in products
            for position, url in enumerate(p.urls)
        ]
        if lines:
            with cursor.copy(_COPY_IMAGES) as copy:
                copy.write("".join(lines))
    return len(lines)


def _insert_by_executemany(
    conn: Connection, batch_id: uuid.UUID, products: Sequence[NewProduct]
) -> int:
    """SQLite: rows go to the DB-API cursor already in its own types, so sqlite3's
    executemany loops in C. Only the constant columns and ``extra`` need SQLAlchemy's
    conversion; integers and text pass as they are."""
    batch = _bind_processor(conn, Product.__table__.c.batch_id)(batch_id)
    conn.exec_driver_sql(
        _positional_insert(conn, Product, _PRODUCT_COLUMNS),
        [(batch, p.row_number, p.serial, p.name, _json_list(p.extra)) for p in products],
    )
    driver: Any = conn.connection.driver_connection  # the DB-API connection, in our transaction
    with contextlib.closing(driver.cursor()) as cursor:
        ids = _product_ids(cursor, _SELECT_IDS[conn.dialect.paramstyle], batch, products)
    status = _bind_processor(conn, Image.__table__.c.status)(ImageStatus.PENDING)
    rows = [
        (batch, ids[p.row_number], position, url, status, 0)
        for p in products
        for position, url in enumerate(p.urls)
    ]
    if rows:
        conn.exec_driver_sql(_positional_insert(conn, Image, _IMAGE_COLUMNS), rows)
    return len(rows)


def _product_ids(
    cursor: Any, statement: str, batch: Any, products: Sequence[NewProduct]
) -> dict[int, int]:
    """Row number -> id of the products just written, in one query on the unique index.
    The range may take in rows of other slices (if a caller interleaves them): harmless."""
    rows = [p.row_number for p in products]
    cursor.execute(statement, (batch, min(rows), max(rows)))
    return dict(cursor.fetchall())


def _json_list(values: list[str]) -> str:
    """``extra`` as the JSON text SQLAlchemy's JSON type would store, ``json.dumps(values)``,
    built from the C string encoder json.dumps itself uses: json.dumps sets up an encoder
    per call, which costs more than the encoding of a few short strings."""
    try:
        return "[" + ", ".join(map(_encode_json_string, values)) + "]"
    except TypeError:  # not all strings: let json.dumps deal with it
        return json.dumps(values)


def _copy_escape(text: str) -> str:
    return text.translate(_COPY_ESCAPES)


def _identity(value: Any) -> Any:
    return value


def _bind_processor(conn: Connection, column: ColumnElement[Any]) -> Callable[[Any], Any]:
    """The conversion SQLAlchemy applies to a value of ``column`` before the driver sees it
    (a UUID becomes hex text on SQLite, an enum member its name)."""
    processor = column.type.bind_processor(conn.dialect)
    return processor if processor is not None else _identity


def _positional_insert(
    conn: Connection, entity: type[Product] | type[Image], columns: tuple[str, ...]
) -> str:
    """The dialect's own INSERT text, checked to take exactly ``columns`` in that order."""
    compiled = insert(entity).compile(dialect=conn.dialect, column_keys=list(columns))
    if not compiled.positional or tuple(compiled.positiontup or ()) != columns:
        raise RuntimeError(f"unexpected INSERT parameters: {compiled.positiontup}")
    return str(compiled)


def claim_images(
    session: Session,
    *,
    owner: str,
    limit: int,
    lease_seconds: float,
    batch_id: uuid.UUID | None = None,
) -> list[ClaimedImage]:
    """Lease up to ``limit`` images that are pending or whose lease ran out.

    The limit is shared fairly across the active batches, oldest first, so one large batch
    cannot starve the others.
    """
    if limit <= 0:
        return []
    now = utcnow()
    batch_query = (
        select(Batch.id, Batch.options)
        .where(Batch.status.in_(ACTIVE_BATCH_STATES))
        .order_by(Batch.created_at)
        .limit(limit)
    )
    if batch_id is not None:
        batch_query = batch_query.where(Batch.id == batch_id)
    batches = session.execute(batch_query).all()
    if not batches:
        return []
    per_batch = max(1, -(-limit // len(batches)))
    claimed: list[ClaimedImage] = []
    # First an equal share each; then what is left goes to batches that had more to give.
    hungry = []
    for bid, options in batches:
        take = min(per_batch, limit - len(claimed))
        if take <= 0:
            break
        got = _claim_from_batch(session, bid, options, take, owner, now, lease_seconds)
        claimed.extend(got)
        if len(got) == take:
            hungry.append((bid, options))
    for bid, options in hungry:
        take = limit - len(claimed)
        if take <= 0:
            break
        claimed.extend(_claim_from_batch(session, bid, options, take, owner, now, lease_seconds))
    return claimed


def _claim_from_batch(
    session: Session,
    batch_id: uuid.UUID,
    options: dict[str, Any],
    take: int,
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> list[ClaimedImage]:
    query = (
        select(Image.id, Image.url, Image.position, Product.row_number)
        .join(Product, Product.id == Image.product_id)
        .where(Image.batch_id == batch_id, _claimable_now(now))
        .order_by(Image.id)
        .limit(take)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Image)
    rows = session.execute(query).all()
    if not rows:
        return []
    session.execute(
        update(Image)
        .where(Image.id.in_([r.id for r in rows]))
        .values(
            status=ImageStatus.PROCESSING,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=Image.attempts + 1,
        )
    )
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.PENDING)
        .values(status=BatchStatus.PROCESSING, started_at=now)
    )
    return [
        ClaimedImage(
            id=r.id,
            batch_id=batch_id,
            url=r.url,
            row_number=r.row_number,
            position=r.position,
            options=options,
        )
        for r in rows
    ]


def _claimable_now(now: datetime) -> Any:
    return and_(
        Image.duplicate_of.is_(None),
        or_(
            Image.status == ImageStatus.PENDING,
            and_(Image.status == ImageStatus.PROCESSING, Image.lease_until < now),
        ),
    )


def count_claimable(session: Session) -> int:
    """Images of active batches that no live lease covers: work waiting for a worker."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Image)
            .join(Batch, Batch.id == Image.batch_id)
            .where(Batch.status.in_(ACTIVE_BATCH_STATES), _claimable_now(utcnow()))
        )
        or 0
    )


def count_due_deliveries(session: Session) -> int:
    now = utcnow()
    return int(
        session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
            )
        )
        or 0
    )


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
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _record(
    session: Session, image_id: int, owner: str, values: dict[str, Any]
) -> tuple[uuid.UUID, int] | None:
    """Set an image's final values if we still hold its lease, and copy them to the images
    of the same batch that repeat its URL (fetched once, recorded for each). Returns the
    batch and how many images were recorded, or None when the lease was lost."""
    now = utcnow()
    batch_id = session.execute(
        update(Image)
        .where(
            Image.id == image_id,
            Image.status == ImageStatus.PROCESSING,
            Image.lease_owner == owner,
        )
        .values(**values, lease_until=None, finished_at=now)
        .returning(Image.batch_id)
    ).scalar_one_or_none()
    if batch_id is None:
        return None
    copies = session.execute(
        update(Image)
        .where(Image.duplicate_of == image_id, Image.status == ImageStatus.PENDING)
        .values(**values, finished_at=now)
    ).rowcount  # type: ignore[attr-defined]
    return batch_id, 1 + int(copies)


def record_success(session: Session, image_id: int, owner: str, outcome: ImageSuccess) -> bool:
    """Record a processed image once. False when the lease was lost to another worker."""
    recorded = _record(
        session,
        image_id,
        owner,
        {
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
            "duration_ms": outcome.duration_ms,
            "error_code": None,
            "error_message": None,
        },
    )
    if recorded is None:
        return False
    batch_id, count = recorded
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(
            images_done=Batch.images_done + count,
            bytes_in=Batch.bytes_in + outcome.bytes_in * count,
            bytes_out=Batch.bytes_out + outcome.bytes_out * count,
        )
    )
    return True


def record_failure(
    session: Session, image_id: int, owner: str, code: str, message: str, duration_ms: float
) -> bool:
    recorded = _record(
        session,
        image_id,
        owner,
        {
            "status": ImageStatus.FAILED,
            "error_code": code,
            "error_message": message,
            "duration_ms": duration_ms,
        },
    )
    if recorded is None:
        return False
    batch_id, count = recorded
    session.execute(
        update(Batch).where(Batch.id == batch_id).values(images_failed=Batch.images_failed + count)
    )
    return True


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


def claim_finalization(session: Session, batch_id: uuid.UUID, lease_seconds: float) -> bool:
    """Win the right to finalise a batch whose images are all recorded; only one caller does."""
    now = utcnow()
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status.in_(ACTIVE_BATCH_STATES),
            Batch.images_done + Batch.images_failed >= Batch.images_total,
            or_(Batch.finalizer_lease_until.is_(None), Batch.finalizer_lease_until < now),
        )
        .values(finalizer_lease_until=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def batches_ready_to_finalize(session: Session) -> list[uuid.UUID]:
    """Batches whose images are all recorded but that no live finaliser holds (crash recovery)."""
    now = utcnow()
    return list(
        session.scalars(
            select(Batch.id).where(
                Batch.status.in_(ACTIVE_BATCH_STATES),
                Batch.images_done + Batch.images_failed >= Batch.images_total,
                or_(Batch.finalizer_lease_until.is_(None), Batch.finalizer_lease_until < now),
            )
        )
    )


def output_rows_page(
    session: Session, batch_id: uuid.UUID, after_row: int, page_size: int
) -> list[tuple[Product, list[Image]]]:
    """One page of products with their images in CSV order; callers page by row number so
    memory stays flat and no transaction stays open across a whole large batch."""
    products = session.scalars(
        select(Product)
        .where(Product.batch_id == batch_id, Product.row_number > after_row)
        .order_by(Product.row_number)
        .limit(page_size)
    ).all()
    if not products:
        return []
    images: dict[int, list[Image]] = {p.id: [] for p in products}
    for image in session.scalars(
        select(Image).where(Image.product_id.in_(images.keys())).order_by(Image.position)
    ):
        images[image.product_id].append(image)
    return [(product, images[product.id]) for product in products]


def complete_batch(
    session: Session,
    batch_id: uuid.UUID,
    *,
    status: BatchStatus,
    output_key: str | None,
    message: str,
    webhook_payload: dict[str, Any] | None,
) -> bool:
    """Set the final state and, in the same transaction, put the webhook in the outbox."""
    now = utcnow()
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(ACTIVE_BATCH_STATES))
        .values(status=status, output_key=output_key, message=message, finished_at=now)
        .returning(Batch.webhook_url)
    )
    row = result.one_or_none()
    if row is None:
        return False
    if row.webhook_url and webhook_payload is not None:
        # A retried batch finishes again: a new event with its own id, history kept.
        earlier = session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.batch_id == batch_id)
        )
        session.execute(
            insert(WebhookDelivery).values(
                id=uuid.uuid4(),
                batch_id=batch_id,
                event_id=f"msg_{batch_id.hex}_{earlier or 0}",
                url=row.webhook_url,
                payload=webhook_payload,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return True


def cancel_batch(session: Session, batch_id: uuid.UUID) -> bool:
    """Cancel an active batch and its unfinished images. False when it is not active.

    Images are locked before the batch row, the order recording a result takes (image,
    then its batch's counters): the opposite order deadlocks PostgreSQL when a worker
    records an image of the batch at the moment it is cancelled. A savepoint undoes the
    images if the batch turns out to have finished meanwhile.
    """
    now = utcnow()
    with session.begin_nested() as savepoint:
        session.execute(
            update(Image)
            .where(
                Image.batch_id == batch_id,
                Image.status.in_((ImageStatus.PENDING, ImageStatus.PROCESSING)),
            )
            .values(status=ImageStatus.CANCELLED, lease_until=None)
        )
        result = session.execute(
            update(Batch)
            .where(Batch.id == batch_id, Batch.status.in_(ACTIVE_BATCH_STATES))
            .values(status=BatchStatus.CANCELLED, finished_at=now, message="cancelled by client")
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            savepoint.rollback()
            return False
    return True


def retry_failed_images(session: Session, batch_id: uuid.UUID) -> int:
    """Put a finished batch's failed images back in the queue; returns how many."""
    batch = session.get(Batch, batch_id, with_for_update=True)
    if batch is None or not batch.status.is_final or batch.status == BatchStatus.CANCELLED:
        return 0
    result = session.execute(
        update(Image)
        .where(Image.batch_id == batch_id, Image.status == ImageStatus.FAILED)
        .values(status=ImageStatus.PENDING, error_code=None, error_message=None, attempts=0)
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    if count:
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=BatchStatus.PROCESSING,
                images_failed=Batch.images_failed - count,
                finished_at=None,
                finalizer_lease_until=None,
                output_key=None,
                message=None,
            )
        )
    return count


def claim_due_deliveries(
    session: Session, *, limit: int, lease_seconds: float
) -> list[WebhookDelivery]:
    now = utcnow()
    query = (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    deliveries = list(session.scalars(query))
    for delivery in deliveries:
        delivery.lease_until = now + timedelta(seconds=lease_seconds)
    return deliveries


def record_delivery_attempt(
    session: Session,
    delivery_id: uuid.UUID,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
    delivered: bool,
    next_attempt_at: datetime | None,
) -> None:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            number=delivery.attempts,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
    )
    delivery.last_status_code = status_code
    delivery.last_error = error
    delivery.lease_until = None
    if delivered:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = utcnow()
    elif next_attempt_at is None:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.next_attempt_at = next_attempt_at
