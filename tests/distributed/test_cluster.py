"""Distributed mode: API + Celery workers on the local PostgreSQL and Redis."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import redis
from sqlalchemy import create_engine, text

from pixelbatch.demo.server import ImageServer, Route
from tests import support
from tests.distributed.conftest import Cluster


def _photo_server(latency: float) -> ImageServer:
    server = ImageServer(latency=latency)
    for i in range(300):
        server.add(f"/p{i}.jpg", Route(support.jpeg((240, 180), seed=i), "image/jpeg"))
    server.add("/alpha.png", Route(support.png_with_alpha(), "image/png"))
    return server


@pytest.fixture
def photos() -> Iterator[ImageServer]:
    with _photo_server(latency=0.02) as server:
        yield server


@pytest.fixture
def slow_photos() -> Iterator[ImageServer]:
    """Slow enough (0.1 s an image, ~2 s for the 300 on 16 threads) that a kill lands
    mid-batch even when the machine is busy."""
    with _photo_server(latency=0.1) as server:
        yield server


def _catalog(server: ImageServer, products: int, offset: int = 0) -> bytes:
    rows = [
        [
            str(i),
            f"Product {i}",
            ",".join(f"{server.base_url}/p{(offset + 3 * i + j) % 300}.jpg" for j in range(3)),
        ]
        for i in range(products)
    ]
    return support.csv_bytes(rows)


def _upload(cluster: Cluster, body: bytes, webhook: str | None = None) -> str:
    assert cluster.api is not None
    with cluster.api.client() as client:
        data = {"webhook_url": webhook} if webhook else {}
        response = client.post("/api/upload", files={"file": ("c.csv", body)}, data=data)
        assert response.status_code == 202, response.text
        return str(response.json()["request_id"])


def _status(cluster: Cluster, request_id: str) -> dict[str, Any]:
    assert cluster.api is not None
    with cluster.api.client() as client:
        body: dict[str, Any] = client.get(f"/api/status/{request_id}").json()
        return body


def _wait(cluster: Cluster, request_id: str, timeout: float = 120) -> dict[str, Any]:
    assert cluster.api is not None
    with cluster.api.client() as client:
        return support.wait_final(client, request_id, timeout=timeout)


def _db_counts(url: str, request_id: str) -> tuple[list[tuple[str, int]], int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            statuses = conn.execute(
                text("SELECT status, count(*) FROM images WHERE batch_id = :b GROUP BY status"),
                {"b": request_id},
            ).all()
            keys = conn.execute(
                text("SELECT count(DISTINCT output_key) FROM images WHERE batch_id = :b"),
                {"b": request_id},
            ).scalar_one()
            return [(s, n) for s, n in statuses], int(keys)
    finally:
        engine.dispose()


def _env(cluster: Cluster, *servers: ImageServer) -> None:
    cluster.env["PIXELBATCH_FETCH_ALLOW"] = ",".join(s.allow_entry for s in servers)


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*.jpg")}


def test_300_images_on_two_workers_match_the_embedded_output(
    cluster: Cluster, photos: ImageServer, tmp_path: Path
) -> None:
    _env(cluster, photos)
    cluster.migrate()
    cluster.start_api()
    cluster.start_worker()
    cluster.start_worker()
    body = _catalog(photos, 100)
    started = time.monotonic()
    request_id = _upload(cluster, body)
    status = _wait(cluster, request_id)
    elapsed = time.monotonic() - started
    assert status["status"] == "COMPLETED", status
    assert status["counts"]["images_done"] == 300
    print(f"distributed, 2 workers: 300 images in {elapsed:.1f}s")
    assert _db_counts(cluster.env["PIXELBATCH_DATABASE_URL"], request_id) == ([("DONE", 300)], 300)

    # The same catalog through the embedded mode gives byte-identical images.
    csv_path = tmp_path / "catalog.csv"
    csv_path.write_bytes(body)
    embedded_dir = tmp_path / "embedded"
    env = {
        **os.environ,
        "PIXELBATCH_DATA_DIR": str(embedded_dir),
        "PIXELBATCH_FETCH_ALLOW": photos.allow_entry,
    }
    for key in ("PIXELBATCH_DATABASE_URL", "PIXELBATCH_BROKER_URL", "PIXELBATCH_STORAGE_URL"):
        env.pop(key, None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelbatch",
            "process",
            str(csv_path),
            "-o",
            str(tmp_path / "embedded.csv"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [embedded_batch] = [p for p in (embedded_dir / "outputs").iterdir() if p.is_dir()]
    shared = Path(cluster.env["PIXELBATCH_STORAGE_URL"].removeprefix("file://")) / request_id
    distributed = _digests(shared)
    assert len(distributed) == 300
    assert distributed == _digests(embedded_batch)

    assert cluster.api is not None
    with cluster.api.client() as client:
        out = client.get(f"/api/batches/{request_id}/output.csv").text
    embedded_csv = (tmp_path / "embedded.csv").read_text()

    def normalise(text_: str, batch: str) -> list[list[str]]:
        rows = list(csv.reader(io.StringIO(text_)))
        return [
            [
                cell.replace(batch, "BATCH").split("/files/")[-1] if "/files/" in cell else cell
                for cell in row
            ]
            for row in rows
        ]

    assert [r[:3] for r in normalise(out, request_id)] == [
        r[:3] for r in normalise(embedded_csv, embedded_batch.name)
    ]


def test_three_batches_share_the_workers(cluster: Cluster, photos: ImageServer) -> None:
    _env(cluster, photos)
    cluster.migrate()
    cluster.start_api()
    cluster.start_worker()
    cluster.start_worker()
    ids = [_upload(cluster, _catalog(photos, 30, offset=90 * k)) for k in range(3)]
    first_finish: float | None = None
    started_at: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(ids) > 0:
        statuses = {i: _status(cluster, i) for i in ids}
        now = time.monotonic()
        for i, s in statuses.items():
            if s["counts"]["images_done"] > 0:
                started_at.setdefault(i, now)
            if s["status"] == "COMPLETED" and first_finish is None:
                first_finish = now
        if all(s["status"] == "COMPLETED" for s in statuses.values()):
            break
        time.sleep(0.1)
    assert first_finish is not None
    assert len(started_at) == 3, "every batch must make progress"
    assert all(t <= first_finish for t in started_at.values()), (
        "a batch waited for another to finish before it started"
    )
    for i in ids:
        assert _status(cluster, i)["status"] == "COMPLETED"


def test_sigkill_one_worker_mid_batch(
    cluster: Cluster, slow_photos: ImageServer, sink: tuple[ImageServer, support.WebhookSink]
) -> None:
    hook_server, hook = sink
    photos = slow_photos
    _env(cluster, photos, hook_server)
    cluster.migrate()
    cluster.start_api()
    victim = cluster.start_worker()
    cluster.start_worker()
    request_id = _upload(cluster, _catalog(photos, 100), webhook=f"{hook_server.base_url}/hook")
    deadline = time.monotonic() + 60
    url = cluster.env["PIXELBATCH_DATABASE_URL"]
    while time.monotonic() < deadline:
        # The database, not the API: a busy API would answer after the batch moved on.
        if dict(_db_counts(url, request_id)[0]).get("DONE", 0) >= 20:
            break
        time.sleep(0.05)
    victim.kill()
    killed_at = _status(cluster, request_id)["counts"]["images_done"]
    assert killed_at < 300, "the kill must land mid-batch"
    status = _wait(cluster, request_id, timeout=120)
    assert status["status"] == "COMPLETED"
    assert status["counts"]["images_done"] == 300
    assert _db_counts(cluster.env["PIXELBATCH_DATABASE_URL"], request_id) == ([("DONE", 300)], 300)
    assert cluster.api is not None
    with cluster.api.client() as client:
        out = list(
            csv.reader(io.StringIO(client.get(f"/api/batches/{request_id}/output.csv").text))
        )
    status_at = out[0].index("Status")
    assert len(out) == 101 and all(r[status_at] == "OK" for r in out[1:])
    deadline = time.monotonic() + 20
    while not hook.received and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # a duplicate delivery would arrive within the sweeper's period
    assert hook.calls == 1
    print(f"killed a worker at {killed_at}/300 images; batch completed, webhook once")


def test_batch_completes_after_the_broker_loses_every_message(
    cluster: Cluster, photos: ImageServer
) -> None:
    _env(cluster, photos)
    cluster.migrate()
    cluster.start_api()
    cluster.start_worker()
    request_id = _upload(cluster, _catalog(photos, 60))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _status(cluster, request_id)["counts"]["images_done"] >= 20:
            break
        time.sleep(0.05)
    redis.Redis.from_url(cluster.env["PIXELBATCH_BROKER_URL"]).flushdb()
    status = _wait(cluster, request_id, timeout=60)
    assert status["status"] == "COMPLETED"
    assert status["counts"]["images_done"] == 180


def test_api_refuses_an_unmigrated_database(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pixelbatch", "serve"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pixelbatch db upgrade" in result.stderr


def test_racing_finalisers_write_one_csv_and_one_webhook(cluster_env: dict[str, str]) -> None:
    from pixelbatch.db import bulk, images
    from pixelbatch.db.engine import transaction
    from pixelbatch.db.models import Batch, WebhookDelivery
    from pixelbatch.jobs import finalize
    from pixelbatch.runtime import Runtime
    from pixelbatch.settings import Settings
    from pixelbatch.storage import StoredObject
    from pixelbatch.transform import TransformOptions

    values: dict[str, Any] = {
        k.removeprefix("PIXELBATCH_").lower(): v for k, v in cluster_env.items()
    }
    settings = Settings(**values)
    runtime = Runtime(settings)
    try:
        runtime.migrate()
        import uuid

        batch_id = uuid.uuid4()
        with transaction(runtime.sessions) as s:
            s.add(
                Batch(
                    id=batch_id,
                    input_filename="x.csv",
                    input_key="k",
                    webhook_url="http://127.0.0.1:9/hook",
                    options=TransformOptions().model_dump(mode="json"),
                    extra_columns=[],
                )
            )
            s.flush()
            n = bulk.insert_products(
                s, batch_id, [bulk.NewProduct(2, "1", "p", [], ["http://h/a", "http://h/b"])]
            )
            batch = s.get_one(Batch, batch_id)
            batch.images_total = n
            batch.products_total = 1
        with transaction(runtime.sessions) as s:
            items = images.claim_images(s, owner="w", limit=2, lease_seconds=60)
            for item in items:
                images.record_failure(s, item.id, "w", "http_404", "gone", 1.0)
        writes: list[str] = []
        original = runtime.storage.put_file

        def counting_put_file(key: str, source: IO[bytes], content_type: str) -> StoredObject:
            writes.append(key)
            return original(key, source, content_type)

        runtime.storage.put_file = counting_put_file  # type: ignore[method-assign]
        barrier = threading.Barrier(6)
        wins = []

        def race() -> None:
            barrier.wait()
            if finalize.finalize_batch(runtime, batch_id):
                wins.append(1)

        threads = [threading.Thread(target=race) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and len(writes) == 1
        with transaction(runtime.sessions) as s:
            deliveries = s.query(WebhookDelivery).filter_by(batch_id=batch_id).count()
            assert deliveries == 1
    finally:
        runtime.close()
