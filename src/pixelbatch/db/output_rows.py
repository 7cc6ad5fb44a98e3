"""What a batch's output CSV is written from: its products and images in CSV order, by page.

A finaliser reads every row of a batch, up to hundreds of thousands, and a cancel does it
while the client waits for its answer: the rows come as plain tuples of the columns the CSV
needs, not as ORM objects (loading ORM objects cost ~75% of writing a 100,000-row CSV).
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from pixelbatch.db.models import Image, ImageStatus, Product, output_grew


class OutputImage(NamedTuple):
    position: int
    url: str
    status: ImageStatus
    output_key: str | None
    error_message: str | None
    kept_original: bool
    bytes_in: int | None
    bytes_out: int | None

    @property
    def grew(self) -> bool:
        return output_grew(self.bytes_in, self.bytes_out)


class OutputProduct(NamedTuple):
    row_number: int
    serial: str
    name: str
    extra: list[str]
    images: list[OutputImage]


_products = Product.__table__.c
_images = Image.__table__.c
_PRODUCT_COLUMNS = (_products.id, _products.row_number, _products.serial, _products.name)
_IMAGE_COLUMNS = (_images.product_id, *(_images[field] for field in OutputImage._fields))


def output_rows_page(
    session: Session, batch_id: uuid.UUID, after_row: int, page_size: int, *, extra: bool
) -> list[OutputProduct]:
    """One page of products with their images in CSV order; callers page by row number so
    memory stays flat and no transaction stays open across a whole large batch. ``extra``:
    whether the batch has extra columns to read (decoding a JSON ``[]`` per row is not free).
    """
    conn = session.connection()  # Core rows: the ORM would build its result machinery per row
    columns = (*_PRODUCT_COLUMNS, _products.extra) if extra else _PRODUCT_COLUMNS
    products: Any = conn.execute(
        select(*columns)
        .where(_products.batch_id == batch_id, _products.row_number > after_row)
        .order_by(_products.row_number)
        .limit(page_size)
    ).all()
    if not products:
        return []
    images: dict[int, list[OutputImage]] = {row[0]: [] for row in products}
    # By the range of the page's product ids, not a list of them: a range is read off the
    # (product_id, position) index however the planner sees the table, where a list of a
    # thousand ids right after a large upload (no statistics yet) was a full scan per page.
    # A batch's ids follow its row numbers, so the range holds little of any other batch.
    rows: Any = conn.execute(
        select(*_IMAGE_COLUMNS)
        .where(_images.product_id.between(min(images), max(images)))
        .order_by(_images.product_id, _images.position)
    )
    for product_id, *fields in rows:
        if product_id in images:
            images[product_id].append(OutputImage._make(fields))
    return [
        OutputProduct(number, serial, name, rest[0] if rest else [], images[product_id])
        for product_id, number, serial, name, *rest in products
    ]
