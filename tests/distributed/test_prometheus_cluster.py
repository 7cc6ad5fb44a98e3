"""A real Prometheus scrapes a real distributed cluster: the API and two ``pixelbatch
worker``s (each with its prefork child and its webhook companion) serving ``/metrics`` on
``PIXELBATCH_METRICS_PORT``. The counters summed over the workers equal the batch's counts
in the database, and every dashboard and alert expression evaluates."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

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


@pytest.fixture
def sink() -> Iterator[tuple[ImageServer, support.WebhookSink]]:
    server = ImageServer()
    hook = support.WebhookSink(fail_first=0)
    server.add("/hook", hook)
    with server:
        yield server, hook


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
