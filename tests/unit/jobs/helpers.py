"""Batches submitted through the real intake, and reads of what the job machinery left
behind (database rows, stored files), for the jobs tests."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.db import recording
from pixelbatch.db.engine import transaction
from pixelbatch.db.images import ClaimedImage, claim_images
from pixelbatch.db.models import Batch, Image, ImageStatus, Priority
from pixelbatch.demo.server import ImageServer
from pixelbatch.intake import upload as intake_upload
from pixelbatch.jobs import routine
from pixelbatch.jobs.recording import record
from pixelbatch.jobs.transform_pool import inline_runner
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import TransformOptions
from tests import support

SOURCE_JPEG = support.jpeg((320, 240), quality=90)
SOURCE_PNG = support.png_with_alpha((120, 80))
WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXBpeGVsYmF0Y2gtdGVzdHM="

SettingsFactory = Callable[..., Settings]
RuntimeFactory = Callable[..., Runtime]


def upload(
    runtime: Runtime,
    rows: list[list[str]],
    *,
    webhook_url: str | None = None,
    priority: Priority = Priority.NORMAL,
) -> uuid.UUID:
    """A batch submitted the way the API submits one: a CSV through ``intake.upload``
    (no dispatcher: the test runs the work itself)."""
    data = support.csv_bytes(rows)
    batch, created = intake_upload(
        runtime,
        None,
        io.BytesIO(data),
        filename="catalog.csv",
        options=TransformOptions(),
        webhook_url=webhook_url,
        priority=priority,
    )
    assert created
    return batch.id


def urls(server: ImageServer, *paths: str) -> str:
    return ", ".join(server.base_url + path for path in paths)


def batch_of(sessions: sessionmaker[Session], batch_id: uuid.UUID) -> Batch:
    with transaction(sessions) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        return batch


def image_statuses(sessions: sessionmaker[Session], batch_id: uuid.UUID) -> dict[str, int]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(Image.status, func.count())
            .where(Image.batch_id == batch_id)
            .group_by(Image.status)
        ).all()
    return {ImageStatus(status).value: count for status, count in rows}


def read_output_csv(runtime: Runtime, batch_id: uuid.UUID) -> list[dict[str, str]]:
    path = runtime.storage.local_path(f"{batch_id}/output.csv")
    assert path is not None
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def claim_all(
    runtime: Runtime, owner: str, *, limit: int = 100, lease_seconds: float = 60
) -> list[ClaimedImage]:
    with transaction(runtime.sessions) as session:
        return claim_images(session, owner=owner, limit=limit, lease_seconds=lease_seconds)


def record_all(runtime: Runtime, owner: str = "w") -> int:
    """Process and record every claimable image without finalising: the state a worker
    leaves when it dies between its batch's last image and the output CSV."""
    runner = inline_runner(runtime.settings.max_pixels)
    items = claim_all(runtime, owner)
    for item in items:
        outcome = routine.produce(item, runtime.fetcher, runtime.storage, runner)
        record(runtime.sessions, outcome, owner)
    return len(items)


def refuse_recordings(
    monkeypatch: pytest.MonkeyPatch, refuse: Callable[[int, list[int]], bool]
) -> list[int]:
    """Make the database refuse a recording that holds an image for which ``refuse(image_id,
    refused so far)`` says so: a fault injected at the one call, the database staying real;
    the whole transaction fails, as it would. Returns the ids refused, in order."""
    real = recording.record
    refused: list[int] = []

    def refusing(session: Session, owner: str, finished: Sequence[recording.Finished]) -> list[int]:
        for item in finished:
            if refuse(item.image_id, refused):
                refused.append(item.image_id)
                raise OperationalError("UPDATE images", {}, Exception("database is down"))
        return real(session, owner, finished)

    monkeypatch.setattr(recording, "record", refusing)
    return refused


@contextmanager
def commits_of(engine: Engine) -> Iterator[list[object]]:
    """The transactions committed on ``engine`` inside the block (one entry each)."""
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    event.listen(engine, "commit", count)
    try:
        yield commits
    finally:
        event.remove(engine, "commit", count)
