"""The S3 backend against a real S3 HTTP API: moto's standalone server on 127.0.0.1, real
boto3 calls over HTTP, presigned URLs fetched with httpx.

moto does not check signatures or presigned URL expiry, so those are tested by the URL's
own parameters (X-Amz-Expires, X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature) and by
unit tests of the code that chooses the expiry (``presign_ttl``)."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from pixelbatch.demo.server import ImageServer
from pixelbatch.errors import PixelbatchError
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.storage import storage_from_settings
from pixelbatch.storage.s3 import (
    CACHE_CONTROL,
    CSV_CACHE_CONTROL,
    MAX_PRESIGN_SECONDS,
    S3Location,
    S3Storage,
    StorageError,
    describe_error,
    parse_s3_url,
    presign_ttl,
)
from tests import s3server, support


def _storage(endpoint: str, bucket: str, **kwargs: object) -> S3Storage:
    return S3Storage(S3Location(bucket, "outputs/"), endpoint_url=endpoint, **kwargs)  # type: ignore[arg-type]


def test_presign_ttl_is_the_setting_capped_at_seven_days() -> None:
    assert presign_ttl(3600) == 3600
    assert presign_ttl(MAX_PRESIGN_SECONDS) == 7 * 24 * 3600
    assert presign_ttl(30 * 24 * 3600) == 7 * 24 * 3600


def test_storage_url_is_parsed_into_bucket_and_prefix() -> None:
    assert parse_s3_url("s3://my-bucket/a/b/") == S3Location("my-bucket", "a/b/")
    assert parse_s3_url("s3://my-bucket") == S3Location("my-bucket", "")
    with pytest.raises(PixelbatchError, match="s3://BUCKET/PREFIX"):
        parse_s3_url("s3://Bad_Bucket/x")


def test_settings_select_s3_with_path_style_and_bounded_standard_retries(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage_url=f"s3://{s3_bucket}/pre/fix",
        s3_endpoint_url=s3_endpoint,
        s3_region="eu-west-3",
        signed_url_ttl=3600,
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    config = storage.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert config.max_pool_connections == 32  # one pooled client serves the whole process
    runtime = Runtime(settings)
    try:
        assert runtime.storage is runtime.storage
    finally:
        runtime.close()
    assert config.s3["addressing_style"] == "path"
    assert storage.client.meta.region_name == "eu-west-3"
    storage.put("b1/x.jpg", b"abc", "image/jpeg")
    assert s3server.keys(s3_endpoint, s3_bucket) == ["pre/fix/b1/x.jpg"]
    url = urlsplit(storage.url("b1/x.jpg"))
    assert url.path == f"/{s3_bucket}/pre/fix/b1/x.jpg"  # path-style: the bucket in the path


def test_stored_object_is_served_by_its_presigned_url_with_type_and_cache_headers(
    s3_endpoint: str, s3_bucket: str
) -> None:
    storage = _storage(s3_endpoint, s3_bucket, url_ttl=3600)
    data = support.jpeg()
    stored = storage.put("batch/1-1.jpg", data, "image/jpeg")
    assert stored.size == len(data)
    url = storage.url("batch/1-1.jpg", "http://api.example")
    query = parse_qs(urlsplit(url).query)
    # moto ignores these; S3 enforces them, so they are what is checked here.
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].startswith("testing-key-id/")
    assert len(query["X-Amz-Signature"][0]) == 64
    assert storage.url_lifetime() == 3600
    answer = httpx.get(url)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["cache-control"] == CACHE_CONTROL


def test_a_ttl_over_seven_days_is_signed_for_seven_days(s3_endpoint: str, s3_bucket: str) -> None:
    storage = _storage(s3_endpoint, s3_bucket, url_ttl=30 * 24 * 3600)
    storage.put("b/k.png", b"png", "image/png")
    assert parse_qs(urlsplit(storage.url("b/k.png")).query)["X-Amz-Expires"] == ["604800"]


def test_urls_name_the_public_endpoint_when_clients_reach_the_store_elsewhere(
    s3_endpoint: str, s3_bucket: str
) -> None:
    """compose: workers store at minio:9000, browsers fetch from localhost:9000. Here the
    store is reached as 127.0.0.1 and clients are told "localhost" (the same server)."""
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    storage = _storage(s3_endpoint, s3_bucket, public_endpoint_url=public)
    storage.put("b/1-1.jpg", b"jpeg", "image/jpeg")
    url = storage.url("b/1-1.jpg")
    assert url.startswith(f"{public}/{s3_bucket}/outputs/b/1-1.jpg?")
    assert httpx.get(url).content == b"jpeg"


def test_public_base_url_gives_plain_urls_that_never_expire(
    s3_endpoint: str, s3_bucket: str
) -> None:
    storage = _storage(s3_endpoint, s3_bucket, public_base_url="https://cdn.example/")
    assert storage.url("b/1-1.webp") == "https://cdn.example/outputs/b/1-1.webp"
    assert storage.url_lifetime() is None


def test_put_file_and_read_back_through_the_store(s3_endpoint: str, s3_bucket: str) -> None:
    storage = _storage(s3_endpoint, s3_bucket)
    source = io.BytesIO(b"a,b\n1,2\n")
    stored = storage.put_file("b/output.csv", source, "text/csv")
    assert stored.size == 8
    assert not source.closed  # the caller's file is the caller's
    out = io.BytesIO()
    storage.read_into("b/output.csv", out)
    assert out.getvalue() == b"a,b\n1,2\n"
    head = s3server.client(s3_endpoint).head_object(Bucket=s3_bucket, Key="outputs/b/output.csv")
    assert head["ContentType"] == "text/csv"
    assert head["CacheControl"] == CSV_CACHE_CONTROL  # rewritten by a retry: not immutable
    assert storage.local_path("b/output.csv") is None


def test_a_redirect_url_names_the_download_file(s3_endpoint: str, s3_bucket: str) -> None:
    storage = _storage(s3_endpoint, s3_bucket)
    storage.put("b/output.csv", b"x\n", "text/csv")
    answer = httpx.get(storage.redirect_url("b/output.csv", "b-output.csv") or "")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="b-output.csv"'


class _BreaksAfter(io.RawIOBase):
    """A source that dies after ``limit`` bytes, as a worker killed mid-upload would."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("source died mid-upload")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_an_upload_that_dies_leaves_no_object_and_no_open_multipart_upload(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixelbatch.storage import s3

    # Small enough that 12 MB goes up as a multipart upload (5 MB parts, S3's minimum).
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    storage = _storage(s3_endpoint, s3_bucket)
    storage._transfer.multipart_chunksize = 5 * 1024 * 1024
    with pytest.raises(OSError, match="mid-upload"):
        storage.put_file("b/big.csv", io.BufferedReader(_BreaksAfter(12 * 1024 * 1024)), "text/csv")
    assert s3server.keys(s3_endpoint, s3_bucket) == []
    uploads = s3server.client(s3_endpoint).list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []  # aborted, never completed


def test_delete_prefix_removes_exactly_the_objects_under_it(
    s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixelbatch.storage import s3

    monkeypatch.setattr(s3, "DELETE_BATCH", 2)  # several DeleteObjects requests
    storage = _storage(s3_endpoint, s3_bucket)
    for key in ("b1/1-1.jpg", "b1/1-2.jpg", "b1/2-1.jpg", "b1/input.csv", "b10/1-1.jpg"):
        storage.put(key, b"x", "image/jpeg")
    assert storage.delete_prefix("b1") == 4
    assert s3server.keys(s3_endpoint, s3_bucket) == ["outputs/b10/1-1.jpg"]
    assert storage.delete_prefix("b1/") == 0


def test_a_store_that_fails_for_good_is_a_storage_error(s3_endpoint: str, s3_bucket: str) -> None:
    storage = _storage(s3_endpoint, "no-such-bucket-here", max_attempts=2)
    with pytest.raises(StorageError) as caught:
        storage.put("b/1-1.jpg", b"x", "image/jpeg")
    assert caught.value.code == "storage_error"
    assert "no such bucket" in caught.value.message.lower()


def test_check_passes_on_a_writable_bucket_and_leaves_nothing(
    s3_endpoint: str, s3_bucket: str
) -> None:
    assert "reachable and writable" in _storage(s3_endpoint, s3_bucket).check()
    assert s3server.keys(s3_endpoint, s3_bucket) == []


def test_check_names_a_missing_bucket(s3_endpoint: str, s3_bucket: str) -> None:
    with pytest.raises(StorageError, match="bucket 'absent-bucket': no such bucket"):
        _storage(s3_endpoint, "absent-bucket").check()


def test_check_names_an_endpoint_that_does_not_answer(s3_bucket: str) -> None:
    closed = f"http://127.0.0.1:{support.free_port()}"
    with pytest.raises(StorageError, match="Could not connect to the endpoint URL"):
        _storage(closed, s3_bucket, max_attempts=1).check()


def test_check_names_an_endpoint_that_is_not_an_s3_api(s3_bucket: str) -> None:
    """A web server that is not an object store (here pixelbatch's own image server) at the
    endpoint: its 404 is not taken for "no such bucket"."""
    with (
        ImageServer() as web,
        pytest.raises(StorageError, match="did not answer as an S3 API") as caught,
    ):
        _storage(web.base_url, s3_bucket, max_attempts=1).check()
    assert "PIXELBATCH_S3_ENDPOINT_URL" in caught.value.message
    assert "no such bucket" not in caught.value.message


def test_access_denied_is_described_in_one_line() -> None:
    # moto does not enforce IAM by default; the mapping of S3's answer is checked directly.
    denied = ClientError(
        {
            "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
            "ResponseMetadata": {"HTTPStatusCode": 403, "HTTPHeaders": {"x-amz-request-id": "1"}},
        },
        "PutObject",
    )
    assert describe_error(denied).startswith("access denied (AccessDenied)")
    assert "\n" not in describe_error(denied)
