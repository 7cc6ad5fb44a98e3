"""Deleting batches through a real ``pixelbatch serve``: the rows and stored objects of the
batch go (the storage directory and the SQLite tables are listed), other batches stay, the
id then answers 404 everywhere; a running batch is cancelled first and its in-flight images
leave no object behind; the CLI deletes too; and retention deletes old finished batches."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelbatch.demo.server import ImageServer, Route
from tests import support

IMAGES = 12
# Every table that holds a batch's rows, with the column naming the batch.
BATCH_TABLES = {
    "batches": "id",
    "products": "batch_id",
    "images": "batch_id",
    "webhook_deliveries": "batch_id",
}


@pytest.fixture
def pictures() -> Iterator[ImageServer]:
    server = ImageServer()
    for n in range(IMAGES):
        server.add(f"/p{n}.jpg", Route(support.jpeg((160, 120), seed=n), "image/jpeg"))
    with server:
        yield server


def _rows(data_dir: Path, batch_id: str) -> dict[str, int]:
    """How many rows of each table belong to the batch, read from the SQLite file itself."""
    db = sqlite3.connect(data_dir / "pixelbatch.sqlite3")
    try:
        hexed = batch_id.replace("-", "")
        counts = {
            table: db.execute(
                f"SELECT count(*) FROM {table} WHERE {column} IN (?, ?)",
                (batch_id, hexed),
            ).fetchone()[0]
            for table, column in BATCH_TABLES.items()
        }
        counts["webhook_attempts"] = db.execute(
            "SELECT count(*) FROM webhook_attempts WHERE delivery_id IN "
            "(SELECT id FROM webhook_deliveries WHERE batch_id IN (?, ?))",
            (batch_id, hexed),
        ).fetchone()[0]
    finally:
        db.close()
    return counts


def _stored(data_dir: Path, batch_id: str) -> list[str]:
    top = data_dir / "outputs" / batch_id
    return sorted(str(p.relative_to(top)) for p in top.rglob("*")) if top.exists() else []


def _upload(client: httpx.Client, rows: list[list[str]], **data: str) -> str:
    response = client.post(
        "/api/upload", files={"file": ("c.csv", support.csv_bytes(rows), "text/csv")}, data=data
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def _assert_gone(client: httpx.Client, batch_id: str, image_key: str) -> None:
    for method, path in (
        ("GET", f"/api/status/{batch_id}"),
        ("GET", f"/api/batches/{batch_id}"),
        ("GET", f"/api/batches/{batch_id}/images"),
        ("GET", f"/api/batches/{batch_id}/output.csv"),
        ("GET", f"/files/{image_key}"),
        ("GET", f"/files/{batch_id}/output.csv"),
        ("POST", f"/api/batches/{batch_id}/cancel"),
        ("POST", f"/api/batches/{batch_id}/retry"),
        ("DELETE", f"/api/batches/{batch_id}"),
    ):
        answer = client.request(method, path)
        assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text}"


def test_delete_removes_every_row_and_object_of_the_batch_only(
    tmp_path: Path, pictures: ImageServer, sink_server: tuple[ImageServer, support.WebhookSink]
) -> None:
    hook_server, sink = sink_server
    data_dir = tmp_path / "data"
    env = {"PIXELBATCH_FETCH_ALLOW": f"{pictures.allow_entry},{hook_server.allow_entry}"}
    u = pictures.base_url
    server = support.ServerProcess(data_dir, env).start()
    try:
        with server.client() as client:
            hook = {"webhook_url": f"{hook_server.base_url}/hook"}
            doomed = _upload(
                client, [["1", "A", f"{u}/p0.jpg, {u}/p1.jpg"], ["2", "B", f"{u}/p2.jpg"]], **hook
            )
            kept = _upload(client, [["1", "C", f"{u}/p3.jpg"]], **hook)
            for batch_id in (doomed, kept):
                assert support.wait_final(client, batch_id)["status"] == "COMPLETED"
            deadline = time.monotonic() + 30
            # Both webhooks delivered and their attempts recorded (just after the answer).
            while len(sink.received) < 2 or not _rows(data_dir, kept)["webhook_attempts"]:
                assert time.monotonic() < deadline, "webhooks not delivered"
                time.sleep(0.1)
            while not _rows(data_dir, doomed)["webhook_attempts"]:
                assert time.monotonic() < deadline, "webhook attempt not recorded"
                time.sleep(0.1)
            image_key = f"{doomed}/0000002-01.jpg"
            before = _stored(data_dir, doomed)
            assert {"input.csv", "output.csv"} < set(before)
            assert len([name for name in before if name.endswith(".jpg")]) == 3
            # One attempt, or more when a loaded machine timed the first out: all go with it.
            assert _rows(data_dir, doomed)["webhook_attempts"] >= 1
            kept_rows, kept_files = _rows(data_dir, kept), _stored(data_dir, kept)

            answer = client.delete(f"/api/batches/{doomed}")
            assert answer.status_code == 204, answer.text
            assert answer.content == b""

            assert not (data_dir / "outputs" / doomed).exists()
            assert _rows(data_dir, doomed) == dict.fromkeys([*BATCH_TABLES, "webhook_attempts"], 0)
            _assert_gone(client, doomed, image_key)
            # The other batch is untouched.
            assert _rows(data_dir, kept) == kept_rows and kept_rows["images"] == 1
            assert _stored(data_dir, kept) == kept_files
            assert client.get(f"/api/batches/{kept}/output.csv").status_code == 200
            listed = client.get("/api/batches").json()
            assert [b["request_id"] for b in listed["items"]] == [kept]
    finally:
        server.stop()


def test_delete_of_a_running_batch_cancels_it_and_leaves_no_object(tmp_path: Path) -> None:
    slow = ImageServer(latency=1.0)
    for n in range(IMAGES):
        slow.add(f"/p{n}.jpg", Route(support.jpeg((160, 120), seed=n), "image/jpeg"))
    data_dir = tmp_path / "data"
    env = {
        "PIXELBATCH_FETCH_ALLOW": slow.allow_entry,
        "PIXELBATCH_FETCH_CONCURRENCY": "3",
        "PIXELBATCH_FETCH_RETRIES": "0",
    }
    with slow:
        u = slow.base_url
        server = support.ServerProcess(data_dir, env).start()
        try:
            with server.client() as client:
                rows = [[str(n), f"P{n}", f"{u}/p{n}.jpg"] for n in range(IMAGES)]
                running = _upload(client, rows)
                deadline = time.monotonic() + 30
                while not client.get(f"/api/status/{running}").json()["counts"]["images_done"]:
                    assert time.monotonic() < deadline, "no image done"
                    time.sleep(0.05)
                assert client.get(f"/api/status/{running}").json()["status"] == "PROCESSING"
                answer = client.delete(f"/api/batches/{running}")
                assert answer.status_code == 204, answer.text
                requests_at_delete = len(slow.requests)
                # The downloads in flight end and their images are dropped; one that started
                # after the delete would keep the count of images worked on above zero.
                while _busy(client) > 0:
                    assert time.monotonic() < deadline + 30, "images still worked on"
                    time.sleep(0.1)
                _assert_gone(client, running, f"{running}/0000002-01.jpg")
                log = server.log_path.read_text()
        finally:
            server.stop()
    assert requests_at_delete < IMAGES and len(slow.requests) == requests_at_delete
    assert not (data_dir / "outputs" / running).exists(), _stored(data_dir, running)
    assert set(_rows(data_dir, running).values()) == {0}
    assert "Traceback" not in log, log[-3000:]


def _busy(client: httpx.Client) -> float:
    """Images the embedded server is working on now (its ``pixelbatch_worker_busy`` gauge)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("pixelbatch_worker_busy "):
            return float(line.split()[1])
    raise AssertionError("no pixelbatch_worker_busy in /metrics")


def _cli(args: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelbatch", *args],
        env={**os.environ, "PIXELBATCH_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_delete_and_retention(tmp_path: Path, pictures: ImageServer) -> None:
    data_dir = tmp_path / "data"
    u = pictures.base_url
    env = {
        "PIXELBATCH_FETCH_ALLOW": pictures.allow_entry,
        "PIXELBATCH_RETENTION_DAYS": "7",
        "PIXELBATCH_SWEEP_INTERVAL": "0.5",
    }
    server = support.ServerProcess(data_dir, env).start()
    try:
        with server.client() as client:
            ids = [_upload(client, [["1", "A", f"{u}/p{n}.jpg"]]) for n in range(3)]
            for batch_id in ids:
                assert support.wait_final(client, batch_id)["status"] == "COMPLETED"
            by_cli, old, recent = ids

            done = _cli(["batches", "delete", by_cli], data_dir)
            assert done.returncode == 0, done.stderr
            assert f"deleted batch {by_cli} (3 stored files removed)" in done.stdout
            assert client.get(f"/api/status/{by_cli}").status_code == 404
            assert not (data_dir / "outputs" / by_cli).exists()
            again = _cli(["batches", "delete", by_cli], data_dir)
            assert again.returncode == 2 and "not_found" in again.stderr, again.stderr

            # Backdate one batch's finish time past the retention: the sweeper deletes it
            # through the same path; the recent one (finished now) stays.
            db = sqlite3.connect(data_dir / "pixelbatch.sqlite3")
            with db:
                changed = db.execute(
                    "UPDATE batches SET finished_at = ? WHERE id IN (?, ?)",
                    ("2020-01-01 00:00:00.000000", old, old.replace("-", "")),
                ).rowcount
            db.close()
            assert changed == 1
            deadline = time.monotonic() + 20
            while client.get(f"/api/status/{old}").status_code != 404:
                assert time.monotonic() < deadline, "retention did not delete the old batch"
                time.sleep(0.2)
            assert not (data_dir / "outputs" / old).exists()
            assert set(_rows(data_dir, old).values()) == {0}
            assert client.get(f"/api/status/{recent}").json()["status"] == "COMPLETED"
            assert len(_stored(data_dir, recent)) == 3
    finally:
        server.stop()
