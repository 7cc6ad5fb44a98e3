"""The bulk loader of a catalog's products and images: COPY on PostgreSQL, executemany on SQLite.

It runs while an uploader waits for its 202, so it trades the ORM's convenience for speed;
tests/unit/db/test_bulk.py holds it to storing exactly what the ORM would have stored.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, insert
from sqlalchemy.orm import Session

from pixelbatch.db.models import Image, ImageStatus, Product


@dataclass(frozen=True)
class NewProduct:
    row_number: int
    serial: str
    name: str
    extra: list[str]
    urls: Sequence[str]


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
_IMAGE_COLUMNS = (
    "batch_id",
    "product_id",
    "position",
    "url",
    "status",
    "attempts",
    "kept_original",
)
# Every column with a default must be listed: these inserts bypass SQLAlchemy's defaults
# (tests/unit/db/test_bulk.py checks the models against these lists).
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
            f"{batch}\t{ids[p.row_number]}\t{position}\t{esc(url)}\t{status}\t0\tf\n"
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
        (batch, ids[p.row_number], position, url, status, 0, 0)
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
