"""The limits of downloading untrusted URLs (see ``Settings.fetch_*``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pixelbatch.fetch.urls import DEFAULT_MAX_LENGTH

if TYPE_CHECKING:
    from pixelbatch.settings import Settings


@dataclass(frozen=True)
class FetchConfig:
    """Limits for downloading untrusted URLs (see ``Settings.fetch_*``)."""

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    # Bounds one whole fetch() call: every attempt, redirect, body read and backoff sleep.
    total_timeout: float = 60.0
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    concurrency: int = 16
    per_host: int = 6
    user_agent: str = "pixelbatch/0.1"
    allow: list[str] = field(default_factory=list)
    allowed_ports: list[int] = field(default_factory=lambda: [80, 443])
    max_url_length: int = DEFAULT_MAX_LENGTH

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchConfig:
        return cls(
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            total_timeout=settings.fetch_total_timeout,
            max_bytes=settings.fetch_max_bytes,
            max_redirects=settings.fetch_max_redirects,
            retries=settings.fetch_retries,
            backoff_base=settings.fetch_backoff_base,
            backoff_max=settings.fetch_backoff_max,
            concurrency=settings.fetch_concurrency,
            per_host=settings.fetch_per_host,
            user_agent=settings.user_agent,
            allow=list(settings.fetch_allow),
            allowed_ports=list(settings.fetch_allowed_ports),
            max_url_length=settings.max_url_length,
        )
