"""SQLAlchemy models.

Batches have random UUID keys because their id is public (the API's ``request_id``) and must
not be guessable. Products and images use integer keys: a batch can hold a million images,
and they are only ever addressed through their batch.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
IdType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are always UTC and always aware, even on SQLite, which stores them naive."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class BatchStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self not in ACTIVE_BATCH_STATES


ACTIVE_BATCH_STATES = (BatchStatus.PENDING, BatchStatus.PROCESSING)


class Priority(enum.StrEnum):
    """How soon a batch's images are leased: every claim serves the highest level that has
    work first (``db.images.claim_images``; ``low`` is lifted after waiting, see there)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return PRIORITY_RANKS[self]


PRIORITY_RANKS = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}


class ImageStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored by value (the API's spelling: "low", not "LOW"); for the older enums the
    # names and values are the same.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


class ApiKey(Base):
    """A client's key. Only a hash is stored; the key itself is shown once at creation.

    The webhook secret is kept in clear because signing needs it; it is per client so a
    receiver can verify that a webhook came from pixelbatch on its behalf.
    """

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The highest priority this key's uploads may ask for; None: any.
    max_priority: Mapped[Priority | None] = mapped_column(_enum(Priority, "priority"))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_tenant_idempotency_key", "tenant", "idempotency_key", unique=True),
        Index("ix_batches_tenant_created", "tenant", "created_at"),
        # Status first, for listings by status; with the output key, the finaliser's poll
        # finds the cancelled batches still without their CSV in the index alone, instead of
        # visiting every batch ever cancelled (migration 0010).
        Index("ix_batches_status_output", "status", "output_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status: Mapped[BatchStatus] = mapped_column(
        _enum(BatchStatus, "batch_status"), default=BatchStatus.PENDING
    )
    # "" when API keys are off; every query filters on it when they are on.
    tenant: Mapped[str] = mapped_column(String(64), default="", server_default="")
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # SHA-256 of what was asked (file, options, webhook) when a key was given: the same key
    # with another request is refused rather than answered with this batch.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    input_filename: Mapped[str] = mapped_column(String(255))
    input_key: Mapped[str] = mapped_column(String(255))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[Priority] = mapped_column(
        _enum(Priority, "priority"), default=Priority.NORMAL, server_default=Priority.NORMAL.value
    )
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    extra_columns: Mapped[list[str]] = mapped_column(JSON)
    # The input CSV's dialect ({"delimiter", "bom"}), repeated by the output CSV; None on
    # batches stored before it was recorded (they get a plain comma-separated output).
    csv_dialect: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    products_total: Mapped[int] = mapped_column(Integer, default=0)
    images_total: Mapped[int] = mapped_column(Integer, default=0)
    images_done: Mapped[int] = mapped_column(Integer, default=0)
    images_failed: Mapped[int] = mapped_column(Integer, default=0)
    # Done images that came out no smaller than their source: the source kept (a re-encode
    # was not smaller), or grown by a format or size change that was asked for.
    images_kept_original: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    images_grew: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    output_key: Mapped[str | None] = mapped_column(String(255))
    # When the expiring (presigned or signed) URLs in the output CSV stop working: the
    # earliest expiry of those written at the last finalisation; None when they never expire.
    output_urls_expire_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message: Mapped[str | None] = mapped_column(Text)
    # The base URL the upload reached the API through (when PUBLIC_URL was unset): the
    # base of the batch's status, output CSV and file URLs, whoever builds them later.
    public_url: Mapped[str | None] = mapped_column(Text)
    # Set by the one worker that wins the right to finalise; a lease so a crash mid-way
    # lets another worker take over.
    finalizer_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (Index("ix_products_batch_row", "batch_id", "row_number", unique=True),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    # No foreign key (dropped on PostgreSQL by migration 0011, which says why; SQLite
    # databases keep theirs, see migrate.SQLITE_ONLY_KEYS): products and images are written
    # in their batch's own transaction (db.bulk) and deleted child first (db.batch_removal).
    batch_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    row_number: Mapped[int] = mapped_column(Integer)
    serial: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    extra: Mapped[list[str]] = mapped_column(JSON)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_batch_status_code", "batch_id", "status", "error_code"),
        Index("ix_images_status_lease", "status", "lease_until"),
        Index("ix_images_product_position", "product_id", "position", unique=True),
        # Repeats only: looked up by value, never as NULL (migration 0011).
        Index(
            "ix_images_duplicate_of",
            "duplicate_of",
            postgresql_where=text("duplicate_of IS NOT NULL"),
            sqlite_where=text("duplicate_of IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    # No foreign keys to the batch or the product: see Product.batch_id.
    batch_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    product_id: Mapped[int] = mapped_column(IdType)
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    # Set on a repeat of a URL already in the batch: it is recorded with that image's result.
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    status: Mapped[ImageStatus] = mapped_column(
        _enum(ImageStatus, "image_status"), default=ImageStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    output_key: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    bytes_in: Mapped[int | None] = mapped_column(BigInteger)
    bytes_out: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    source_format: Mapped[str | None] = mapped_column(String(16))
    source_quality: Mapped[int | None] = mapped_column(Integer)
    output_quality: Mapped[int | None] = mapped_column(Integer)
    # The stored output is the source itself, metadata stripped: a re-encode was not smaller.
    kept_original: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    duration_ms: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def grew(self) -> bool:
        return output_grew(self.bytes_in, self.bytes_out)


def output_grew(bytes_in: int | None, bytes_out: int | None) -> bool:
    """Whether a done image's output is bigger than its source: only a format or size change
    that was asked for can do that (otherwise the source is kept), and it is reported."""
    return bytes_in is not None and bytes_out is not None and bytes_out > bytes_in


class WebhookDelivery(Base):
    """The outbox row: created in the transaction that finalises the batch."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
