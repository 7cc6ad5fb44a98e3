"""The public base URL of a request: Host by default, proxy headers only when trusted, and
never a URL made of a malformed host."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from pixelbatch.api.urls import request_base_url


def _request(headers: dict[str, str], scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "method": "GET",
            "path": "/",
            "query_string": b"",
            "server": ("0.0.0.0", 8000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
    )


FORWARDED = {
    "Host": "10.0.0.5:8000",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "api.shop.example, inner.proxy",
}


def test_host_header_and_scheme() -> None:
    assert request_base_url(_request({"Host": "Shop.Example:8443"}), False) == (
        "http://shop.example:8443"
    )
    assert request_base_url(_request({"Host": "[::1]:8000"}, "https"), False) == (
        "https://[::1]:8000"
    )


def test_proxy_headers_only_when_trusted() -> None:
    assert request_base_url(_request(FORWARDED), False) == "http://10.0.0.5:8000"
    assert request_base_url(_request(FORWARDED), True) == "https://api.shop.example"


@pytest.mark.parametrize(
    "host", ["", "evil.example/x?", "a b", "user@evil.example", "x:port", "-bad.example"]
)
def test_malformed_hosts_give_no_base(host: str) -> None:
    assert request_base_url(_request({"Host": host}), False) is None
    assert request_base_url(_request({**FORWARDED, "X-Forwarded-Host": host}), True) in (
        None,
        "https://10.0.0.5:8000",
    )
