"""The embedded dispatcher in-process: it leases a batch's images, runs the routine with a real
process pool for transforms, finalises the batch, sends its webhook, and on stop hands back
what it had not started. Few tests: each starts a transform pool child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler

import pytest
from sqlalchemy import func, select

from pixelbatch.db.models import (
    BatchStatus,
    DeliveryStatus,
    Image,
    ImageStatus,
    Priority,
    WebhookDelivery,
)
from pixelbatch.demo.server import ImageServer
from pixelbatch.jobs.embedded import EmbeddedWorker
from pixelbatch.runtime import Runtime
from tests import support
from tests.unit.jobs.helpers import (
    RuntimeFactory,
    batch_of,
    claim_all,
    image_statuses,
    read_output_csv,
    refuse_recordings,
    upload,
    urls,
    wait_for,
)


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    # Two download threads (four images in flight) and one transform child process.
    return make_runtime(transform_workers=1, fetch_concurrency=2)


def _leased(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Image).where(Image.lease_until.is_not(None))
            )
            or 0
        )


def test_embedded_worker_processes_its_batch_and_sends_the_webhook(
    runtime: Runtime, image_server: ImageServer
) -> None:
    sink = support.WebhookSink()
    hook = image_server.add(f"/hook-{uuid.uuid4().hex}", sink)
    mine = upload(
        runtime,
        [
            ["1", "Chair", urls(image_server, "/a.jpg", "/b.jpg")],
            ["2", "Lamp", urls(image_server, "/c.png", "/missing.jpg")],
            ["3", "Desk", urls(image_server, "/a.jpg")],  # a repeat: fetched once
        ],
        webhook_url=hook,
    )
    other = upload(runtime, [["1", "Rug", urls(image_server, "/b.jpg")]])
    worker = EmbeddedWorker(runtime, batch_id=mine)
    worker.start()
    try:
        wait_for(lambda: bool(sink.received))
    finally:
        worker.stop()

    batch = batch_of(runtime.sessions, mine)
    assert batch.status == BatchStatus.COMPLETED_WITH_ERRORS
    assert (batch.images_done, batch.images_failed, batch.images_total) == (4, 1, 5)
    assert image_statuses(runtime.sessions, mine) == {"DONE": 4, "FAILED": 1}
    rows = read_output_csv(runtime, mine)
    assert [row["Status"] for row in rows] == ["OK", "PARTIAL", "OK"]
    chair_first = rows[0]["Output Image Urls"].split(",")[0].strip()
    assert chair_first.endswith(f"/files/{mine}/0000002-01.jpg")
    assert rows[2]["Output Image Urls"] == chair_first  # the repeat shares the output
    [(headers, body)] = sink.received
    payload = json.loads(body)
    assert payload["request_id"] == str(mine)
    assert payload["status"] == "COMPLETED_WITH_ERRORS"
    assert payload["counts"]["images_failed"] == 1
    assert "webhook-signature" in headers
    with runtime.sessions() as session:
        [delivery] = session.scalars(select(WebhookDelivery)).all()
        assert delivery.status == DeliveryStatus.DELIVERED
    # A worker scoped to one batch leaves the others alone, and stopping leaves no lease.
    assert batch_of(runtime.sessions, other).status == BatchStatus.PENDING
    assert image_statuses(runtime.sessions, other) == {"PENDING": 1}
    assert worker.inflight == 0
    assert _leased(runtime) == 0


def _slow_catalog(
    runtime: Runtime, image_server: ImageServer, rows: int, delay: float
) -> uuid.UUID:
    """A batch of ``rows`` images, each served after ``delay`` seconds."""
    body = support.jpeg((64, 48))

    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    paths = [image_server.add(f"/slow-{uuid.uuid4().hex}.jpg", slow) for _ in range(rows)]
    return upload(runtime, [[str(i), f"p{i}", url] for i, url in enumerate(paths)])


def test_stopping_hands_back_the_images_it_had_not_started(
    runtime: Runtime, image_server: ImageServer
) -> None:
    batch_id = _slow_catalog(runtime, image_server, 6, 0.5)
    worker = EmbeddedWorker(runtime)
    worker.start()
    try:
        # Four in flight: two downloading, two queued behind them.
        wait_for(lambda: worker.inflight == worker.capacity == 4)
    finally:
        worker.stop()

    statuses = image_statuses(runtime.sessions, batch_id)
    assert "PROCESSING" not in statuses  # the two queued downloads were handed back
    assert statuses.get("PENDING", 0) >= 2  # those never claimed, and the unstarted
    assert statuses.get("DONE", 0) >= 1  # the downloads under way were finished
    assert sum(statuses.values()) == 6
    assert _leased(runtime) == 0
    assert batch_of(runtime.sessions, batch_id).status == BatchStatus.PROCESSING


def test_a_new_upload_is_leased_at_once_even_with_no_room_free(
    make_runtime: RuntimeFactory, image_server: ImageServer
) -> None:
    """With every slot taken by slow downloads, a high-priority upload is still leased as
    soon as the dispatcher hears of it (``new_work``), not after a step of images finished:
    only then can it go ahead of them in the download and transform queues."""
    runtime = make_runtime(
        transform_workers=1, fetch_concurrency=2, fetch_read_timeout=6.0, fetch_total_timeout=10.0
    )
    normal = _slow_catalog(runtime, image_server, 8, 3.0)  # under the 6 s read timeout
    worker = EmbeddedWorker(runtime)
    worker.new_work(8)  # as the API says after an upload: with room free, no more than it
    worker.start()
    try:
        wait_for(lambda: worker.inflight == worker.capacity == 4)
        time.sleep(0.3)
        assert worker.inflight == 4
        started = time.monotonic()
        urgent = upload(
            runtime, [["1", "Lamp", urls(image_server, "/a.jpg")]], priority=Priority.HIGH
        )
        worker.new_work(1)
        wait_for(lambda: image_statuses(runtime.sessions, urgent) != {"PENDING": 1}, 1.5)
        assert time.monotonic() - started < 1.5
        # No slow download had finished: the room came from new_work alone.
        assert "DONE" not in image_statuses(runtime.sessions, normal)
        assert worker.inflight == 5  # one beyond capacity, for now
        # Another upload meanwhile is not leased past that: it waits for room.
        later = upload(
            runtime, [["1", "Rug", urls(image_server, "/b.jpg")]], priority=Priority.HIGH
        )
        worker.new_work(1)
        time.sleep(0.5)  # five polls of the dispatcher
        assert worker.inflight == 5
        assert image_statuses(runtime.sessions, later) == {"PENDING": 1}
        assert "DONE" not in image_statuses(runtime.sessions, normal)  # still no room made
        wait_for(lambda: batch_of(runtime.sessions, urgent).status == BatchStatus.COMPLETED)
    finally:
        worker.stop()


def test_an_image_it_could_not_record_goes_back_at_once_not_after_its_lease(
    make_runtime: RuntimeFactory, image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database refuses the first recording (a fault injected at the one call: the
    # database stays real), then recovers. The lease is a long 120 s: the image can only
    # finish within the wait below if the worker handed it back when recording failed.
    runtime = make_runtime(transform_workers=1, fetch_concurrency=2, lease_seconds=120)
    failures = refuse_recordings(monkeypatch, lambda _image, refused: not refused)
    batch_id = upload(runtime, [["1", "Chair", urls(image_server, "/a.jpg")]])
    assert runtime.settings.lease_seconds == 120
    worker = EmbeddedWorker(runtime)
    worker.start()
    try:
        wait_for(lambda: batch_of(runtime.sessions, batch_id).status == BatchStatus.COMPLETED)
    finally:
        worker.stop()

    assert len(failures) == 1
    assert image_statuses(runtime.sessions, batch_id) == {"DONE": 1}
    with runtime.sessions() as session:
        assert session.scalar(select(Image.attempts).where(Image.batch_id == batch_id)) == 2


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_on_sqlite_a_restart_takes_back_what_a_dead_run_had_leased_at_once(
    runtime: Runtime, image_server: ImageServer
) -> None:
    # Leased for 120 s by a run that is gone (its process exited), one of an earlier version
    # (no pid in its name), and one leased by a live process (this one): only the live
    # process's lease is kept, on SQLite; on PostgreSQL, a shared database, none is touched.
    paths = ["/a.jpg", "/b.jpg", "/c.png"]
    batch_id = upload(
        runtime, [[str(i), f"p{i}", urls(image_server, path)] for i, path in enumerate(paths)]
    )
    dead = f"embedded-{_dead_pid()}-0123456789ab"
    legacy = "embedded-0123456789ab"
    live = f"embedded-{os.getpid()}-ba9876543210"
    for owner in (dead, legacy, live):
        assert len(claim_all(runtime, owner, limit=1, lease_seconds=120)) == 1
    worker = EmbeddedWorker(runtime, batch_id=batch_id)
    worker.start()
    try:
        if runtime.engine.dialect.name == "sqlite":
            wait_for(lambda: image_statuses(runtime.sessions, batch_id).get("DONE") == 2)
        else:
            time.sleep(0.5)
    finally:
        worker.stop()

    with runtime.sessions() as session:
        owners = set(
            session.scalars(
                select(Image.lease_owner).where(
                    Image.batch_id == batch_id, Image.status == ImageStatus.PROCESSING
                )
            )
        )
    if runtime.engine.dialect.name == "sqlite":
        assert owners == {live}
        assert image_statuses(runtime.sessions, batch_id) == {"DONE": 2, "PROCESSING": 1}
    else:
        assert owners == {dead, legacy, live}
        assert image_statuses(runtime.sessions, batch_id) == {"PROCESSING": 3}
