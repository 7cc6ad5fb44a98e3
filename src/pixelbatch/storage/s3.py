"""S3 and S3-compatible storage (MinIO, Ceph, R2, GCS): objects in a bucket, read by clients
straight from the store through presigned GET URLs or a public (CDN) base.

One boto3 client per backend object, and one backend per process (``Runtime.storage``): the
client is thread-safe and keeps a pool of connections, so storing an image costs one PUT on a
warm connection, never a new client. Writes use botocore's ``standard`` retry mode (throttling,
5xx and connection errors, bounded attempts, jittered backoff); what still fails is a
``storage_error`` that fails the image rather than vanishing.

No half object is ever visible: a single PUT is atomic in S3 (the key shows the old object or
the whole new one), and ``put_file`` streams larger files as a multipart upload that S3 only
publishes on ``CompleteMultipartUpload``. s3transfer aborts the upload when the copy raises;
a process killed mid-upload never completes it, so its parts stay invisible (a bucket
lifecycle rule ``AbortIncompleteMultipartUpload`` reclaims them; see the README).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pixelbatch.errors import InvalidInput, PixelbatchError
from pixelbatch.storage.base import StoredObject, validate_key

# S3 refuses presigned URLs valid for more than 7 days (SigV4).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# An output image's key is its batch's, row's and position's: it never changes content, so
# storefronts and CDNs may keep it for good.
CACHE_CONTROL = "public, max-age=31536000, immutable"
# The CSVs are not images: the output CSV is rewritten when failed images are retried.
CSV_CACHE_CONTROL = "private, no-cache"
# Attempts per request in botocore's standard retry mode (the first try included).
MAX_ATTEMPTS = 5
# One connection per concurrent store: the fetch pool, the transform pool and the finaliser.
POOL_CONNECTIONS = 32
# Files above this go up as a multipart upload (only very large output CSVs do).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes

# DNS-compatible bucket names, as S3 requires for new buckets.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageError(PixelbatchError):
    code = "storage_error"
    status_code = 503


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    def key(self, key: str) -> str:
        return self.prefix + validate_key(key)


def parse_s3_url(url: str) -> S3Location:
    """``s3://BUCKET/PREFIX`` → where objects go; a bad URL is refused at start."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if parsed.scheme != "s3" or not _BUCKET_RE.match(bucket):
        raise InvalidInput(
            f"PIXELBATCH_STORAGE_URL {url!r}: expected s3://BUCKET/PREFIX with a DNS-compatible"
            " bucket name"
        )
    prefix = parsed.path.strip("/")
    if prefix:
        validate_key(prefix)
        prefix += "/"
    return S3Location(bucket, prefix)


def presign_ttl(configured: int) -> int:
    """The lifetime of a presigned URL: the configured one, capped at S3's 7-day maximum (a
    longer one is refused by S3 when used, so the cap is what the URL really gets)."""
    return max(1, min(configured, MAX_PRESIGN_SECONDS))


def describe_error(exc: BaseException) -> str:
    """One line on what went wrong talking to the store, for logs, CLI and image errors."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "error"))
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        headers = meta.get("HTTPHeaders")
        if isinstance(headers, dict) and not any(h.startswith("x-amz") for h in headers):
            # S3, MinIO, Ceph and moto all send a request id; a web server that is not an
            # object store (a wrong port, a proxy's error page) sends none.
            server = headers.get("server", "an HTTP server")
            return (
                f"the endpoint did not answer as an S3 API (HTTP {status} from {server}):"
                " check PIXELBATCH_S3_ENDPOINT_URL"
            )
        if code in ("NoSuchBucket",) or (code == "404" and exc.operation_name == "HeadBucket"):
            return "no such bucket"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code}): check the credentials and the bucket policy"
        message = error.get("Message") or ""
        return f"{code} (HTTP {status}){': ' + str(message) if message else ''}"
    if isinstance(exc, BotoCoreError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class S3Storage:
    def __init__(
        self,
        location: S3Location,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str | None = None,
        url_ttl: int = MAX_PRESIGN_SECONDS,
        public_base_url: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.location = location
        self.ttl = presign_ttl(url_ttl)
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        config = Config(
            region_name=region,
            signature_version="s3v4",
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=POOL_CONNECTIONS,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # A custom endpoint (MinIO, Ceph...) rarely has wildcard DNS for bucket hosts.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        # Credentials: the standard chain only (env, shared profile, container/instance role).
        session = boto3.session.Session()
        self.client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        # Presigning is offline, but the URL's host is part of the signature: when clients
        # reach the store at another address (compose: minio:9000 inside, localhost:9000
        # outside), URLs are signed by a client of that address. It never connects.
        self._presigner: Any = self.client
        if public_endpoint_url and public_endpoint_url != endpoint_url:
            self._presigner = session.client("s3", endpoint_url=public_endpoint_url, config=config)
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=16 * 1024 * 1024
        )

    def _extra(self, content_type: str) -> dict[str, str]:
        cache = CACHE_CONTROL if content_type.startswith("image/") else CSV_CACHE_CONTROL
        return {"ContentType": content_type, "CacheControl": cache}

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        name = self.location.key(key)
        try:
            self.client.put_object(
                Bucket=self.location.bucket, Key=name, Body=data, **self._extra(content_type)
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not store {key}: {describe_error(exc)}") from exc
        return StoredObject(key=key, size=len(data), content_type=content_type)

    def put_file(self, key: str, source: IO[bytes], content_type: str) -> StoredObject:
        """One atomic PUT when the (seekable) file is below the multipart threshold, which
        leaves the caller's file open; else a multipart upload that is completed only after
        every part arrived (and aborted when the copy fails)."""
        name = self.location.key(key)
        size: int | None = None
        if source.seekable():
            start = source.tell()
            size = source.seek(0, io.SEEK_END) - start
            source.seek(start)
        try:
            if size is not None and size < MULTIPART_THRESHOLD:
                self.client.put_object(
                    Bucket=self.location.bucket, Key=name, Body=source, **self._extra(content_type)
                )
                return StoredObject(key=key, size=size, content_type=content_type)
            self.client.upload_fileobj(
                source,
                self.location.bucket,
                name,
                ExtraArgs=self._extra(content_type),
                Config=self._transfer,
            )
            # s3transfer may close the source; the store says what it holds.
            head = self.client.head_object(Bucket=self.location.bucket, Key=name)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not store {key}: {describe_error(exc)}") from exc
        return StoredObject(key=key, size=int(head["ContentLength"]), content_type=content_type)

    def read_into(self, key: str, target: IO[bytes]) -> None:
        try:
            self.client.download_fileobj(self.location.bucket, self.location.key(key), target)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not read {key}: {describe_error(exc)}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not delete {key}: {describe_error(exc)}") from exc

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix`` (a key "directory": ``prefix/...``); returns
        how many. Listed page by page and deleted 1000 keys per request."""
        under = self.location.key(prefix.rstrip("/")) + "/"
        removed = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=under
            )
            for page in pages:
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                for i in range(0, len(keys), DELETE_BATCH):
                    batch = keys[i : i + DELETE_BATCH]
                    answer = self.client.delete_objects(
                        Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                    if answer.get("Errors"):
                        first = answer["Errors"][0]
                        raise StorageError(
                            f"could not delete {first.get('Key')}: {first.get('Code')}"
                        )
                    removed += len(batch)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not delete {prefix}: {describe_error(exc)}") from exc
        return removed

    def local_path(self, key: str) -> Path | None:
        return None

    def url(self, key: str, base: str | None = None) -> str:
        """A URL the client reads straight from the store; ``base`` (the API's) is unused."""
        name = self.location.key(key)
        if self.public_base_url is not None:
            return f"{self.public_base_url}/{quote(name)}"
        return self.presigned_url(key)

    def url_lifetime(self, base: str | None = None) -> int | None:
        return None if self.public_base_url is not None else self.ttl

    def presigned_url(self, key: str, download_name: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.location.bucket, "Key": self.location.key(key)}
        if download_name is not None:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self.ttl
        )
        return url

    def redirect_url(self, key: str, download_name: str | None = None) -> str | None:
        """A fresh presigned URL: the API answers authorised readers with a redirect to it,
        so a link stays usable after the URL first handed out expired."""
        return self.presigned_url(key, download_name)

    def check(self) -> str:
        """Verify the bucket is reachable and writable: write, read back and delete a probe
        object under the prefix. Returns what was checked; raises ``StorageError``."""
        bucket = self.location.bucket
        probe = self.location.key("pixelbatch-storage-check")
        try:
            self.client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"bucket {bucket!r}: {describe_error(exc)}") from exc
        try:
            self.client.put_object(
                Bucket=bucket, Key=probe, Body=b"ok", **self._extra("text/plain")
            )
            self.client.get_object(Bucket=bucket, Key=probe)["Body"].read()
            self.client.delete_object(Bucket=bucket, Key=probe)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"bucket {bucket!r} is reachable but not writable at {probe!r}:"
                f" {describe_error(exc)}"
            ) from exc
        return f"s3://{bucket}/{self.location.prefix} is reachable and writable"
