"""The httpx client of every download, its connections made by the guarded backend.

httpx has no public hook for a network backend, so the connection pool is an
``httpcore.ConnectionPool`` built here on :class:`GuardedBackend`, behind a small
``httpx.BaseTransport`` modelled on httpx's own ``HTTPTransport.handle_request``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar, CookiePolicy
from typing import Any

import httpcore
import httpx

from pixelbatch.fetch.addresses import AddressPolicy
from pixelbatch.fetch.config import FetchConfig
from pixelbatch.fetch.network import GuardedBackend

_LOCATION = "pixelbatch.location"  # response extension: the Location header, see _take_location

# httpcore's exceptions and the httpx ones callers catch; looked up along the raised
# exception's MRO, so the most specific one wins (ReadTimeout before TimeoutException).
_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore's exceptions as httpx's; anything else (FetchError) unchanged."""
    try:
        yield
    except Exception as exc:
        for cls in type(exc).__mro__:
            mapped = _HTTPX_ERRORS.get(cls)
            if mapped is not None:
                raise mapped(str(exc)) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport whose every connection goes through :class:`GuardedBackend`."""

    def __init__(self, policy: AddressPolicy, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        with _httpx_errors():
            self._pool.close()


def _take_location(response: httpx.Response) -> None:
    """Response hook: hide Location from httpx and keep it for :func:`redirect_location`.

    Even with ``follow_redirects=False`` httpx builds the next request, parsing Location
    with its own stricter parser: a target it cannot parse (the octal IPv4 ``0177.0.0.1``)
    became a retryable protocol error, retried against the server that sent it, instead of
    going through our URL parser and address policy. One parser for every untrusted URL.
    """
    location = response.headers.get("location")
    if location is not None:
        response.extensions[_LOCATION] = location
        del response.headers["location"]


def redirect_location(response: httpx.Response) -> str | None:
    """The Location header of a response from :func:`build_client`, unparsed."""
    location = response.extensions.get(_LOCATION)
    return location if isinstance(location, str) else None


class _NoCookies(CookiePolicy):
    """One client serves many untrusted hosts: never store or send cookies."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


def build_client(config: FetchConfig, policy: AddressPolicy) -> httpx.Client:
    """The shared client: guarded, no environment proxies, no redirects, no cookies."""
    limits = httpx.Limits(
        max_connections=None,
        max_keepalive_connections=config.concurrency,
        keepalive_expiry=30.0,
    )
    return httpx.Client(
        transport=GuardedTransport(policy, limits),
        follow_redirects=False,
        event_hooks={"response": [_take_location]},
        trust_env=False,
        cookies=CookieJar(policy=_NoCookies()),
        headers={
            "User-Agent": config.user_agent,
            "Accept": "image/avif,image/webp,image/*,*/*;q=0.8",
            "Accept-Encoding": "gzip, deflate",
        },
    )
