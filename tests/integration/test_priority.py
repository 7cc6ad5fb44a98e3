"""Priorities, the per-key priority cap, fairness between tenants and aging, through a real
``pixelbatch serve`` that downloads from a slow image server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pixelbatch.demo.server import ImageServer
from tests import priority_checks as checks
from tests import support


@pytest.fixture
def photos() -> Iterator[ImageServer]:
    with checks.photo_server(latency=0.1) as server:
        yield server


def _env(photos: ImageServer, **extra: str) -> dict[str, str]:
    # Four images in flight at a time (2 x FETCH_CONCURRENCY): 0.1 s each, a 240-image
    # batch takes at least 6 s, long enough to be overtaken on a busy machine.
    return {
        "PIXELBATCH_FETCH_ALLOW": photos.allow_entry,
        "PIXELBATCH_FETCH_CONCURRENCY": "2",
        "PIXELBATCH_LEASE_SECONDS": "10",
        **extra,
    }


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelbatch", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _key(env: dict[str, str], name: str, cwd: Path, *extra: str) -> str:
    result = _cli(["keys", "create", "--name", name, *extra], env, cwd)
    assert result.returncode == 0, result.stderr
    match = re.search(r"api key:\s+(pb_\S+)", result.stdout)
    assert match, result.stdout
    return match.group(1)


def test_a_high_batch_overtakes_a_large_normal_one(tmp_path: Path, photos: ImageServer) -> None:
    server = support.ServerProcess(tmp_path / "data", _env(photos)).start()
    try:
        with server.client() as client:
            result = checks.high_overtakes_normal(client, photos, big_images=240, slots=4)
            high, big = result["high"]["request_id"], result["big"]["request_id"]
            metrics = client.get("/metrics").text
            for level in ("low", "normal", "high"):  # every level, zeros included
                assert f'pixelbatch_queue_images{{priority="{level}"}} 0.0' in metrics
            listed = client.get("/api/batches", params={"priority": "high"}).json()
            assert [b["request_id"] for b in listed["items"]] == [high]
            every = client.get("/api/batches").json()["items"]
            assert {b["request_id"]: b["priority"] for b in every} == {
                high: "high",
                big: "normal",
            }
            # An offset no database integer holds is refused, naming it, not a 500.
            huge = client.get("/api/batches", params={"offset": 2**70, "priority": "low"})
            assert huge.status_code == 422
            assert [d["field"] for d in huge.json()["details"]] == ["offset"]
            refused = client.post(
                "/api/upload",
                files={"file": ("c.csv", checks.catalog(photos, 1, "x"))},
                data={"priority": "urgent"},
            )
            assert refused.status_code == 422
            body = refused.json()
            assert body["code"] == "validation_error"
            assert [d["field"] for d in body["details"]] == ["priority"]
    finally:
        server.stop()


def test_a_key_capped_at_normal_cannot_ask_for_high(tmp_path: Path, photos: ImageServer) -> None:
    data_dir = tmp_path / "data"
    env = {**_env(photos), "PIXELBATCH_DATA_DIR": str(data_dir), "PIXELBATCH_AUTH": "on"}
    capped = _key(env, "capped", tmp_path, "--max-priority", "normal")
    free = _key(env, "free", tmp_path)
    listing = _cli(["keys", "list"], env, tmp_path)
    assert re.search(r"capped\s+│\s+normal", listing.stdout), listing.stdout
    assert re.search(r"free\s+│\s+any", listing.stdout), listing.stdout
    server = support.ServerProcess(data_dir, env).start()
    try:
        with server.client() as client:
            body = checks.catalog(photos, 2, "cap")
            refused = client.post(
                "/api/upload",
                files={"file": ("c.csv", body)},
                data={"priority": "high"},
                headers={"Authorization": f"Bearer {capped}"},
            )
            assert refused.status_code == 403, refused.text
            error = refused.json()
            assert error["code"] == "priority_not_allowed"
            assert error["details"] == {"field": "priority", "max_priority": "normal"}
            assert "'normal'" in error["message"] and "'high'" in error["message"]
            ok = checks.upload(client, body, priority="normal", key=capped)
            low = checks.upload(client, body, priority="low", key=capped)
            high = checks.upload(client, body, priority="high", key=free)
            for request_id, key, level in ((ok, capped, "normal"), (low, capped, "low")):
                status = client.get(
                    f"/api/status/{request_id}", headers={"Authorization": f"Bearer {key}"}
                ).json()
                assert status["priority"] == level
            status = client.get(
                f"/api/status/{high}", headers={"Authorization": f"Bearer {free}"}
            ).json()
            assert status["priority"] == "high"
    finally:
        server.stop()


def test_two_tenants_share_the_workers_evenly_whatever_their_batch_counts(
    tmp_path: Path, photos: ImageServer
) -> None:
    data_dir = tmp_path / "data"
    env = {**_env(photos), "PIXELBATCH_DATA_DIR": str(data_dir), "PIXELBATCH_AUTH": "on"}
    one, many = _key(env, "one", tmp_path), _key(env, "many", tmp_path)
    server = support.ServerProcess(data_dir, env).start()
    try:
        checks.tenants_share_evenly(server.base_url, photos, one, many)
    finally:
        server.stop()


def test_low_is_served_under_a_stream_of_normal_work_once_it_has_aged(
    tmp_path: Path, photos: ImageServer
) -> None:
    aging = 3.0
    env = _env(photos, PIXELBATCH_PRIORITY_AGING_SECONDS=str(aging))
    server = support.ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as client:
            stream = [checks.upload(client, checks.catalog(photos, 60, "n0"))]
            low = checks.upload(client, checks.catalog(photos, 8, "low"), priority="low")
            # More normal work than the server can do, uploaded until the low batch is done.
            deadline = time.monotonic() + 120
            while client.get(f"/api/status/{low}").json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline, "the low batch starved"
                stream.append(checks.upload(client, checks.catalog(photos, 30, f"n{len(stream)}")))
                time.sleep(0.5)
            pending = sum(
                client.get(f"/api/status/{b}").json()["counts"]["images_pending"] for b in stream
            )
            low_status = client.get(f"/api/status/{low}").json()
            low_done = checks.finish_times(client, low)
            for request_id in stream:
                client.post(f"/api/batches/{request_id}/cancel")
    finally:
        server.stop()
    assert pending > 0, "the normal stream ran dry: this did not test starvation"
    created = datetime.fromisoformat(low_status["created_at"])
    # Not served before it aged (the normal work came first), then served.
    assert low_done[0] >= created + timedelta(seconds=aging - 0.5), (low_done[0], created)


def test_cli_process_takes_a_priority(tmp_path: Path, photos: ImageServer) -> None:
    env = {**_env(photos), "PIXELBATCH_DATA_DIR": str(tmp_path / "data")}
    catalog = tmp_path / "c.csv"
    catalog.write_bytes(checks.catalog(photos, 2, "cli"))
    result = _cli(["process", str(catalog), "--priority", "high", "-o", "out.csv"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"priority\s+│\s+high", result.stdout), result.stdout
    refused = _cli(["process", str(catalog), "--priority", "urgent"], env, tmp_path)
    assert refused.returncode == 2
    assert "--priority" in refused.stderr and "urgent" in refused.stderr
