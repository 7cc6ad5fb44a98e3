"""One typed settings object, read from ``PIXELBATCH_*`` environment variables.

Everything else receives a ``Settings`` instance rather than reading the environment, so
tests and the CLI can build one explicitly and two instances never disagree.
"""

from __future__ import annotations

import dataclasses
import os
import re
from functools import cached_property
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pixelbatch.telemetry.hosts import parse_classes

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

View = TypeVar("View", bound="DataclassInstance")


def _split_csv(value: Any) -> Any:
    """Lists come from the environment as comma-separated strings, not JSON."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Built once per process (API, CLI command, Celery worker) and passed down; every
    derived configuration (``FetchConfig``, ``CsvLimits``) is a view of it, so a default
    lives in exactly one place and a bad value is refused at start, not mid-batch."""

    model_config = SettingsConfigDict(env_prefix="PIXELBATCH_", extra="ignore")

    # Where the embedded mode keeps its SQLite file, uploaded CSVs and stored outputs.
    data_dir: Path = Path("pixelbatch-data")
    database_url: str | None = None
    broker_url: str | None = None
    # Where outputs go: unset = <data_dir>/outputs, file:///path, or s3://BUCKET/PREFIX.
    storage_url: str | None = None
    # S3-compatible endpoint (MinIO, Ceph, R2...); unset = AWS. Credentials come from the
    # standard AWS chain (AWS_ACCESS_KEY_ID..., AWS_PROFILE, instance/IRSA role) only.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Where clients reach that endpoint, when not at the same address (presigned URLs
    # name it): compose's MinIO is minio:9000 to the workers, localhost:9000 to a browser.
    s3_public_endpoint_url: str | None = None
    # With object storage: output URLs are PUBLIC_BASE_URL/KEY (a CDN or a public bucket)
    # instead of presigned URLs that expire after SIGNED_URL_TTL (capped at 7 days).
    public_base_url: str | None = None

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Absolute base for URLs written into output CSVs and webhooks.
    public_url: str | None = None

    # Access control. "auto": API keys required unless the server binds a loopback address.
    auth: Literal["auto", "on", "off"] = "auto"
    # Signs expiring output URLs; generated into the data dir in embedded mode if unset.
    secret_key: SecretStr | None = None
    signed_url_ttl: int = Field(7 * 24 * 3600, gt=0)
    upload_rate_per_minute: int = Field(60, ge=1)

    # Input CSV limits; catalog.CsvLimits is a view of them. Zero would refuse every file
    # (or, for the error cap, explain none of the refusals).
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0)
    max_rows: int = Field(200_000, gt=0)
    max_urls_per_row: int = Field(50, gt=0)
    max_url_length: int = Field(2048, gt=0)
    max_reported_errors: int = Field(100, gt=0)

    # Fetching untrusted URLs.
    fetch_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    fetch_allowed_ports: Annotated[list[Annotated[int, Field(ge=1, le=65535)]], NoDecode] = Field(
        default_factory=lambda: [80, 443]
    )
    fetch_connect_timeout: float = Field(5.0, gt=0)
    fetch_read_timeout: float = Field(15.0, gt=0)
    fetch_total_timeout: float = Field(60.0, gt=0)
    fetch_max_bytes: int = Field(50 * 1024 * 1024, ge=1)
    fetch_max_redirects: int = Field(5, ge=0)
    fetch_retries: int = Field(3, ge=0)
    fetch_backoff_base: float = Field(0.5, ge=0)
    fetch_backoff_max: float = Field(30.0, ge=0)
    # Downloads mostly wait on the network: with 16 threads, 640 px images spent 3/4 of a
    # thread's time waiting and left both cores part idle (186 vs 244 images/s at 32).
    fetch_concurrency: int = Field(32, ge=1)
    fetch_per_host: int = Field(6, ge=1)
    user_agent: str = Field(
        "pixelbatch/0.1 (+https://github.com/pixelbatch/pixelbatch)", min_length=1
    )

    # Image processing.
    max_pixels: int = Field(50_000_000, gt=0)
    default_relative_quality: float = Field(0.5, gt=0, le=1)
    transform_workers: int = Field(0, ge=0)  # 0 = one per core
    # Wall-clock limit of one image's decode + encode in the embedded pool.
    transform_timeout: float = Field(60.0, gt=0)

    # Work distribution.
    chunk_size: int = Field(16, ge=1)
    # Short leases, renewed by a heartbeat every third while the image (or the batch's
    # finalisation) is worked on: a live worker keeps them however long the work takes, a
    # dead one's come back within one lease (plus a sweep to ring for them).
    lease_seconds: float = Field(10.0, gt=0, le=3600)
    poll_interval: float = Field(1.0, gt=0)
    # How long a `low` batch waits (since its upload) before it competes as `normal`, so
    # a stream of normal work cannot starve it forever (db.fair_share).
    priority_aging_seconds: float = Field(600.0, gt=0)
    finalize_lease_seconds: float = Field(15.0, gt=0, le=3600)
    # Distributed mode: how often a worker sweeps for work whose message was lost (or whose
    # leases ran out), how many doorbell messages keep the queue moving, and the hard time
    # limit of one chunk.
    sweep_interval: float = Field(5.0, gt=0)
    dispatch_fanout: int = Field(32, ge=1)
    chunk_time_limit: float = Field(600.0, gt=30)
    worker_max_memory_mb: int = Field(600, ge=64)

    # Operating it: metrics and logs (README "Metrics").
    metrics_enabled: bool = True
    # A `pixelbatch worker` serves its /metrics here (all its processes summed); unset: none.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other hosts by design
    # Where a worker keeps its multiprocess metric files (emptied at start); unset: a temp dir.
    metrics_dir: Path | None = None
    # "host-suffix=class" entries: the bounded host_class label of download failures.
    metrics_host_classes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_format: Literal["text", "json"] = "text"
    # Retention: finished batches (rows and stored files) are deleted this many days after
    # they finished, by the sweeper; None (the default) keeps everything.
    retention_days: int | None = Field(None, ge=1, le=36500)

    # Webhooks.
    webhook_secret: SecretStr | None = None
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(10, ge=1)
    webhook_backoff_base: float = Field(10.0, ge=0)
    webhook_backoff_max: float = Field(3600.0, ge=0)

    @field_validator("storage_url")
    @classmethod
    def _known_storage(cls, value: str | None) -> str | None:
        """Refused at start rather than on the first upload (storage.s3 parses it fully)."""
        if not value:
            return None
        scheme, _, rest = value.partition("://")
        if scheme == "file" and rest:
            return value
        bucket = rest.split("/", 1)[0]
        if scheme == "s3" and re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            return value
        raise ValueError(
            "expected file:///PATH or s3://BUCKET/PREFIX (a DNS-compatible bucket name)"
        )

    @field_validator("fetch_allow", "fetch_allowed_ports", "metrics_host_classes", mode="before")
    @classmethod
    def _lists_from_env(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("metrics_host_classes")
    @classmethod
    def _host_classes_parse(cls, value: list[str]) -> list[str]:
        parse_classes(value)  # refuse a bad entry at start, naming it
        return value

    @cached_property
    def host_classes(self) -> dict[str, str]:
        """Parsed once: every recorded image asks for it."""
        return parse_classes(self.metrics_host_classes)

    def view(self, cls: type[View], *, prefix: str = "", **names: str) -> View:
        """Build the dataclass ``cls`` from the settings it mirrors: each field from the
        setting ``prefix + field`` unless ``names`` names another. Lists are copied, so the
        view is a snapshot whatever later becomes of the settings."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = getattr(self, names.get(field.name, prefix + field.name))
            values[field.name] = list(value) if isinstance(value, list) else value
        return cls(**values)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'pixelbatch.sqlite3').resolve()}"

    @property
    def auth_enabled(self) -> bool:
        if self.auth != "auto":
            return self.auth == "on"
        host = self.host.strip("[]")
        if host == "localhost":
            return False
        try:
            return not ip_address(host).is_loopback
        except ValueError:
            return True

    @property
    def is_embedded(self) -> bool:
        return not self.broker_url

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_transform_workers(self) -> int:
        return self.transform_workers or os.cpu_count() or 1

    # Browser clients of the API on other origins (CORS): exact origins such as
    # https://admin.example.com, or "*"; none by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _cors_origins_from_env(cls, value: Any) -> Any:
        return _split_csv(value)

    # Build URLs from X-Forwarded-Proto / X-Forwarded-Host: only behind a proxy that sets
    # them, since a client could otherwise name any host.
    trust_proxy_headers: bool = False
