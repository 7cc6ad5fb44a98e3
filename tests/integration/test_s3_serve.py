"""A real ``pixelbatch serve`` storing in S3 (moto's standalone server on 127.0.0.1): every
output, the output CSV and the uploaded CSV go to the bucket, the URLs handed out are read
straight from the store, and the API redirects authorised readers to fresh presigned URLs.

moto does not check signatures or expiry: the presigned URLs are checked by their
parameters (X-Amz-Expires), the store serving them by fetching them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pixelbatch.demo.server import ImageServer
from pixelbatch.storage.s3 import CACHE_CONTROL, CSV_CACHE_CONTROL
from tests import s3server, support
from tests.integration.test_auth import create_key

TTL = 7200


def _s3_env(endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "PIXELBATCH_STORAGE_URL": f"s3://{bucket}/out",
        "PIXELBATCH_S3_ENDPOINT_URL": endpoint,
        "PIXELBATCH_S3_REGION": s3server.REGION,
        "PIXELBATCH_SIGNED_URL_TTL": str(TTL),
        **s3server.CREDENTIALS,
        **extra,
    }


@pytest.fixture
def s3_served(
    tmp_path: Path, server_env: dict[str, str], s3_endpoint: str, s3_bucket: str
) -> Iterator[tuple[support.ServerProcess, str]]:
    env = {**server_env, **_s3_env(s3_endpoint, s3_bucket), "PIXELBATCH_AUTH": "on"}
    env["PIXELBATCH_DATA_DIR"] = str(tmp_path / "data")
    key, _ = create_key(env, "shop")
    proc = support.ServerProcess(tmp_path / "data", env).start()
    try:
        yield proc, key
    finally:
        proc.stop()


def _stored_files(data_dir: Path) -> list[str]:
    """Files under the data dir other than the embedded database and secrets."""
    return sorted(
        p.relative_to(data_dir).as_posix()
        for p in data_dir.rglob("*")
        if p.is_file() and not p.name.startswith(("pixelbatch.sqlite3", "secret_key"))
    )


def test_batch_outputs_live_in_the_bucket_and_are_read_from_it(
    s3_served: tuple[support.ServerProcess, str],
    images: ImageServer,
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    proc, key = s3_served
    bearer = {"Authorization": f"Bearer {key}"}
    body = support.csv_bytes(
        [
            ["1", "Mug", f"{images.base_url}/q90.jpg,{images.base_url}/alpha.png"],
            ["2", "Cap", f"{images.base_url}/page.jpg"],
        ]
    )
    with httpx.Client(base_url=proc.base_url, headers=bearer, timeout=30) as client:
        r = client.post("/api/upload", files={"file": ("c.csv", body)})
        assert r.status_code == 202, r.text
        request_id = r.json()["request_id"]
        final = support.wait_final(client, request_id)
        assert final["status"] == "COMPLETED_WITH_ERRORS", final
        expires_at = datetime.fromisoformat(final["output_urls_expire_at"])
        finished = datetime.now(UTC)
        assert finished + timedelta(seconds=TTL - 120) < expires_at
        assert expires_at <= finished + timedelta(seconds=TTL)

        # The API's output CSV link redirects a key holder to a fresh presigned URL...
        redirect = client.get(f"/api/batches/{request_id}/output.csv")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(f"{s3_endpoint}/{s3_bucket}/out/{request_id}/output.csv?")
        assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == [str(TTL)]
        files = client.get(f"/files/{request_id}/0000002-01.jpg")
        assert files.status_code == 307
        assert files.headers["location"].startswith(f"{s3_endpoint}/{s3_bucket}/out/")
    # ... and nobody else.
    assert httpx.get(f"{proc.base_url}/files/{request_id}/0000002-01.jpg").status_code == 404
    assert httpx.get(f"{proc.base_url}/api/batches/{request_id}/output.csv").status_code == 401

    output = httpx.get(location)
    assert output.status_code == 200
    assert output.headers["content-type"] == "text/csv"
    assert output.headers["cache-control"] == CSV_CACHE_CONTROL
    rows = list(csv.DictReader(io.StringIO(output.text)))
    urls = [u.strip() for row in rows for u in row["Output Image Urls"].split(",") if u.strip()]
    assert len(urls) == 2
    assert rows[1]["Status"] == "FAILED" and rows[1]["Output Image Urls"] == ""
    for url in urls:
        assert url.startswith(f"{s3_endpoint}/{s3_bucket}/out/{request_id}/")
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(TTL)]
        image = httpx.get(url)  # straight from the store, no API key
        assert image.status_code == 200
        assert image.headers["content-type"] in ("image/jpeg", "image/png")
        assert image.headers["cache-control"] == CACHE_CONTROL
        assert len(image.content) > 100

    stored = s3server.keys(s3_endpoint, s3_bucket, f"out/{request_id}/")
    assert f"out/{request_id}/input.csv" in stored
    assert f"out/{request_id}/output.csv" in stored
    assert len(stored) == 4  # input, output and the two images
    assert _stored_files(proc.data_dir) == []


def test_a_public_base_url_gives_plain_urls_that_do_not_expire(
    tmp_path: Path,
    server_env: dict[str, str],
    images: ImageServer,
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    public = "https://cdn.shop.example/images"
    env = {**server_env, **_s3_env(s3_endpoint, s3_bucket, PIXELBATCH_PUBLIC_BASE_URL=public)}
    proc = support.ServerProcess(tmp_path / "data", env).start()
    try:
        with proc.client() as client:
            body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
            request_id = client.post("/api/upload", files={"file": ("c.csv", body)}).json()[
                "request_id"
            ]
            final = support.wait_final(client, request_id)
            assert final["status"] == "COMPLETED"
            assert final["output_urls_expire_at"] is None
            page = client.get(f"/api/batches/{request_id}/images").json()
    finally:
        proc.stop()
    url = page["items"][0]["output_url"]
    assert url == f"{public}/out/{request_id}/0000002-01.jpg"
    # The CDN serves the bucket's object of the same key (no CDN here: the object is checked).
    head = s3server.client(s3_endpoint).head_object(
        Bucket=s3_bucket, Key=f"out/{request_id}/0000002-01.jpg"
    )
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == CACHE_CONTROL


def test_an_upload_the_store_cannot_keep_is_refused_whole(
    tmp_path: Path,
    server_env: dict[str, str],
    images: ImageServer,
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    """The input CSV is stored in the same transaction that creates the batch: a store that
    fails (here: no such bucket) answers 503 storage_error and leaves no batch behind."""
    env = {**server_env, **_s3_env(s3_endpoint, s3_bucket + "-missing")}
    proc = support.ServerProcess(tmp_path / "data", env).start()
    try:
        with proc.client() as client:
            body = support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]])
            r = client.post("/api/upload", files={"file": ("c.csv", body)})
            listed = client.get("/api/batches").json()
    finally:
        proc.stop()
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "storage_error"
    assert "no such bucket" in r.json()["message"]
    assert "Traceback" not in r.text
    assert listed["total"] == 0
