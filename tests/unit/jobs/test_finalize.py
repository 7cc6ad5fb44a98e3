"""Finishing a batch exactly once: the output CSV, the final state, the webhook in the outbox,
recovery of a batch whose finaliser died, and finalisers racing for one batch."""

from __future__ import annotations

import threading
import time
import uuid
from typing import IO

import pytest
from sqlalchemy import select, update

from pixelbatch.db import batch_lifecycle
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, BatchStatus, WebhookDelivery, utcnow
from pixelbatch.demo.server import ImageServer
from pixelbatch.jobs.finalize import final_status, finalize_batch, finalize_ready_batches
from pixelbatch.runtime import Runtime
from pixelbatch.storage import StoredObject
from tests.unit.jobs.helpers import (
    RuntimeFactory,
    batch_of,
    read_output_csv,
    record_all,
    upload,
    urls,
)


def _deliveries(runtime: Runtime, batch_id: uuid.UUID) -> list[WebhookDelivery]:
    with transaction(runtime.sessions) as session:
        return list(
            session.scalars(select(WebhookDelivery).where(WebhookDelivery.batch_id == batch_id))
        )


def _claim_finalisation(runtime: Runtime, batch_id: uuid.UUID, lease_seconds: float) -> None:
    """What a finaliser does first; a negative lease is one that has already run out."""
    with transaction(runtime.sessions) as session:
        assert batch_lifecycle.claim_finalization(session, batch_id, lease_seconds)


@pytest.mark.parametrize(
    ("done", "failed", "status"),
    [
        (3, 0, BatchStatus.COMPLETED),
        (2, 1, BatchStatus.COMPLETED_WITH_ERRORS),
        (0, 3, BatchStatus.FAILED),
        (0, 0, BatchStatus.COMPLETED),
    ],
)
def test_final_status(done: int, failed: int, status: BatchStatus) -> None:
    assert final_status(done, failed) == status


# --------------------------------------------------------------------------- finalize_batch


def test_finalize_batch_refuses_a_batch_with_images_left(
    runtime: Runtime, image_server: ImageServer
) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])

    assert finalize_batch(runtime, batch_id) is False

    batch = batch_of(runtime.sessions, batch_id)
    assert batch.status == BatchStatus.PENDING and batch.output_key is None
    assert batch.finalizer_lease_until is None
    assert not (runtime.settings.outputs_dir / str(batch_id) / "output.csv").exists()


def test_finalize_batch_writes_the_csv_and_queues_the_webhook_once(
    runtime: Runtime, image_server: ImageServer
) -> None:
    hook = image_server.base_url + "/hook"
    batch_id = upload(
        runtime,
        [
            ["1", "Chair", urls(image_server, "/a.jpg", "/missing.jpg")],
            ["2", "=Lamp", urls(image_server, "/c.png")],
        ],
        webhook_url=hook,
    )
    assert record_all(runtime) == 3

    assert finalize_batch(runtime, batch_id) is True

    batch = batch_of(runtime.sessions, batch_id)
    assert batch.status == BatchStatus.COMPLETED_WITH_ERRORS
    assert batch.output_key == f"{batch_id}/output.csv"
    assert batch.message == "2 of 3 images processed, 1 failed"
    chair, lamp = read_output_csv(runtime, batch_id)
    assert chair["Status"] == "PARTIAL" and lamp["Status"] == "OK"
    assert lamp["Product Name"] == "'=Lamp"  # a formula cell is neutralised
    first, second = (cell.strip() for cell in chair["Output Image Urls"].split(","))
    assert first == runtime.storage.url(f"{batch_id}/0000002-01.jpg") and second == ""
    assert chair["Errors"] == f"image 2 ({image_server.base_url}/missing.jpg): HTTP 404 Not Found"
    [delivery] = _deliveries(runtime, batch_id)
    assert delivery.url == hook
    assert delivery.payload["status"] == "COMPLETED_WITH_ERRORS"
    assert delivery.payload["output_csv"].endswith(f"/api/batches/{batch_id}/output.csv")
    assert delivery.payload["counts"] == {
        "products": 2,
        "images_total": 3,
        "images_done": 2,
        "images_failed": 1,
        "images_kept_original": 1,
        "images_grew": 0,
    }
    csv_path = runtime.storage.local_path(f"{batch_id}/output.csv")
    assert csv_path is not None
    written = csv_path.stat()

    assert finalize_batch(runtime, batch_id) is False

    again = csv_path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert len(_deliveries(runtime, batch_id)) == 1
    assert batch_of(runtime.sessions, batch_id).finished_at == batch.finished_at
    # The CSV is written beside the data, never left behind as a temporary file.
    assert not list(runtime.settings.data_dir.glob("*.csv"))


def test_a_batch_of_failures_only_is_failed(runtime: Runtime, image_server: ImageServer) -> None:
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/missing.jpg")]])
    record_all(runtime)

    assert finalize_batch(runtime, batch_id) is True

    assert batch_of(runtime.sessions, batch_id).status == BatchStatus.FAILED
    [row] = read_output_csv(runtime, batch_id)
    assert row["Status"] == "FAILED" and row["Output Image Urls"] == ""
    assert _deliveries(runtime, batch_id) == []  # no webhook URL, no delivery


# --------------------------------------------------------------------------- recovery


def test_finalize_ready_batches_recovers_a_batch_whose_finaliser_died(
    runtime: Runtime, image_server: ImageServer
) -> None:
    orphan = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    in_hand = upload(runtime, [["1", "Lamp", urls(image_server, "/b.jpg")]])
    unclaimed = upload(runtime, [["1", "Desk", urls(image_server, "/c.png")]])
    record_all(runtime)
    waiting = upload(runtime, [["1", "Rug", urls(image_server, "/a.jpg")]])
    _claim_finalisation(runtime, orphan, lease_seconds=-1)  # claimed; then its worker died
    _claim_finalisation(runtime, in_hand, lease_seconds=300)  # a live finaliser holds it
    # ``unclaimed``: its last image's worker died before it could claim the finalisation.

    assert finalize_ready_batches(runtime, only=orphan) == [orphan]
    assert batch_of(runtime.sessions, unclaimed).status == BatchStatus.PROCESSING
    assert finalize_ready_batches(runtime) == [unclaimed]
    assert finalize_ready_batches(runtime) == []

    for batch_id in (orphan, unclaimed):
        assert batch_of(runtime.sessions, batch_id).status == BatchStatus.COMPLETED
        [row] = read_output_csv(runtime, batch_id)
        assert row["Status"] == "OK"
    assert batch_of(runtime.sessions, in_hand).status == BatchStatus.PROCESSING
    assert batch_of(runtime.sessions, waiting).status == BatchStatus.PENDING
    assert not (runtime.settings.outputs_dir / str(in_hand) / "output.csv").exists()


def test_racing_finalisers_finalise_once(runtime: Runtime, image_server: ImageServer) -> None:
    batch_id = upload(
        runtime,
        [["1", "Chair", urls(image_server, "/a.jpg")]],
        webhook_url=image_server.base_url + "/hook",
    )
    record_all(runtime)
    racers = 4
    start = threading.Barrier(racers)
    results: list[bool] = []
    lock = threading.Lock()

    def race() -> None:
        start.wait()
        won = finalize_batch(runtime, batch_id)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == [False] * (racers - 1) + [True]
    assert batch_of(runtime.sessions, batch_id).status == BatchStatus.COMPLETED
    assert len(_deliveries(runtime, batch_id)) == 1
    assert len(read_output_csv(runtime, batch_id)) == 1


def test_a_slow_finaliser_keeps_its_short_lease_and_a_dead_ones_is_taken_over(
    make_runtime: RuntimeFactory, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finaliser's lease is short (a dead finaliser's batch is taken over within
    seconds) and its heartbeat keeps it while the CSV takes several leases to store."""
    runtime = make_runtime(finalize_lease_seconds=1.5)
    slow = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    record_all(runtime)
    real_put = runtime.storage.put_file
    probes: list[list[uuid.UUID]] = []

    def slow_put(key: str, source: IO[bytes], content_type: str) -> StoredObject:
        if not probes:  # the first store only: the storage stays real, only slower
            time.sleep(4.0)  # over two leases
            probes.append(finalize_ready_batches(runtime))  # another worker's recovery pass
        return real_put(key, source, content_type)

    monkeypatch.setattr(runtime.storage, "put_file", slow_put)
    assert finalize_batch(runtime, slow)
    assert probes == [[]]

    dead = upload(runtime, [["1", "Lamp", urls(image_server, "/b.jpg")]])
    record_all(runtime)
    _claim_finalisation(runtime, dead, lease_seconds=60)  # claimed, then its holder died
    assert finalize_ready_batches(runtime) == []
    with transaction(runtime.sessions) as session:  # ... and its lease ran out
        session.execute(
            update(Batch).where(Batch.id == dead).values(finalizer_lease_until=utcnow())
        )
    assert finalize_ready_batches(runtime) == [dead]
