"""The fetch limits, as a view of ``Settings``: no defaults here, so the two cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixelbatch.settings import Settings


@dataclass(frozen=True)
class FetchConfig:
    """Limits for downloading untrusted URLs; build it with :meth:`from_settings`.

    The values (and their validation) live on ``Settings.fetch_*``; this only gathers the
    ones the fetcher reads, so the fetch package does not depend on the whole settings.
    """

    connect_timeout: float
    read_timeout: float
    # Bounds one whole fetch() call: every attempt, redirect, body read and backoff sleep.
    total_timeout: float
    max_bytes: int
    max_redirects: int
    retries: int
    backoff_base: float
    backoff_max: float
    concurrency: int
    per_host: int
    user_agent: str
    allow: list[str]
    allowed_ports: list[int]
    max_url_length: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchConfig:
        # Settings.fetch_* holds every fetch limit but these two, which others read too.
        return settings.view(
            cls, prefix="fetch_", user_agent="user_agent", max_url_length="max_url_length"
        )
