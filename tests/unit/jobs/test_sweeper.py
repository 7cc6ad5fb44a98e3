"""The distributed mode's sweeper: rings the doorbells that claimable work needs and are not
already queued, finalises batches whose finaliser died, and rings for due webhooks.

The broker is Celery's own in-memory transport (``memory://``), a real kombu broker living in
this process: messages rung by ``ring`` are counted on its queues, and ``queued_messages``
reads the same queue, so no broker call is faked. Each test gets a fresh Celery app on it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import Celery
from sqlalchemy import select

from pixelbatch.db import images, outbox
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, WebhookDelivery, utcnow
from pixelbatch.jobs import celery_app
from pixelbatch.jobs.celery_app import QUEUE, WEBHOOK_QUEUE, Sweeper
from pixelbatch.runtime import Runtime
from tests.unit.db.factories import new_batch, success
from tests.unit.jobs.helpers import RuntimeFactory, batch_of, claim_all, read_output_csv

CHUNK = 3


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime(chunk_size=CHUNK, dispatch_fanout=32)


@pytest.fixture
def broker(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """A Celery app on ``memory://`` with both queues empty."""
    app = celery_app.make_celery(runtime.settings)
    assert app.conf.broker_url == "memory://"
    monkeypatch.setattr(celery_app, "app", app)
    for queue in (QUEUE, WEBHOOK_QUEUE):
        _purge(app, queue)  # the memory transport's queues outlive an app: start empty
    yield app
    for queue in (QUEUE, WEBHOOK_QUEUE):
        _purge(app, queue)


def _queued(app: Celery, queue: str) -> int:
    with app.connection_for_write() as connection:
        return int(
            connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        )


def _purge(app: Celery, queue: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


def _record_every_image(runtime: Runtime) -> None:
    for item in claim_all(runtime, "w"):
        with transaction(runtime.sessions) as session:
            assert images.record_success(session, item.id, "w", success(f"{item.batch_id}/k"))


def _set_webhook(runtime: Runtime, batch_id: uuid.UUID, url: str) -> None:
    with transaction(runtime.sessions) as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch.webhook_url = url


# --------------------------------------------------------------------------- doorbells


def test_sweep_rings_the_doorbells_that_claimable_work_needs(
    runtime: Runtime, broker: Celery
) -> None:
    new_batch(runtime.sessions, 10)  # 10 images, chunks of 3: 4 messages
    sweeper = Sweeper(runtime)

    sweeper.sweep()
    assert _queued(broker, QUEUE) == 4

    sweeper.sweep()  # already queued: nothing more
    assert _queued(broker, QUEUE) == 4

    _purge(broker, QUEUE)  # the broker restarted without persistence
    celery_app.ring(1)
    sweeper.sweep()  # one message survived: three more
    assert _queued(broker, QUEUE) == 4
    assert _queued(broker, WEBHOOK_QUEUE) == 0


def test_sweep_counts_only_work_no_live_lease_covers(runtime: Runtime, broker: Celery) -> None:
    new_batch(runtime.sessions, 10)
    claim_all(runtime, "alive", limit=6, lease_seconds=60)
    claim_all(runtime, "dead", limit=2, lease_seconds=-1)  # leases already run out

    Sweeper(runtime).sweep()

    # 2 pending + 2 expired = 4 claimable images: 2 chunks of 3.
    assert _queued(broker, QUEUE) == 2


def test_sweep_rings_at_most_the_fanout(make_runtime: RuntimeFactory, broker: Celery) -> None:
    runtime = make_runtime(chunk_size=1, dispatch_fanout=5)
    new_batch(runtime.sessions, 12)

    Sweeper(runtime).sweep()

    assert _queued(broker, QUEUE) == 5


def test_sweep_rings_once_when_the_broker_cannot_count(
    runtime: Runtime, broker: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_batch(runtime.sessions, 12)  # 4 chunks of 3
    celery_app.ring(1)
    # A fake of the broker only: one that cannot tell its queue length (a Redis outage).
    monkeypatch.setattr(celery_app, "queued_messages", lambda: None)

    Sweeper(runtime).sweep()
    assert _queued(broker, QUEUE) == 1 + 1  # one per sweep: the queue may already be full
    Sweeper(runtime).sweep()
    assert _queued(broker, QUEUE) == 1 + 2


def test_an_empty_queue_reads_as_zero_without_a_warning(
    broker: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    never_used = f"pixelbatch-test-{uuid.uuid4().hex}"
    with caplog.at_level(logging.DEBUG, logger=celery_app.__name__):
        assert celery_app.queued_messages(never_used) == 0
        assert celery_app.queued_messages(QUEUE) == 0
    assert not caplog.records


def test_sweep_without_work_rings_nothing(runtime: Runtime, broker: Celery) -> None:
    new_batch(runtime.sessions, 3)
    claim_all(runtime, "alive", lease_seconds=60)  # everything is being worked on

    Sweeper(runtime).sweep()

    assert (_queued(broker, QUEUE), _queued(broker, WEBHOOK_QUEUE)) == (0, 0)


# --------------------------------------------------------------------------- recovery


def test_sweep_finalises_a_ready_batch_and_rings_for_its_webhook(
    runtime: Runtime, broker: Celery
) -> None:
    batch_id = new_batch(runtime.sessions, 2, urls_per_product=2)
    _set_webhook(runtime, batch_id, "http://127.0.0.1:9/hook")
    _record_every_image(runtime)  # ...and the worker died before finalising

    Sweeper(runtime).sweep()

    batch = batch_of(runtime.sessions, batch_id)
    assert batch.status == BatchStatus.COMPLETED and batch.images_done == 4
    rows = read_output_csv(runtime, batch_id)
    assert [row["Status"] for row in rows] == ["OK", "OK"]
    with transaction(runtime.sessions) as session:
        deliveries = session.scalars(select(WebhookDelivery)).all()
    assert [d.batch_id for d in deliveries] == [batch_id]
    assert _queued(broker, WEBHOOK_QUEUE) == 1
    assert _queued(broker, QUEUE) == 0

    Sweeper(runtime).sweep()  # the delivery is still due: ring again, finalise nothing

    assert _queued(broker, WEBHOOK_QUEUE) == 2
    assert batch_of(runtime.sessions, batch_id).finished_at == batch.finished_at


def test_sweep_rings_for_due_webhooks_only(runtime: Runtime, broker: Celery) -> None:
    due = new_batch(runtime.sessions, 1)
    later = new_batch(runtime.sessions, 1)
    now = utcnow()
    with transaction(runtime.sessions) as session:
        for batch_id in (due, later):
            batch = session.get(Batch, batch_id)
            assert batch is not None
            batch.status = BatchStatus.COMPLETED
        outbox.enqueue_delivery(
            session, later, "http://127.0.0.1:9/h", {}, now + timedelta(hours=1)
        )
    sweeper = Sweeper(runtime)

    sweeper.sweep()
    assert _queued(broker, WEBHOOK_QUEUE) == 0

    with transaction(runtime.sessions) as session:
        outbox.enqueue_delivery(session, due, "http://127.0.0.1:9/h", {}, now)
    sweeper.sweep()
    assert _queued(broker, WEBHOOK_QUEUE) == 1
    assert _queued(broker, QUEUE) == 0


def test_sweep_applies_retention_to_finished_batches_only(
    make_runtime: RuntimeFactory, broker: Celery
) -> None:
    runtime = make_runtime(chunk_size=CHUNK, retention_days=2)
    expired, recent = (new_batch(runtime.sessions, 1) for _ in range(2))
    _record_every_image(runtime)
    Sweeper(runtime).sweep()  # finalises both
    running = new_batch(runtime.sessions, 1)
    with transaction(runtime.sessions) as session:
        for batch_id, days in ((expired, 3), (recent, 1), (running, 3)):
            batch = session.get(Batch, batch_id)
            assert batch is not None
            batch.finished_at = utcnow() - timedelta(days=days)

    Sweeper(runtime).sweep()

    with transaction(runtime.sessions) as session:
        left = set(session.scalars(select(Batch.id)))
    assert left == {recent, running}
    assert not (runtime.settings.outputs_dir / str(expired)).exists()
    assert (runtime.settings.outputs_dir / str(recent) / "output.csv").exists()
