"""Batches with products and images, and outcomes to record, for the database tests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db.bulk import NewProduct, insert_products
from pixelbatch.db.engine import transaction
from pixelbatch.db.images import ImageSuccess
from pixelbatch.db.models import Batch, Priority, utcnow
from pixelbatch.transform import TransformOptions


def add_batch(session: Session, extra_columns: list[str] | None = None, **fields: Any) -> uuid.UUID:
    """A batch row with no products, in the caller's transaction; ``fields`` set the rest."""
    batch_id = uuid.uuid4()
    session.add(
        Batch(
            id=batch_id,
            input_filename="x.csv",
            input_key=f"{batch_id}/input.csv",
            options=TransformOptions().model_dump(mode="json"),
            extra_columns=extra_columns or [],
            **fields,
        )
    )
    return batch_id


def new_batch(
    sessions: sessionmaker[Session],
    products: int,
    urls_per_product: int = 1,
    *,
    priority: Priority = Priority.NORMAL,
    tenant: str = "",
    created_at: datetime | None = None,
) -> uuid.UUID:
    with transaction(sessions) as session:
        batch_id = add_batch(
            session, priority=priority, tenant=tenant, created_at=created_at or utcnow()
        )
        session.flush()
        new = [
            NewProduct(
                i + 2, str(i), f"p{i}", [], [f"http://h/{i}/{j}" for j in range(urls_per_product)]
            )
            for i in range(products)
        ]
        images = insert_products(session, batch_id, new)
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.products_total = products
        batch.images_total = images
    return batch_id


def success(key: str = "k") -> ImageSuccess:
    return ImageSuccess(key, "image/jpeg", 10, 5, 1, 1, "JPEG", 90, 45, 1.0)
