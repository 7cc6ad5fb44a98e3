"""``run_to_completion`` (``pixelbatch process``): it finishes its own batch's webhook within
a bounded wait, gives it up for good when that ends, and never sends another run's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from pixelbatch.db.engine import transaction
from pixelbatch.db.models import DeliveryStatus, WebhookDelivery
from pixelbatch.demo.server import ImageServer
from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.jobs.local import ABANDONED, run_to_completion
from pixelbatch.runtime import Runtime
from tests import support
from tests.unit.jobs.helpers import RuntimeFactory, record_all, upload, urls


@pytest.fixture
def hooks() -> Iterator[tuple[ImageServer, support.WebhookSink, support.WebhookSink]]:
    """A receiver for this run's webhook (refuses the first attempt) and one for an earlier
    run's, which must never be called."""
    server = ImageServer()
    mine = support.WebhookSink(fail_first=1)
    other = support.WebhookSink()
    server.add("/mine", mine)
    server.add("/other", other)
    with server:
        yield server, mine, other


def _delivery(runtime: Runtime, batch_id: uuid.UUID) -> WebhookDelivery:
    with transaction(runtime.sessions) as session:
        delivery = session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id)
        )
        assert delivery is not None
        session.expunge(delivery)
        return delivery


def test_retries_its_own_webhook_until_delivered_and_leaves_other_runs_alone(
    make_runtime: RuntimeFactory,
    image_server: ImageServer,
    hooks: tuple[ImageServer, support.WebhookSink, support.WebhookSink],
) -> None:
    server, mine, other = hooks
    runtime = make_runtime(
        fetch_allow=[image_server.allow_entry, server.allow_entry], webhook_backoff_base=0.2
    )
    # An earlier run that ended with its webhook still due (it exited before sending it).
    earlier = upload(
        runtime,
        [["1", "Chair", urls(image_server, "/a.jpg")]],
        webhook_url=f"{server.base_url}/other",
    )
    record_all(runtime)
    assert finalize_batch(runtime, earlier)

    batch_id = upload(
        runtime,
        [["1", "Lamp", urls(image_server, "/c.png")]],
        webhook_url=f"{server.base_url}/mine",
    )
    run_to_completion(runtime, batch_id, poll=0.05, webhook_wait=20)

    delivery = _delivery(runtime, batch_id)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 2 and mine.calls == 2  # attempt 2 came within this run
    assert other.calls == 0
    untouched = _delivery(runtime, earlier)
    assert untouched.status == DeliveryStatus.PENDING and untouched.attempts == 0


def test_an_undelivered_webhook_is_given_up_when_the_wait_ends(
    make_runtime: RuntimeFactory,
    image_server: ImageServer,
    hooks: tuple[ImageServer, support.WebhookSink, support.WebhookSink],
) -> None:
    server, mine, _ = hooks
    # The next attempt would come after the wait: the run must not leave it for later.
    runtime = make_runtime(
        fetch_allow=[image_server.allow_entry, server.allow_entry], webhook_backoff_base=60
    )
    batch_id = upload(
        runtime,
        [["1", "Lamp", urls(image_server, "/c.png")]],
        webhook_url=f"{server.base_url}/mine",
    )
    run_to_completion(runtime, batch_id, poll=0.05, webhook_wait=1)

    delivery = _delivery(runtime, batch_id)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 1 and mine.calls == 1
    assert delivery.last_error == f"{ABANDONED} (last attempt: receiver answered HTTP 500)"
