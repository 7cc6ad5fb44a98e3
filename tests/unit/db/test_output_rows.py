"""output_rows_page on both databases: a batch's rows in CSV order, its images in position
order, nothing of a batch whose rows were written between its own (their ids interleave)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db.bulk import NewProduct, insert_products
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Image, ImageStatus
from pixelbatch.db.output_rows import OutputProduct, output_rows_page
from tests import support
from tests.unit.db.factories import add_batch


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    fixture = "migrated_sqlite_url" if request.param == "sqlite" else "migrated_pg_url"
    with support.sessions(request.getfixturevalue(fixture)) as factory:
        yield factory


def _batch(sessions: sessionmaker[Session]) -> uuid.UUID:
    with transaction(sessions) as session:
        return add_batch(session, extra_columns=["Brand"])


def _add_rows(sessions: sessionmaker[Session], batch_id: uuid.UUID, rows: range) -> None:
    with transaction(sessions) as session:
        products = [
            NewProduct(
                row,
                f"s{row}",
                f"name {row}",
                [f"brand {row}"],
                [f"http://h/{row}/a", f"http://h/{row}/b"],
            )
            for row in rows
        ]
        insert_products(session, batch_id, products)


def _all_pages(
    sessions: sessionmaker[Session], batch_id: uuid.UUID, size: int, *, extra: bool
) -> list[list[OutputProduct]]:
    pages: list[list[OutputProduct]] = []
    after = 0
    while True:
        with transaction(sessions) as session:
            page = output_rows_page(session, batch_id, after, size, extra=extra)
        if not page:
            return pages
        pages.append(page)
        after = page[-1].row_number


def test_pages_hold_one_batch_in_csv_order_when_ids_interleave(
    sessions: sessionmaker[Session],
) -> None:
    ours, theirs = _batch(sessions), _batch(sessions)
    _add_rows(sessions, ours, range(2, 5))
    _add_rows(sessions, theirs, range(2, 6))
    _add_rows(sessions, ours, range(5, 8))
    with transaction(sessions) as session:
        session.execute(
            update(Image)
            .where(Image.batch_id == ours, Image.url == "http://h/3/b")
            .values(status=ImageStatus.DONE, output_key="k/3b.jpg", bytes_in=10, bytes_out=12)
        )

    pages = _all_pages(sessions, ours, 4, extra=True)

    assert [len(page) for page in pages] == [4, 2]
    products = [product for page in pages for product in page]
    assert [p.row_number for p in products] == [2, 3, 4, 5, 6, 7]
    assert [p.extra for p in products] == [[f"brand {row}"] for row in range(2, 8)]
    assert [[i.url for i in p.images] for p in products] == [
        [f"http://h/{row}/a", f"http://h/{row}/b"] for row in range(2, 8)
    ]
    done = products[1].images[1]
    assert (done.status, done.output_key, done.grew) == (ImageStatus.DONE, "k/3b.jpg", True)
    assert products[1].images[0].status == ImageStatus.PENDING
    assert not products[1].images[0].grew


def test_extra_is_not_read_when_the_batch_has_no_extra_columns(
    sessions: sessionmaker[Session],
) -> None:
    batch_id = _batch(sessions)
    _add_rows(sessions, batch_id, range(2, 4))

    (page,) = _all_pages(sessions, batch_id, 10, extra=False)

    assert [p.extra for p in page] == [[], []]
    assert [p.serial for p in page] == ["s2", "s3"]
