"""A slow but alive embedded server keeps its leases: every image here takes five leases to
download, and each is still downloaded once and recorded on its first attempt (a lost lease
would let the dispatcher lease it again: a second download, attempts 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pixelbatch.demo.server import ImageServer, Route
from tests import support


def test_a_slow_download_keeps_its_lease(tmp_path: Path) -> None:
    slow = ImageServer(latency=2.5)
    for i in range(3):
        slow.add(f"/s{i}.jpg", Route(support.jpeg((800, 600), seed=i), "image/jpeg"))
    data_dir = tmp_path / "data"
    env = {
        "PIXELBATCH_FETCH_ALLOW": slow.allow_entry,
        "PIXELBATCH_FETCH_READ_TIMEOUT": "10",
        "PIXELBATCH_LEASE_SECONDS": "0.5",
    }
    with slow:
        u = slow.base_url
        server = support.ServerProcess(data_dir, env).start()
        try:
            with server.client() as client:
                rows = [[str(i), f"P{i}", f"{u}/s{i}.jpg"] for i in range(3)]
                response = client.post(
                    "/api/upload", files={"file": ("c.csv", support.csv_bytes(rows))}
                )
                assert response.status_code == 202, response.text
                final = support.wait_final(client, response.json()["request_id"])
        finally:
            server.stop()
        requests = len(slow.requests)
    assert final["status"] == "COMPLETED" and final["counts"]["images_done"] == 3
    assert requests == 3
    db = sqlite3.connect(data_dir / "pixelbatch.sqlite3")
    try:
        assert db.execute(
            "SELECT status, attempts, count(*) FROM images GROUP BY 1, 2"
        ).fetchall() == [("DONE", 1, 3)]
    finally:
        db.close()
