"""Killing the server mid-batch loses nothing: a restart resumes and finishes the batch, at
once, without waiting out the leases the killed run held."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pixelbatch.demo.server import ImageServer, Route
from tests import support

RESTART_DEADLINE = 20.0  # seconds, well under the lease


def test_sigkill_mid_batch_then_restart_finishes_every_image_once_and_at_once(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    images = ImageServer(latency=0.15)
    n = 60
    for i in range(n):
        images.add(f"/p{i}.jpg", Route(support.jpeg((320, 240), seed=i), "image/jpeg"))
    with images:
        env = {
            **server_env,
            "PIXELBATCH_FETCH_ALLOW": images.allow_entry,
            "PIXELBATCH_FETCH_CONCURRENCY": "2",
            # Long enough that waiting out the killed run's leases would show: the restart
            # takes its images back at start (embedded SQLite: it is the file's only worker).
            "PIXELBATCH_LEASE_SECONDS": "60",
        }
        rows = [
            [
                str(i),
                f"Product {i}",
                f"{images.base_url}/p{2 * i}.jpg,{images.base_url}/p{2 * i + 1}.jpg",
            ]
            for i in range(n // 2)
        ]
        body = support.csv_bytes(rows)
        data_dir = tmp_path / "data"
        first = support.ServerProcess(data_dir, env).start()
        try:
            with first.client() as client:
                request_id = client.post("/api/upload", files={"file": ("c.csv", body)}).json()[
                    "request_id"
                ]
                deadline = time.monotonic() + 30
                done = 0
                while time.monotonic() < deadline:
                    done = client.get(f"/api/status/{request_id}").json()["counts"]["images_done"]
                    if done >= 8:
                        break
                    time.sleep(0.05)
        finally:
            first.kill()
        assert 8 <= done < n, "the kill must land mid-batch"

        restarted = time.monotonic()
        second = support.ServerProcess(data_dir, env, port=first.port).start()
        try:
            with second.client() as client:
                status = support.wait_final(client, request_id, timeout=RESTART_DEADLINE)
                assert time.monotonic() - restarted < RESTART_DEADLINE
                assert status["status"] == "COMPLETED"
                assert status["counts"]["images_done"] == n
                output = client.get(f"/api/batches/{request_id}/output.csv").text
                assert output.count(f"{second.base_url}/files/{request_id}/") == n
        finally:
            second.stop()

    db = sqlite3.connect(data_dir / "pixelbatch.sqlite3")
    try:
        statuses = db.execute("SELECT status, count(*) FROM images GROUP BY status").fetchall()
        assert statuses == [("DONE", n)]
        assert db.execute("SELECT count(DISTINCT output_key) FROM images").fetchone()[0] == n
        assert db.execute("SELECT count(*) FROM batches").fetchone()[0] == 1
    finally:
        db.close()
    stored = list((data_dir / "outputs" / request_id).glob("*.jpg"))
    assert len(stored) == n
