"""``pixelbatch storage check`` as an operator runs it, against moto's S3 server on
127.0.0.1: success, and a one-line reason with exit 1 for each way a store is misconfigured."""

from __future__ import annotations

import os
import subprocess
import sys

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
