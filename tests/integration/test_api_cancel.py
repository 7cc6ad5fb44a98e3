"""Cancelling a batch through the real HTTP API of a real ``pixelbatch serve``: the work stops
(no download starts after the cancel, nothing stored but the done images), and the cancelled
batch still gets its output CSV and exactly one ``CANCELLED`` webhook; a retried batch that
finishes again sends one more webhook, under a new ``webhook-id``."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixelbatch.demo.server import ImageServer, Route
from pixelbatch.webhooks.signing import verify
from tests import support
from tests.integration.conftest import WEBHOOK_SECRET

IMAGES = 30


@pytest.fixture
def slow_images() -> Iterator[ImageServer]:
    """Thirty distinct images, each answered after a second: downloads are in flight when the
    cancel comes."""
    server = ImageServer(latency=1.0)
    for n in range(IMAGES):
        server.add(f"/p{n}.jpg", Route(support.jpeg((200, 150), seed=n), "image/jpeg"))
    with server:
        yield server


def _wait(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_cancel_stops_downloads_and_sends_one_cancelled_webhook(
    tmp_path: Path,
    slow_images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    hook_server, sink = sink_server
    env = {
        "PIXELBATCH_FETCH_ALLOW": f"{slow_images.allow_entry},{hook_server.allow_entry}",
        "PIXELBATCH_FETCH_CONCURRENCY": "4",
        "PIXELBATCH_FETCH_READ_TIMEOUT": "5",
        "PIXELBATCH_FETCH_TOTAL_TIMEOUT": "10",
        "PIXELBATCH_FETCH_RETRIES": "0",
        "PIXELBATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PIXELBATCH_WEBHOOK_BACKOFF_BASE": "0.2",
    }
    u = slow_images.base_url
    rows = [[str(n), f"Product {n}", f"{u}/p{2 * n}.jpg, {u}/p{2 * n + 1}.jpg"] for n in range(15)]
    server = support.ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as client:
            response = client.post(
                "/api/upload",
                files={"file": ("catalog.csv", support.csv_bytes(rows), "text/csv")},
                data={"webhook_url": f"{hook_server.base_url}/hook"},
            )
            assert response.status_code == 202, response.text
            request_id = response.json()["request_id"]
            # Some images done, others downloading.
            _wait(lambda: client.get(f"/api/status/{request_id}").json()["counts"]["images_done"])

            cancel = client.post(f"/api/batches/{request_id}/cancel")
            downloads_at_cancel = len(slow_images.requests)

            assert cancel.status_code == 200, cancel.text
            assert cancel.json()["status"] == "CANCELLED"
            _wait(lambda: len(sink.received) >= 1)
            time.sleep(2.5)  # the downloads in flight end; a second webhook would have come
            status = client.get(f"/api/status/{request_id}").json()
            output = client.get(f"/api/batches/{request_id}/output.csv")
    finally:
        server.stop()

    done = status["counts"]["images_done"]
    assert status["status"] == "CANCELLED" and 0 < done < IMAGES
    # No download started after the cancel; only the done images are stored.
    assert len(slow_images.requests) == downloads_at_cancel < IMAGES
    stored = list((tmp_path / "data" / "outputs" / request_id).glob("*.jpg"))
    assert len(stored) == done
    # Exactly one webhook, CANCELLED, signed.
    assert len(sink.received) == 1
    headers, body = sink.received[0]
    verify(WEBHOOK_SECRET, headers, body)
    payload = json.loads(body)
    assert payload["status"] == "CANCELLED"
    assert payload["counts"]["images_done"] == done
    assert payload["output_csv"].endswith(f"/api/batches/{request_id}/output.csv")
    # The output CSV: done images with their URLs, the rest CANCELLED.
    assert output.status_code == 200, output.text
    table = list(csv.DictReader(io.StringIO(output.text)))
    assert len(table) == 15
    assert {r["Status"] for r in table} <= {"OK", "CANCELLED"}
    assert "CANCELLED" in {r["Status"] for r in table}
    outputs = sum(1 for r in table for cell in r["Output Image Urls"].split(",") if cell.strip())
    assert outputs == done
    cancelled_rows = [r for r in table if r["Status"] == "CANCELLED"]
    assert all("CANCELLED" in r["Errors"] for r in cancelled_rows)


def test_a_retry_that_finishes_sends_one_more_webhook_with_a_new_id(
    tmp_path: Path,
    slow_images: ImageServer,
    sink_server: tuple[ImageServer, support.WebhookSink],
) -> None:
    hook_server, sink = sink_server
    slow_images.latency = 0
    env = {
        "PIXELBATCH_FETCH_ALLOW": f"{slow_images.allow_entry},{hook_server.allow_entry}",
        "PIXELBATCH_FETCH_RETRIES": "0",
        "PIXELBATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PIXELBATCH_WEBHOOK_BACKOFF_BASE": "0.2",
    }
    u = slow_images.base_url
    rows = [["1", "Chair", f"{u}/p0.jpg, {u}/later.jpg"]]
    server = support.ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as client:
            response = client.post(
                "/api/upload",
                files={"file": ("catalog.csv", support.csv_bytes(rows), "text/csv")},
                data={"webhook_url": f"{hook_server.base_url}/hook"},
            )
            assert response.status_code == 202, response.text
            request_id = response.json()["request_id"]
            assert support.wait_final(client, request_id)["status"] == "COMPLETED_WITH_ERRORS"
            _wait(lambda: len(sink.received) == 1)
            slow_images.add("/later.jpg", Route(support.jpeg((200, 150)), "image/jpeg"))

            retry = client.post(f"/api/batches/{request_id}/retry")
            assert retry.status_code == 200, retry.text
            assert support.wait_final(client, request_id)["status"] == "COMPLETED"
            _wait(lambda: len(sink.received) == 2)
    finally:
        server.stop()

    (first_headers, first), (second_headers, second) = sink.received
    assert json.loads(first)["status"] == "COMPLETED_WITH_ERRORS"
    assert json.loads(second)["status"] == "COMPLETED"
    assert first_headers["webhook-id"] != second_headers["webhook-id"]
    verify(WEBHOOK_SECRET, second_headers, second)
