"""insert_products and intake.upload on both databases: what the fast paths (executemany on
SQLite, COPY on PostgreSQL) store must be exactly what the ORM would have stored, in CSV
order, inside the caller's transaction. PostgreSQL cases use the test server
(PIXELBATCH_TEST_PG, as tests/distributed do)."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch import intake
from pixelbatch.catalog import CsvRejected
from pixelbatch.db import bulk
from pixelbatch.db.engine import transaction
from pixelbatch.db.images import link_duplicate_urls
from pixelbatch.db.models import Base, Batch, Image, ImageStatus, Product
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import TransformOptions
from tests import support
from tests.unit.db.factories import add_batch


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database with empty tables (PostgreSQL: the xdist worker's, truncated)."""
    fixture = "migrated_sqlite_url" if request.param == "sqlite" else "migrated_pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with support.sessions(database_url) as factory:
        yield factory


def _new_batch(session: Session) -> uuid.UUID:
    return add_batch(session, extra_columns=["Brand", "Notes"])


# Text that COPY's text format and JSON must carry unchanged.
AWKWARD = ["tab\there", "new\nline", "back\\slash", "\\N", 'quo"te', "ünï€ode", "", " pad "]


def test_rows_are_stored_exactly(sessions: sessionmaker[Session]) -> None:
    new = [
        bulk.NewProduct(2, "S-1", "Shoe", ["Acme", "red"], ["http://h/a.jpg", "http://h/b.jpg"]),
        bulk.NewProduct(3, AWKWARD[0], AWKWARD[1], AWKWARD, ["http://h/c.jpg?x=1&y=%20"]),
        bulk.NewProduct(5, AWKWARD[3], AWKWARD[2], [], ["http://h/d.jpg"]),
    ]
    with transaction(sessions) as session:
        batch_id = _new_batch(session)  # not flushed: insert_products must flush it first
        assert bulk.insert_products(session, batch_id, new) == 4
    with transaction(sessions) as session:
        products = session.scalars(select(Product).order_by(Product.row_number)).all()
        got = [(p.row_number, p.serial, p.name, p.extra, p.batch_id) for p in products]
        assert got == [(n.row_number, n.serial, n.name, n.extra, batch_id) for n in new]
        by_id = {p.id: p.row_number for p in products}
        images = session.scalars(select(Image).order_by(Image.id)).all()
        assert [(by_id[i.product_id], i.position, i.url) for i in images] == [
            (n.row_number, position, url) for n in new for position, url in enumerate(n.urls)
        ]
        for image in images:
            assert image.batch_id == batch_id
            assert image.status == ImageStatus.PENDING
            assert image.attempts == 0
            assert image.duplicate_of is None and image.lease_owner is None


def test_ids_follow_csv_order_across_slices(sessions: sessionmaker[Session]) -> None:
    """Slices whose row ranges interleave (the reader never produces them, but callers may)
    still map every image to its own product; ids grow in the order rows were given."""
    slices = [
        [bulk.NewProduct(r, f"s{r}", "p", [], [f"http://h/{r}/{k}" for k in range(r % 3 + 1)])]
        for r in (2, 9)
    ]
    slices.append([bulk.NewProduct(r, f"s{r}", "p", [], [f"http://h/{r}/0"]) for r in (4, 5)])
    slices.append([bulk.NewProduct(r, f"s{r}", "p", [], [f"http://h/{r}/0"]) for r in (10, 3)])
    with transaction(sessions) as session:
        batch_id = _new_batch(session)
        other = _new_batch(session)  # another batch's rows must not be picked up
        bulk.insert_products(session, other, [bulk.NewProduct(4, "x", "p", [], ["http://o/"])])
        total = sum(bulk.insert_products(session, batch_id, s) for s in slices)
    order = [p.row_number for s in slices for p in s]
    with transaction(sessions) as session:
        rows = session.execute(
            select(Product.row_number, Image.url, Image.position)
            .join(Product, Product.id == Image.product_id)
            .where(Image.batch_id == batch_id)
            .order_by(Image.id)
        ).all()
        product_rows = session.scalars(
            select(Product.row_number).where(Product.batch_id == batch_id).order_by(Product.id)
        ).all()
    assert total == len(rows)
    assert list(product_rows) == order
    assert [(r.row_number, r.url, r.position) for r in rows] == [
        (p.row_number, url, position)
        for s in slices
        for p in s
        for position, url in enumerate(p.urls)
    ]


def test_nothing_to_insert(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        assert bulk.insert_products(session, _new_batch(session), []) == 0


def test_rows_belong_to_the_callers_transaction(sessions: sessionmaker[Session]) -> None:
    new = [bulk.NewProduct(i + 2, str(i), "p", [], [f"http://h/{i}"]) for i in range(50)]
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        bulk.insert_products(session, _new_batch(session), new)
        raise RuntimeError("caller fails after the insert")
    with transaction(sessions) as session:
        for model in (Batch, Product, Image):
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_duplicates_link_to_the_first_occurrence(sessions: sessionmaker[Session]) -> None:
    urls = [["http://h/a", "http://h/b"], ["http://h/a"], ["http://h/c", "http://h/a"]]
    with transaction(sessions) as session:
        batch_id = _new_batch(session)
        for i, u in enumerate(urls):  # one slice per product
            bulk.insert_products(session, batch_id, [bulk.NewProduct(i + 2, str(i), "p", [], u)])
        assert link_duplicate_urls(session, batch_id) == 2
        images = session.scalars(select(Image).order_by(Image.id)).all()
    first_a = images[0]
    assert first_a.url == "http://h/a" and first_a.duplicate_of is None
    assert [i.duplicate_of for i in images if i.url == "http://h/a"][1:] == [first_a.id] * 2


# -- intake.upload --------------------------------------------------------------------------


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=None if database_url.startswith("sqlite") else database_url,
        storage_url=f"file://{tmp_path / 'storage'}",
    )
    rt = Runtime(settings)
    rt.migrate()
    yield rt
    rt.close()


def _csv(rows: int, *, bad_last: bool = False) -> bytes:
    lines = ["S. No.,Product Name,Input Image Urls,Brand"]
    lines += [
        f'{i},Product {i},"http://Img.Example:80/{i}/a.jpg, https://img.example/{i % 7}.png",B{i}'
        for i in range(1, rows + 1)
    ]
    if bad_last:
        lines.append(f"{rows + 1},Broken,ftp://img.example/x.jpg,B")
    return ("\n".join(lines) + "\n").encode()


def test_upload_stores_every_slice(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "INSERT_SLICE", 7)
    batch, created = intake.upload(
        runtime, None, io.BytesIO(_csv(30)), filename="c.csv", options=TransformOptions()
    )
    assert created
    assert (batch.products_total, batch.images_total) == (30, 60)
    with transaction(runtime.sessions) as session:
        rows = session.execute(
            select(Product.row_number, Product.serial, Product.extra, Image.url, Image.duplicate_of)
            .join(Product, Product.id == Image.product_id)
            .where(Image.batch_id == batch.id)
            .order_by(Image.id)
        ).all()
    assert [(r.row_number, r.serial, r.extra, r.url) for r in rows] == [
        (i + 1, str(i), [f"B{i}"], url)
        for i in range(1, 31)
        for url in (f"http://img.example/{i}/a.jpg", f"https://img.example/{i % 7}.png")
    ]
    assert sum(r.duplicate_of is not None for r in rows) == 30 - 7


def test_upload_rejected_late_stores_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A problem in the last row, after several slices were written: all rolled back."""
    monkeypatch.setattr(intake, "INSERT_SLICE", 7)
    with pytest.raises(CsvRejected) as info:
        intake.upload(
            runtime,
            None,
            io.BytesIO(_csv(30, bad_last=True)),
            filename="c.csv",
            options=TransformOptions(),
        )
    assert [(p.row, p.column) for p in info.value.problems] == [(32, "Input Image Urls")]
    assert "http:// or https://" in info.value.problems[0].message
    with transaction(runtime.sessions) as session:
        for model in (Batch, Product, Image):
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_a_failed_write_stops_the_reading_ahead(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next slice is parsed on another thread while one is written: when a write fails,
    the upload fails with that error, stores nothing, and no thread reads the file after."""
    monkeypatch.setattr(intake, "INSERT_SLICE", 7)
    written: list[int] = []

    def insert_then_fail(
        session: Session, batch_id: uuid.UUID, products: list[bulk.NewProduct]
    ) -> int:
        if written:
            raise RuntimeError("the database went away")
        written.append(len(products))
        return real_insert(session, batch_id, products)

    real_insert = bulk.insert_products
    monkeypatch.setattr(bulk, "insert_products", insert_then_fail)
    source = io.BytesIO(_csv(5000))
    with pytest.raises(RuntimeError, match="went away"):
        intake.upload(runtime, None, source, filename="c.csv", options=TransformOptions())
    position = source.tell()
    assert not [t for t in threading.enumerate() if t.name.startswith("pixelbatch-csv")]
    assert position < len(source.getvalue())  # it stopped reading, one slice ahead at most
    time.sleep(0.2)
    assert source.tell() == position
    with transaction(runtime.sessions) as session:
        for model in (Batch, Product, Image):
            assert session.scalar(select(func.count()).select_from(model)) == 0


@given(st.lists(st.text()) | st.lists(st.one_of(st.integers(), st.none(), st.text())))
def test_extra_is_encoded_as_json_dumps_would(values: list[str]) -> None:
    assert bulk._json_list(values) == json.dumps(values)


@pytest.mark.parametrize(
    ("model", "columns"),
    [(Product, bulk._PRODUCT_COLUMNS), (Image, bulk._IMAGE_COLUMNS)],
)
def test_bulk_insert_sets_every_defaulted_column(
    model: type[Base], columns: tuple[str, ...]
) -> None:
    """COPY and the raw executemany skip SQLAlchemy's column defaults: a column that gains
    one must be added to the insert, or its rows would silently miss the value."""
    table = model.__table__
    assert isinstance(table, Table)
    defaulted = {
        c.name
        for c in table.columns
        if not c.primary_key and (c.default is not None or c.server_default is not None)
    }
    required = {c.name for c in table.columns if not c.primary_key and not c.nullable}
    assert defaulted | required <= set(columns)
