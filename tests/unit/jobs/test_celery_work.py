"""The distributed ``work`` task in-process: when its chunk fails, the images it did not record
go back to the queue at once instead of idling until their leases run out.

The broker is Celery's in-memory transport; the worker state is the test's real runtime."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from pixelbatch.db.models import Image
from pixelbatch.demo.server import ImageServer
from pixelbatch.jobs import celery_app
from pixelbatch.jobs.leases import LeaseKeeper
from pixelbatch.jobs.transform_pool import inline_runner
from pixelbatch.runtime import Runtime
from tests.unit.jobs.helpers import (
    RuntimeFactory,
    image_statuses,
    refuse_recordings,
    upload,
    urls,
)

OWNER = "celery-test-worker"


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime(chunk_size=10)


@pytest.fixture
def worker(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """This process as a Celery worker: its state on the test's runtime, the app on memory://."""
    app = celery_app.make_celery(runtime.settings)
    monkeypatch.setattr(celery_app, "app", app)
    keeper = LeaseKeeper(runtime, OWNER)
    state = celery_app._WorkerState(
        os.getpid(), runtime, OWNER, keeper, inline_runner(runtime.settings.max_pixels)
    )
    monkeypatch.setattr(celery_app, "_state", state)
    yield app
    keeper.stop()


def test_a_failed_chunk_hands_back_what_it_did_not_record(
    runtime: Runtime, worker: Celery, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first image to be recorded can never be; the other can.
    refuse_recordings(monkeypatch, lambda image, refused: not refused or image == refused[0])
    batch_id = upload(
        runtime,
        [["1", "Chair", urls(image_server, "/a.jpg")], ["2", "Desk", urls(image_server, "/b.jpg")]],
    )

    with pytest.raises(OperationalError):
        celery_app.work.run()

    # One image recorded, the other back in the queue with no lease, nothing still held.
    assert image_statuses(runtime.sessions, batch_id) == {"DONE": 1, "PENDING": 1}
    with runtime.sessions() as session:
        leases = session.execute(select(Image.lease_owner, Image.lease_until)).all()
    assert all(until is None for _, until in leases)
    assert len(celery_app._worker_state().leases) == 0
