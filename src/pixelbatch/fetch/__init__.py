"""Safe download of untrusted URLs: SSRF guard, caps, timeouts, retries."""

from pixelbatch.fetch.addresses import (
    BLOCKED_IPV4,
    BLOCKED_IPV6,
    AddressPolicy,
    is_blocked_address,
)
from pixelbatch.fetch.client import Fetcher, FetchResult
from pixelbatch.fetch.config import FetchConfig
from pixelbatch.fetch.network import GuardedBackend
from pixelbatch.fetch.urls import effective_port, normalize_ipv4_host, parse_http_url

__all__ = [
    "BLOCKED_IPV4",
    "BLOCKED_IPV6",
    "AddressPolicy",
    "FetchConfig",
    "FetchResult",
    "Fetcher",
    "GuardedBackend",
    "effective_port",
    "is_blocked_address",
    "normalize_ipv4_host",
    "parse_http_url",
]
