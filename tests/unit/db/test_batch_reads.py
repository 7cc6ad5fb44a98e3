"""What a status poll and the image listing read: the error summary and the pages in CSV
order, on SQLite and PostgreSQL (both read through ``ix_images_batch_status_code`` and the
product index, and PostgreSQL has no implicit row order to fall back on)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_reads
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import Batch, Image, ImageStatus, Product
from tests.unit.db.factories import new_batch


@pytest.fixture
def sessions(sessions_on_both: sessionmaker[Session]) -> sessionmaker[Session]:
    return sessions_on_both


def fail(
    sessions: sessionmaker[Session], batch_id: uuid.UUID, rows: range, code: str | None
) -> None:
    """Mark the images of the products at CSV ``rows`` failed with ``code``."""
    with transaction(sessions) as s:
        products = [
            p.id
            for p in s.query(Product).filter(Product.batch_id == batch_id)
            if p.row_number in rows
        ]
        s.execute(
            update(Image)
            .where(Image.product_id.in_(products))
            .values(
                status=ImageStatus.FAILED,
                error_code=code,
                error_message=f"{code or 'no code'}: failed",
            )
        )


def test_the_error_summary_counts_each_code_commonest_first_with_its_own_example(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = new_batch(sessions, 20)  # CSV rows 2-21
    other = new_batch(sessions, 5)
    fail(sessions, batch_id, range(2, 8), "http_404")  # 6
    fail(sessions, batch_id, range(8, 11), "timeout")  # 3
    fail(sessions, batch_id, range(11, 12), None)  # 1
    fail(sessions, other, range(2, 7), "timeout")  # another batch's failures do not count

    with reading(sessions) as s:
        summary = batch_reads.error_summary(s, batch_id)

    assert [(e.code, e.count) for e in summary] == [("http_404", 6), ("timeout", 3), ("error", 1)]
    assert summary[0].example.startswith("http_404: ")
    assert summary[1].example.startswith("timeout: ")
    assert summary[2].example.startswith("no code: ")


def test_the_error_summary_shows_the_commonest_codes_only(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_reads, "ERROR_CODES_SHOWN", 2)
    batch_id = new_batch(sessions, 6)
    fail(sessions, batch_id, range(2, 3), "a")
    fail(sessions, batch_id, range(3, 6), "b")
    fail(sessions, batch_id, range(6, 8), "c")

    with reading(sessions) as s:
        assert [e.code for e in batch_reads.error_summary(s, batch_id)] == ["b", "c"]


def test_image_pages_follow_the_csv_and_count_without_reading_every_image(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = new_batch(sessions, 30, urls_per_product=2)
    fail(sessions, batch_id, range(10, 13), "timeout")
    with reading(sessions) as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        first, total = batch_reads.images_page(s, batch, offset=0, limit=7, status=None)
        last, _ = batch_reads.images_page(s, batch, offset=56, limit=7, status=None)
        failed, failed_total = batch_reads.images_page(
            s, batch, offset=2, limit=3, status=ImageStatus.FAILED
        )

    assert total == 60
    assert [(r.row_number, r.image.position) for r in first] == [
        (2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (4, 1), (5, 0)
    ]  # fmt: skip
    assert [(r.row_number, r.image.position) for r in last] == [(30, 0), (30, 1), (31, 0), (31, 1)]
    assert failed_total == 6
    assert [(r.row_number, r.image.position) for r in failed] == [(11, 0), (11, 1), (12, 0)]
    assert all(r.image.batch_id == batch_id for r in first + last + failed)
