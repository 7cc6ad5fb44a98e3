"""The sweeper's queue length read from the real Redis broker: an empty queue (its list does not
exist) is 0, not an error, and a queue with messages is counted, without declaring anything.

Each test uses a queue of its own name on this test worker's Redis database, so it never
touches the queues of a cluster another test runs there."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from pixelbatch.jobs import celery_app
from pixelbatch.settings import Settings
from tests import support


@pytest.fixture
def redis_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    settings = Settings.model_validate({"broker_url": support.worker_redis_url()})
    app = celery_app.make_celery(settings)
    monkeypatch.setattr(celery_app, "app", app)
    yield app
    app.close()


@pytest.fixture
def queue(redis_app: Celery) -> Iterator[str]:
    name = f"pixelbatch-test-{uuid.uuid4().hex}"
    yield name
    with redis_app.connection_for_write() as connection:
        connection.default_channel.queue_delete(name)


def test_an_empty_redis_queue_reads_as_zero_without_a_warning(
    queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=celery_app.__name__):
        assert celery_app.queued_messages(queue) == 0
    assert not caplog.records


def test_a_redis_queue_with_messages_is_counted(redis_app: Celery, queue: str) -> None:
    for _ in range(3):
        redis_app.send_task(celery_app.WORK_TASK, queue=queue)

    assert celery_app.queued_messages(queue) == 3


def test_an_unreachable_broker_reads_as_unknown_and_logs_at_debug_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = support.free_port()  # nothing listens there
    settings = Settings.model_validate({"broker_url": f"redis://127.0.0.1:{port}/0"})
    app = celery_app.make_celery(settings)
    app.conf.broker_connection_max_retries = 0
    app.conf.broker_transport_options = {"max_retries": 0}
    monkeypatch.setattr(celery_app, "app", app)

    with caplog.at_level(logging.DEBUG, logger=celery_app.__name__):
        assert celery_app.queued_messages() is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert all(r.exc_info is None for r in caplog.records)
