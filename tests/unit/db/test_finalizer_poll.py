"""The finaliser's poll (every worker, every ``POLL_INTERVAL``) must not grow with history:
it finds the batches waiting for their output CSV in ``ix_batches_status_output`` alone,
however many batches were cancelled and finalised before."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import batch_lifecycle
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus

HISTORY = 3000


@pytest.fixture
def sessions(sessions_on_both: sessionmaker[Session]) -> sessionmaker[Session]:
    return sessions_on_both


def _batch(
    status: BatchStatus, *, total: int, done: int, output_key: str | None
) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "status": status,
        "input_filename": "catalog.csv",
        "input_key": "in",
        "options": {},
        "extra_columns": [],
        "images_total": total,
        "images_done": done,
        "output_key": output_key,
    }


def test_the_poll_finds_the_waiting_batches_through_the_index(
    sessions: sessionmaker[Session],
) -> None:
    history = [
        _batch(BatchStatus.CANCELLED, total=10, done=3, output_key=f"out/{i}.csv")
        for i in range(HISTORY)
    ]
    cancelled = _batch(BatchStatus.CANCELLED, total=10, done=3, output_key=None)
    recorded = _batch(BatchStatus.PROCESSING, total=4, done=4, output_key=None)
    running = _batch(BatchStatus.PROCESSING, total=4, done=1, output_key=None)
    with transaction(sessions) as s:
        s.execute(insert(Batch), [*history, cancelled, recorded, running])
    with transaction(sessions) as s:
        ready = set(batch_lifecycle.batches_ready_to_finalize(s))
        assert ready == {cancelled["id"], recorded["id"]}

        conn = s.connection()
        query = select(Batch.id).where(batch_lifecycle._unfinalised())
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE batches"))
            plan = "\n".join(conn.execute(text("EXPLAIN " + sql)).scalars())
            assert "ix_batches_status_output" in plan, plan
            conditions = [line for line in plan.splitlines() if "Index Cond" in line]
            assert any("output_key IS NULL" in line for line in conditions), plan
        else:
            plan = "\n".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert "ix_batches_status_output (status=? AND output_key=?)" in plan, plan
