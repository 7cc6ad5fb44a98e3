"""A cancel that stops work: in-flight images abandoned at their next stage boundary, nothing
stored for an image not recorded as done, and the cancelled batch still finalised once (its
output CSV with CANCELLED rows, its CANCELLED webhook); every terminal state's webhook."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from pixelbatch import batches
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import BatchStatus, WebhookDelivery
from pixelbatch.demo.server import ImageServer, Route
from pixelbatch.jobs import recording, routine
from pixelbatch.jobs.finalize import CANCELLED_REASON, finalize_batch, finalize_ready_batches
from pixelbatch.jobs.transform_pool import TransformRunner, inline_runner
from pixelbatch.runtime import Runtime
from tests.unit.jobs.helpers import (
    SOURCE_JPEG,
    RuntimeFactory,
    batch_of,
    claim_all,
    image_statuses,
    read_output_csv,
    record_all,
    upload,
    urls,
    wait_for,
)

IMAGES = 30


@pytest.fixture
def slow_server() -> Iterator[ImageServer]:
    """Thirty distinct images; ``latency`` is set by each test while it runs."""
    server = ImageServer()
    for n in range(IMAGES):
        server.add(f"/p{n}.jpg", Route(SOURCE_JPEG, "image/jpeg"))
    with server:
        yield server


@pytest.fixture
def runtime(make_runtime: RuntimeFactory, slow_server: ImageServer) -> Runtime:
    return make_runtime(
        fetch_allow=[slow_server.allow_entry],
        fetch_read_timeout=5.0,
        fetch_concurrency=8,
        fetch_per_host=8,
    )


@pytest.fixture
def runner(runtime: Runtime) -> TransformRunner:
    return inline_runner(runtime.settings.max_pixels)


def _stored_images(runtime: Runtime, batch_id: uuid.UUID) -> list[str]:
    folder = runtime.settings.outputs_dir / str(batch_id)
    return sorted(p.name for p in folder.glob("*") if p.is_file() and p.suffix != ".csv")


def _deliveries(runtime: Runtime, batch_id: uuid.UUID) -> list[WebhookDelivery]:
    with transaction(runtime.sessions) as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.batch_id == batch_id)
                .order_by(WebhookDelivery.created_at)
            )
        )


def _catalog(server: ImageServer) -> list[list[str]]:
    """Fifteen products of two images each."""
    return [
        [str(n), f"Product {n}", urls(server, f"/p{2 * n}.jpg", f"/p{2 * n + 1}.jpg")]
        for n in range(IMAGES // 2)
    ]


def test_cancel_abandons_in_flight_images_and_finalises_the_batch_once(
    runtime: Runtime, slow_server: ImageServer, runner: TransformRunner
) -> None:
    hook = slow_server.base_url + "/hook"
    batch_id = upload(runtime, _catalog(slow_server), webhook_url=hook)
    # Six images done quickly...
    for item in claim_all(runtime, "w", limit=6):
        routine.handle_image(runtime, item, "w", runner)
    # ... then eight in flight, their downloads held by a slow server, when the cancel comes.
    slow_server.latency = 1.5
    in_flight = claim_all(runtime, "w", limit=8)
    worker = threading.Thread(
        target=routine.process_chunk, args=(runtime, in_flight, "w", runner, 8)
    )
    worker.start()
    wait_for(lambda: len(slow_server.requests) == 6 + 8)
    tenant = batch_of(runtime.sessions, batch_id).tenant

    cancelled = batches.cancel_batch(runtime, batch_id, tenant=tenant)
    worker.join(30)

    assert not worker.is_alive()
    batch = batch_of(runtime.sessions, batch_id)
    assert (batch.status, batch.images_done, batch.images_failed) == (BatchStatus.CANCELLED, 6, 0)
    assert image_statuses(runtime.sessions, batch_id) == {"DONE": 6, "CANCELLED": 24}
    # Nothing stored for the abandoned images, nothing new leased or downloaded.
    assert len(_stored_images(runtime, batch_id)) == batch.images_done == 6
    assert claim_all(runtime, "other") == []
    assert len(slow_server.requests) == 6 + 8
    assert cancelled.status == BatchStatus.CANCELLED
    assert cancelled.output_key == f"{batch_id}/output.csv"  # finalised by the cancel itself
    # The output CSV: done images with their URLs, the rest CANCELLED.
    rows = read_output_csv(runtime, batch_id)
    assert len(rows) == 15
    assert [r["Status"] for r in rows] == ["OK"] * 3 + ["CANCELLED"] * 12
    assert all(r["Output Image Urls"].count("/files/") == 2 for r in rows[:3])
    assert rows[5]["Output Image Urls"] == ", "
    assert rows[5]["Errors"].count(CANCELLED_REASON) == 2
    # One webhook, CANCELLED; no later pass finalises it again.
    assert finalize_ready_batches(runtime) == []
    assert finalize_batch(runtime, batch_id) is False
    [delivery] = _deliveries(runtime, batch_id)
    assert delivery.payload["status"] == "CANCELLED"
    assert delivery.payload["counts"]["images_done"] == 6
    assert delivery.payload["output_csv"].endswith(f"/api/batches/{batch_id}/output.csv")
    assert "cancelled by client" in delivery.payload["message"]


def test_a_cancelled_batch_left_unfinalised_is_finalised_by_the_recovery_pass(
    runtime: Runtime, slow_server: ImageServer
) -> None:
    """The API process died between the cancel and its finalisation: the workers'
    maintenance pass (embedded loop, Celery sweeper) finishes it."""
    from pixelbatch.db import batch_lifecycle

    batch_id = upload(runtime, _catalog(slow_server)[:2], webhook_url=slow_server.base_url + "/h")
    with transaction(runtime.sessions) as session:
        assert batch_lifecycle.cancel_batch(session, batch_id)

    assert finalize_ready_batches(runtime) == [batch_id]
    assert finalize_ready_batches(runtime) == []

    assert [r["Status"] for r in read_output_csv(runtime, batch_id)] == ["CANCELLED"] * 2
    assert [d.payload["status"] for d in _deliveries(runtime, batch_id)] == ["CANCELLED"]


def test_produce_checks_wanted_at_each_stage_boundary(
    runtime: Runtime, slow_server: ImageServer, runner: TransformRunner
) -> None:
    batch_id = upload(runtime, _catalog(slow_server)[:2])
    first, second, third, fourth = claim_all(runtime, "w")
    answers = iter([True, False])

    # Not wanted before the download: nothing fetched.
    abandoned = routine.produce(first, runtime.fetcher, runtime.storage, runner, lambda: False)
    assert abandoned.abandoned and abandoned.success is None
    assert slow_server.requests == []
    # Not wanted after the download: fetched, nothing transformed or stored.
    abandoned = routine.produce(
        second, runtime.fetcher, runtime.storage, runner, lambda: next(answers)
    )
    assert abandoned.abandoned and len(slow_server.requests) == 1
    assert _stored_images(runtime, batch_id) == []
    # Recording an abandoned outcome changes nothing.
    assert recording.record(runtime.sessions, abandoned, "w") is False
    assert image_statuses(runtime.sessions, batch_id) == {"PROCESSING": 4}
    # Wanted throughout: stored.
    kept = routine.produce(third, runtime.fetcher, runtime.storage, runner, lambda: True)
    assert kept.success is not None and not kept.abandoned
    assert _stored_images(runtime, batch_id) == [kept.success.output_key.split("/")[1]]
    del fourth


def test_an_image_stored_just_before_the_cancel_is_removed_when_it_cannot_be_recorded(
    runtime: Runtime, slow_server: ImageServer, runner: TransformRunner
) -> None:
    """The cancel lands between the last boundary and the store: the recording finds the
    image cancelled and deletes what was stored."""
    batch_id = upload(runtime, _catalog(slow_server)[:1])
    tenant = batch_of(runtime.sessions, batch_id).tenant
    first, second = claim_all(runtime, "w")
    outcome = routine.produce(first, runtime.fetcher, runtime.storage, runner)
    assert outcome.success is not None and len(_stored_images(runtime, batch_id)) == 1

    batches.cancel_batch(runtime, batch_id, tenant=tenant)

    assert recording.record(runtime.sessions, outcome, "w", runtime.storage) is False
    assert _stored_images(runtime, batch_id) == []
    assert image_statuses(runtime.sessions, batch_id) == {"CANCELLED": 2}
    del second


def test_a_store_that_cannot_delete_leaves_the_cancelled_outcome_unrecorded_without_failing(
    runtime: Runtime,
    slow_server: ImageServer,
    runner: TransformRunner,
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    """Object storage (moto's real S3 API) whose delete fails (the bucket is gone): the
    removal is best effort, so the recording still answers instead of failing the chunk."""
    from pixelbatch.storage.s3 import S3Location, S3Storage

    batch_id = upload(runtime, _catalog(slow_server)[:1])
    tenant = batch_of(runtime.sessions, batch_id).tenant
    first, second = claim_all(runtime, "w")
    outcome = routine.produce(first, runtime.fetcher, runtime.storage, runner)
    assert outcome.success is not None
    batches.cancel_batch(runtime, batch_id, tenant=tenant)
    gone = S3Storage(S3Location(s3_bucket + "-gone", ""), endpoint_url=s3_endpoint, max_attempts=1)

    assert recording.record(runtime.sessions, outcome, "w", gone) is False
    assert image_statuses(runtime.sessions, batch_id) == {"CANCELLED": 2}
    del second


# --------------------------------------------------------------------------- every end's webhook


@pytest.mark.parametrize(
    ("paths", "status"),
    [
        (["/p0.jpg", "/p1.jpg"], BatchStatus.COMPLETED),
        (["/p0.jpg", "/missing.jpg"], BatchStatus.COMPLETED_WITH_ERRORS),
        (["/missing.jpg", "/gone.jpg"], BatchStatus.FAILED),
    ],
)
def test_every_terminal_state_queues_its_webhook(
    runtime: Runtime, slow_server: ImageServer, paths: list[str], status: BatchStatus
) -> None:
    batch_id = upload(
        runtime,
        [["1", "Chair", urls(slow_server, *paths)]],
        webhook_url=slow_server.base_url + "/hook",
    )
    record_all(runtime)

    assert finalize_batch(runtime, batch_id) is True

    [delivery] = _deliveries(runtime, batch_id)
    assert delivery.payload["status"] == status.value
    assert batch_of(runtime.sessions, batch_id).status == status


def test_a_retry_that_finishes_sends_one_more_webhook_with_a_new_id(
    runtime: Runtime, slow_server: ImageServer
) -> None:
    batch_id = upload(
        runtime,
        [["1", "Chair", urls(slow_server, "/p0.jpg", "/later.jpg")]],
        webhook_url=slow_server.base_url + "/hook",
    )
    tenant = batch_of(runtime.sessions, batch_id).tenant
    record_all(runtime)
    assert finalize_batch(runtime, batch_id) is True
    slow_server.add("/later.jpg", Route(SOURCE_JPEG, "image/jpeg"))

    _, count = batches.retry_failed(runtime, batch_id, tenant=tenant)
    assert count == 1
    record_all(runtime)
    assert finalize_batch(runtime, batch_id) is True

    first, second = _deliveries(runtime, batch_id)
    assert first.payload["status"] == "COMPLETED_WITH_ERRORS"
    assert second.payload["status"] == "COMPLETED"
    assert first.event_id != second.event_id
