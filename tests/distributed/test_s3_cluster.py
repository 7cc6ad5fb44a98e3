"""Distributed mode on object storage: an API process and two Celery worker processes that
share no directory, only PostgreSQL, Redis and an S3 bucket (moto's standalone server on
127.0.0.1, a real S3 HTTP API). The batch completes, every output URL in its CSV downloads
straight from the store, and nothing lands in any process's data directory."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelbatch.demo.server import ImageServer, Route
from pixelbatch.storage.s3 import CACHE_CONTROL
from tests import s3server, support
from tests.distributed.conftest import Cluster, WorkerProcess


@pytest.fixture
def photos() -> Iterator[ImageServer]:
    server = ImageServer(latency=0.02)
    for i in range(60):
        server.add(f"/p{i}.jpg", Route(support.jpeg((240, 180), seed=i), "image/jpeg"))
    with server:
        yield server


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_workers_sharing_only_the_bucket_complete_a_batch_read_from_the_store(
    cluster: Cluster, photos: ImageServer, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    cluster.env.pop("PIXELBATCH_STORAGE_URL")
    cluster.env.update(
        {
            "PIXELBATCH_FETCH_ALLOW": photos.allow_entry,
            "PIXELBATCH_STORAGE_URL": f"s3://{s3_bucket}/pb",
            "PIXELBATCH_S3_ENDPOINT_URL": s3_endpoint,
            "PIXELBATCH_S3_REGION": s3server.REGION,
            "PIXELBATCH_SIGNED_URL_TTL": "900",
            **s3server.CREDENTIALS,
        }
    )
    cluster.migrate()
    data_dirs = [tmp_path / "api", tmp_path / "w1-data", tmp_path / "w2-data"]
    cluster.env["PIXELBATCH_DATA_DIR"] = str(data_dirs[0])
    cluster.start_api()
    for name, data_dir in (("w1", data_dirs[1]), ("w2", data_dirs[2])):
        data_dir.mkdir()
        env = {**cluster.env, "PIXELBATCH_DATA_DIR": str(data_dir)}
        cluster.workers.append(WorkerProcess(name, env, tmp_path).start())

    rows = [
        [
            str(i),
            f"Product {i}",
            ",".join(f"{photos.base_url}/p{(3 * i + j) % 60}.jpg" for j in range(3)),
        ]
        for i in range(20)
    ]
    assert cluster.api is not None
    with cluster.api.client() as client:
        r = client.post("/api/upload", files={"file": ("c.csv", support.csv_bytes(rows))})
        assert r.status_code == 202, r.text
        request_id = r.json()["request_id"]
        final = support.wait_final(client, request_id, timeout=120)
        assert final["status"] == "COMPLETED", final
        assert final["counts"]["images_done"] == 60
        output = client.get(f"/api/batches/{request_id}/output.csv", follow_redirects=True)
    assert output.status_code == 200
    assert str(output.url).startswith(f"{s3_endpoint}/{s3_bucket}/pb/{request_id}/output.csv")

    urls = [
        url.strip()
        for row in csv.DictReader(io.StringIO(output.text))
        for url in row["Output Image Urls"].split(",")
    ]
    assert len(urls) == 60
    with httpx.Client(timeout=30) as store:
        for url in urls:
            assert url.startswith(f"{s3_endpoint}/{s3_bucket}/pb/{request_id}/")
            image = store.get(url)
            assert image.status_code == 200, url
            assert image.headers["content-type"] == "image/jpeg"
            assert image.headers["cache-control"] == CACHE_CONTROL

    # Both workers took part, each from its own data dir, and wrote nothing there.
    logs = [w.log_path.read_text(errors="replace") for w in cluster.workers]
    for log in logs:
        assert re.search(r"pixelbatch\.work\[[^]]+\] succeeded in [\d.]+s: [1-9]", log), log[-2000:]
    for data_dir in data_dirs:
        assert _files(data_dir) == [], data_dir
    assert len(s3server.keys(s3_endpoint, s3_bucket, f"pb/{request_id}/")) == 62
