"""A real Prometheus scrapes a real distributed cluster: the API and two ``pixelbatch
worker``s (each with its prefork child and its webhook companion) serving ``/metrics`` on
``PIXELBATCH_METRICS_PORT``. The counters summed over the workers equal the batch's counts
in the database, and every dashboard and alert expression evaluates."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, create_engine, text

from pixelbatch.demo.server import ImageServer, Route
from tests import support
from tests.distributed.conftest import Cluster, WorkerProcess
from tests.integration.test_prometheus import MAIN_PANELS, evaluate_everything
from tests.prometheus import Prometheus

pytestmark = pytest.mark.e2e

PRODUCTS = 12


@pytest.fixture
def photos() -> Iterator[ImageServer]:
    server = ImageServer(latency=0.02)
    for i in range(PRODUCTS * 2):
        server.add(f"/p{i}.jpg", Route(support.jpeg((240, 180), seed=i), "image/jpeg"))
    good = support.jpeg((240, 180), seed=99)
    server.add("/broken.jpg", Route(good[: len(good) // 3], "image/jpeg"))
    with server:
        yield server


def _catalog(photos: ImageServer) -> bytes:
    """Per product two photos and a third image: every fourth product a 404, every sixth
    the broken JPEG (a product both would be a 404), the rest nothing more."""
    rows = []
    for i in range(PRODUCTS):
        urls = [f"{photos.base_url}/p{2 * i}.jpg", f"{photos.base_url}/p{2 * i + 1}.jpg"]
        if i % 4 == 0:
            urls.append(f"{photos.base_url}/gone-{i}.jpg")
        elif i % 6 == 0:
            urls.append(f"{photos.base_url}/broken.jpg")
        rows.append([str(i), f"Product {i}", ",".join(urls)])
    return support.csv_bytes(rows)


def _start_worker(cluster: Cluster, name: str, port: int) -> WorkerProcess:
    env = {
        **cluster.env,
        "PIXELBATCH_METRICS_PORT": str(port),
        "PIXELBATCH_METRICS_HOST": "127.0.0.1",
    }
    worker = WorkerProcess(name, env, cluster.tmp_path).start()
    cluster.workers.append(worker)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200:
                return worker
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"worker {name} serves no metrics: {worker.log_path.read_text()[-2000:]}")


def test_cluster_counters_equal_the_batch(
    cluster: Cluster,
    photos: ImageServer,
    sink: tuple[ImageServer, support.WebhookSink],
    tmp_path: Path,
) -> None:
    hook_server, hook = sink
    cluster.env["PIXELBATCH_FETCH_ALLOW"] = f"{photos.allow_entry},{hook_server.allow_entry}"
    cluster.env["PIXELBATCH_CHUNK_SIZE"] = "4"  # small chunks: both workers get some
    cluster.migrate()
    api = cluster.start_api()
    ports = [support.free_port(), support.free_port()]
    for i, port in enumerate(ports):
        _start_worker(cluster, f"m{i + 1}", port)
    prom = Prometheus(
        tmp_path / "prometheus",
        {
            "pixelbatch-api": [f"127.0.0.1:{api.port}"],
            "pixelbatch-worker": [f"127.0.0.1:{port}" for port in ports],
        },
    ).start()
    try:
        prom.scrapes_after(2)
        # Idle but up: each worker reports its slots before it has had any work.
        assert prom.by_label("pixelbatch_worker_capacity", "job")["pixelbatch-worker"] > 0

        with api.client() as client:
            response = client.post(
                "/api/upload",
                files={"file": ("c.csv", _catalog(photos))},
                data={"webhook_url": f"{hook_server.base_url}/hook"},
            )
            assert response.status_code == 202, response.text
            status = support.wait_final(client, response.json()["request_id"], timeout=120)
        counts = status["counts"]
        total, done, failed = counts["images_total"], counts["images_done"], counts["images_failed"]
        assert (total, failed) == (PRODUCTS * 2 + 3 + 1, 4), counts
        db_codes = {e["code"]: e["count"] for e in status["errors"]}
        assert db_codes["http_404"] == 3
        deadline = time.monotonic() + 30
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(hook.received) == 1
        prom.scrapes_after(2)

        workers = '{job="pixelbatch-worker"}'
        assert prom.value(f"sum(pixelbatch_images_processed_total{workers})") == total
        assert prom.value("sum(pixelbatch_images_processed_total)") == total  # the API: 0
        assert prom.by_label("pixelbatch_images_processed_total", "outcome") == {
            "done": done,
            "failed": failed,
        }
        assert (
            prom.by_label('pixelbatch_images_processed_total{outcome="failed"}', "error_code")
            == db_codes
        )
        # Both workers did some of it (chunks of 4, 28 images), each reports its own part.
        per_worker = prom.by_label(f"pixelbatch_images_processed_total{workers}", "instance")
        assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
        assert prom.value("sum(pixelbatch_image_bytes_in_total)") == status["bytes_in"]
        assert prom.value("sum(pixelbatch_image_bytes_out_total)") == status["bytes_out"]
        assert prom.by_label("pixelbatch_download_failures_total", "error_code") == {"http_404": 3}
        stages = prom.by_label("pixelbatch_stage_duration_seconds_count", "stage")
        assert stages["download"] == total and stages["store"] == done
        assert prom.by_label("pixelbatch_batches_finished_total", "status") == {
            "COMPLETED_WITH_ERRORS": 1
        }
        # Delivered by a webhook companion, reported through its worker's port.
        assert prom.by_label("pixelbatch_webhook_deliveries_total", "result") == {"delivered": 1}
        assert prom.value(f"sum(pixelbatch_worker_busy{workers})") == 0
        # Each worker's tree: main process, one prefork child, the companion (and its pool).
        for instance, processes in prom.by_label("pixelbatch_worker_processes", "instance").items():
            assert processes >= 3, instance
        assert prom.by_label("pixelbatch_queue_images", "priority")["normal"] == 0

        shown = evaluate_everything(prom)
        empty = MAIN_PANELS - {title for title, values in shown.items() if values}
        assert not empty, shown
        print("\n" + json.dumps(shown, indent=1))
    finally:
        prom.stop()


def _owner_pid(owner: str) -> int:
    """A Celery worker's lease owner is ``<hostname>-<pid>-<random>``."""
    return int(owner.rsplit("-", 2)[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_workers_images_are_counted_once_by_the_worker_that_records_them(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL one worker mid-batch: its leased images come back and the survivor records
    them. The survivor's counter equals exactly the images the database says it recorded
    (the re-leased ones included, none twice), and every image is recorded once."""
    with ImageServer(latency=0.25) as slow:
        for i in range(PRODUCTS * 2):
            slow.add(f"/p{i}.jpg", Route(support.jpeg((240, 180), seed=i), "image/jpeg"))
        cluster.env["PIXELBATCH_FETCH_ALLOW"] = slow.allow_entry
        cluster.env["PIXELBATCH_CHUNK_SIZE"] = "4"
        cluster.env["PIXELBATCH_FETCH_CONCURRENCY"] = "2"
        cluster.migrate()
        api = cluster.start_api()
        ports = [support.free_port(), support.free_port()]
        survivor, doomed = (_start_worker(cluster, f"k{i + 1}", p) for i, p in enumerate(ports))
        prom = Prometheus(
            tmp_path / "prometheus", {"pixelbatch-worker": [f"127.0.0.1:{p}" for p in ports]}
        ).start()
        try:
            rows = [
                [str(i), f"P{i}", f"{slow.base_url}/p{2 * i}.jpg,{slow.base_url}/p{2 * i + 1}.jpg"]
                for i in range(PRODUCTS)
            ]
            with api.client() as client:
                response = client.post(
                    "/api/upload", files={"file": ("c.csv", support.csv_bytes(rows))}
                )
                assert response.status_code == 202, response.text
                request_id = response.json()["request_id"]
                deadline = time.monotonic() + 60
                while client.get(f"/api/status/{request_id}").json()["counts"]["images_done"] < 4:
                    assert time.monotonic() < deadline, "no image done in time"
                    time.sleep(0.1)
                # Mid-batch, and at a moment it holds leased images: between two chunks it
                # holds none, and the kill would test nothing.
                assert doomed.proc is not None
                url = cluster.env["PIXELBATCH_DATABASE_URL"]
                while not _holds_a_lease(url, request_id, doomed.proc.pid):
                    assert time.monotonic() < deadline, "the doomed worker never held an image"
                    time.sleep(0.02)
                doomed.kill()
                status = support.wait_final(client, request_id, timeout=120)
            assert status["counts"]["images_done"] == PRODUCTS * 2, status
            recorded, re_leased = _recorded_by_owner(
                cluster.env["PIXELBATCH_DATABASE_URL"], request_id
            )
            assert sum(recorded.values()) == PRODUCTS * 2  # each image recorded once
            assert re_leased > 0, "the kill landed while the worker held no image"
            by_survivor = sum(n for owner, n in recorded.items() if _alive(_owner_pid(owner)))
            by_the_dead = PRODUCTS * 2 - by_survivor
            prom.wait_until("up == 0", lambda r: len(r) == 1)  # the dead target is seen down
            done = 'pixelbatch_images_processed_total{outcome="done",instance="127.0.0.1:%d"}'
            alive = prom.wait_until(
                done % ports[0], lambda r: bool(r) and float(r[0]["value"][1]) == by_survivor
            )
            assert float(alive[0]["value"][1]) == by_survivor
            # The dead worker's last scraped count never exceeds what it recorded.
            dead = prom.query(f"last_over_time({done % ports[1]}[5m])")
            assert sum(float(r["value"][1]) for r in dead) <= by_the_dead
            assert survivor.proc is not None and survivor.proc.poll() is None
        finally:
            prom.stop()


def _holds_a_lease(url: str, request_id: str, process_group: int) -> bool:
    """Whether a process of ``process_group`` (a worker and its pool child) holds a lease on
    an image of the batch now."""
    with _connected(url) as conn:
        owners = conn.execute(
            text(
                "SELECT DISTINCT lease_owner FROM images"
                " WHERE batch_id = :b AND status = 'PROCESSING'"
            ),
            {"b": request_id},
        ).scalars()
        return any(_in_group(_owner_pid(str(owner)), process_group) for owner in owners)


def _in_group(pid: int, process_group: int) -> bool:
    try:
        return os.getpgid(pid) == process_group
    except ProcessLookupError:
        return False


def _recorded_by_owner(url: str, request_id: str) -> tuple[dict[str, int], int]:
    """Images recorded done per lease owner, and how many were leased more than once."""
    with _connected(url) as conn:
        rows = conn.execute(
            text(
                "SELECT lease_owner, count(*) FROM images"
                " WHERE batch_id = :b AND status = 'DONE' GROUP BY lease_owner"
            ),
            {"b": request_id},
        ).all()
        re_leased = conn.execute(
            text("SELECT count(*) FROM images WHERE batch_id = :b AND attempts > 1"),
            {"b": request_id},
        ).scalar_one()
        return {str(owner): int(n) for owner, n in rows}, int(re_leased)


@contextmanager
def _connected(url: str) -> Iterator[Connection]:
    """A connection to the cluster's database, its engine disposed of after."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
