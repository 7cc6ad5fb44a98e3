"""``pixelbatch storage check`` as an operator runs it, against moto's S3 server on
127.0.0.1: success, and a one-line reason with exit 1 for each way a store is misconfigured."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx

from pixelbatch.demo.server import ImageServer
from tests import s3server, support


def _check(storage_url: str, endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **s3server.CREDENTIALS,
        "PIXELBATCH_STORAGE_URL": storage_url,
        "PIXELBATCH_S3_ENDPOINT_URL": endpoint,
        "COLUMNS": "300",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "pixelbatch", "storage", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_storage_check_passes_on_a_writable_bucket(s3_endpoint: str, s3_bucket: str) -> None:
    result = _check(f"s3://{s3_bucket}/outputs", s3_endpoint)
    assert result.returncode == 0, result.stderr
    assert f"storage ok: s3://{s3_bucket}/outputs/ is reachable and writable" in result.stdout
    assert s3server.keys(s3_endpoint, s3_bucket) == []  # the probe is removed


def test_storage_check_names_a_missing_bucket_in_one_line(s3_endpoint: str) -> None:
    result = _check("s3://no-such-bucket-anywhere/x", s3_endpoint)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error (storage_error): bucket 'no-such-bucket-anywhere': no such bucket"
    )


def test_storage_check_names_a_wrong_endpoint_in_one_line(s3_endpoint: str) -> None:
    wrong = f"http://127.0.0.1:{support.free_port()}"
    result = _check("s3://some-bucket/x", wrong)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error (storage_error): bucket 'some-bucket': Could not connect to the endpoint URL:"
        f' "{wrong}/some-bucket"'
    ]


def test_storage_check_refuses_a_bad_storage_url(s3_endpoint: str) -> None:
    result = _check("s3://Not_A_Bucket/x", s3_endpoint)
    assert result.returncode == 2  # refused with the settings, as every bad variable is
    assert "PIXELBATCH_STORAGE_URL" in result.stderr
    assert "expected file:///PATH or s3://BUCKET/PREFIX" in result.stderr
    assert "Traceback" not in result.stderr


def test_process_with_s3_storage_writes_presigned_urls_and_copies_the_csv_out(
    tmp_path: Path,
    images: ImageServer,
    server_env: dict[str, str],
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    """``pixelbatch process`` without a server: the outputs go to the bucket, ``--out`` is
    copied from the stored output CSV, and its URLs are presigned ones that download."""
    catalog = tmp_path / "c.csv"
    catalog.write_bytes(support.csv_bytes([["1", "Mug", f"{images.base_url}/q90.jpg"]]))
    out = tmp_path / "out.csv"
    env = {
        **os.environ,
        **server_env,
        **s3server.CREDENTIALS,
        "PIXELBATCH_DATA_DIR": str(tmp_path / "data"),
        "PIXELBATCH_STORAGE_URL": f"s3://{s3_bucket}/cli",
        "PIXELBATCH_S3_ENDPOINT_URL": s3_endpoint,
        "COLUMNS": "300",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pixelbatch", "process", str(catalog), "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"s3://{s3_bucket}/cli/" in result.stdout  # where the images are
    [row] = list(csv.DictReader(io.StringIO(out.read_text())))
    url = row["Output Image Urls"]
    assert url.startswith(f"{s3_endpoint}/{s3_bucket}/cli/") and "X-Amz-Signature=" in url
    image = httpx.get(url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert not (tmp_path / "data" / "outputs").exists()
