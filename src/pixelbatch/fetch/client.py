"""Download untrusted URLs safely: SSRF guard at connect time, caps, deadlines, retries.

The address check lives in the network backend, below httpx, because that is the only
place that sees the IP actually connected to: checking a URL's host name beforehand would
be defeated by DNS rebinding and by redirects.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar, CookiePolicy
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from pixelbatch.errors import FetchError, InvalidInput
from pixelbatch.fetch.addresses import AddressPolicy, IPAddress
from pixelbatch.fetch.urls import DEFAULT_MAX_LENGTH, parse_http_url

if TYPE_CHECKING:
    from pixelbatch.settings import Settings

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CONNECT_CODES = frozenset({"blocked_address", "blocked_port", "dns_error"})
_POST_DRAIN_BYTES = 64 * 1024
_LOCATION = "pixelbatch.location"  # response extension: the Location header, see _take_location
# h11's end-of-head rule (a blank line, CRLF or bare LF), and how far into a response we
# look for it; httpcore refuses heads over 100 KiB, so a longer one never completes.
_HEAD_END = re.compile(rb"\n\r?\n")
_HEAD_SCAN_BYTES = 128 * 1024

# Absolute monotonic deadline of the download running in this thread. The guarded streams
# read it on every socket operation, so the total deadline holds even for a server that
# drips one byte just inside each read timeout.
_deadline: ContextVar[float | None] = ContextVar("pixelbatch_fetch_deadline", default=None)


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


@dataclass(frozen=True)
class FetchResult:
    data: bytes
    content_type: str | None
    final_url: str
    attempts: int
    elapsed: float


# --------------------------------------------------------------------------- network layer


def _bounded(timeout: float | None, exc: type[Exception]) -> float | None:
    """Shrink a per-operation timeout so it never runs past the thread's total deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("total download deadline reached")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """Wraps a socket stream so every read/write respects the total deadline.

    It also counts the bytes of each request/response exchange, so that a connection
    whose peer sent more than one response's worth is dropped instead of reused: see
    :meth:`finish_response`.
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._reusable = True
        self._exchange_bytes = 0  # read since the request was written
        self._head = bytearray()  # the start of those bytes, until the response head ends
        self._head_end: int | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))
        self._exchange_bytes += len(data)
        if self._head_end is None and len(self._head) < _HEAD_SCAN_BYTES:
            resume = max(0, len(self._head) - 2)  # a trickled head is not rescanned each time
            self._head += data[: _HEAD_SCAN_BYTES - len(self._head)]
            end = _HEAD_END.search(self._head, resume)
            if end is not None:
                self._head_end = end.end()
                self._head.clear()
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # HTTP/1.1 without pipelining: a write starts a new exchange, nothing is read yet.
        self._exchange_bytes = 0
        self._head.clear()
        self._head_end = None
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def finish_response(self, body_bytes: int) -> None:
        """Forbid reuse unless exactly one response (head + ``body_bytes``) was read.

        h11 reads in 64 KiB gulps; bytes a peer sent past the declared Content-Length can
        sit in its buffer, where httpcore's "is the idle socket readable?" check cannot
        see them, and become the response to the next request on this connection
        (response splitting; RFC 9112 s6.3 forbids a client to process them). The count
        is exact for Content-Length framing; chunked framing adds bytes we do not
        separate out, so such connections are simply not reused - safe, one reconnect.
        """
        if self._head_end is None or self._exchange_bytes != self._head_end + body_bytes:
            self._reusable = False

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # TLS runs on top of the checked socket, with the URL's host name for SNI and
        # certificate verification.
        tls = self._inner.start_tls(
            ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and not self._reusable:
            # httpcore's pool treats an idle connection with readable data as closed by
            # the server and discards it: exactly what a tainted connection needs.
            return True
        return self._inner.get_extra_info(info)


def _finish_response(response: httpx.Response, body_bytes: int) -> None:
    """Tell the connection how many body bytes ``response`` had (see finish_response)."""
    stream = response.extensions.get("network_stream")
    if isinstance(stream, _DeadlineStream):
        stream.finish_response(body_bytes)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves once, checks every address with the policy, then connects to that IP.

    Connecting to the checked IP (never the name again) is what defeats DNS rebinding.
    """

    def __init__(self, policy: AddressPolicy, inner: httpcore.NetworkBackend | None = None):
        self._policy = policy
        self._inner = inner or httpcore.SyncBackend()

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """All addresses ``host`` resolves to (an IP literal resolves to itself, no DNS)."""
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            transient = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
            raise FetchError(
                f"Could not resolve host name {host}",
                code="dns_error",
                retryable=transient,
                details={"host": host},
            ) from None
        ips: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in ips:
                ips.append(ip)
        if not ips:
            raise FetchError(f"Host name {host} has no addresses", code="dns_error")
        return ips

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        ips = self.resolve(host, port)
        for ip in ips:  # refuse if ANY address is blocked: the resolver's order is not ours
            self._policy.check(host, port, ip)
        options = list(socket_options or [])
        last: Exception | None = None
        for ip in ips:
            try:
                stream = self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=_bounded(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _DeadlineStream(stream)
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchError("Unix sockets are never used for untrusted URLs", code="blocked_address")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool rebuilt on the guarded backend."""

    def __init__(self, policy: AddressPolicy, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx 0.28 has no public hook for the network backend; swap the pool it built.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def _take_location(response: httpx.Response) -> None:
    """Response hook: hide Location from httpx and keep it for ``Fetcher._redirect_target``.

    Even with ``follow_redirects=False`` httpx builds the next request, parsing Location
    with its own stricter parser: a target it cannot parse (the octal IPv4 ``0177.0.0.1``)
    became a retryable protocol error, retried against the server that sent it, instead of
    going through our URL parser and address policy. One parser for every untrusted URL.
    """
    location = response.headers.get("location")
    if location is not None:
        response.extensions[_LOCATION] = location
        del response.headers["location"]


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


# --------------------------------------------------------------------------- body reading


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class _BoundedDecoder:
    """Content-Encoding decoder that never produces more than the room it is given.

    httpx's own decoders inflate a whole network chunk at once (a 64 KiB gzip bomb chunk
    becomes ~64 MiB before anyone can count it), so we decode ourselves with zlib's
    ``max_length``.
    """

    def __init__(self, header: str | None, url: str) -> None:
        self._url = url
        names = [e.strip().lower() for e in (header or "").split(",")]
        names = [e for e in names if e and e != "identity"]
        self._raw_deflate_fallback = False
        self._z: Any = None
        if not names:
            return
        if len(names) > 1 or names[0] not in ("gzip", "x-gzip", "deflate"):
            raise FetchError(
                f"Unsupported Content-Encoding {header!r} from {url}",
                code="unsupported_encoding",
                details={"url": url},
            )
        if names[0] == "deflate":
            self._z = zlib.decompressobj()
            self._raw_deflate_fallback = True
        else:
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def identity(self) -> bool:
        return self._z is None

    def feed(self, data: bytes, room: int) -> bytes | None:
        """Decoded bytes, or None when they would exceed ``room``."""
        if self._z is None:
            return data if len(data) <= room else None
        try:
            out: bytes = self._z.decompress(data, room + 1)
        except zlib.error:
            if not self._raw_deflate_fallback:
                raise self._corrupt() from None
            # Some servers send raw deflate without the zlib header.
            self._raw_deflate_fallback = False
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, room + 1)
            except zlib.error:
                raise self._corrupt() from None
        self._raw_deflate_fallback = False
        return out if len(out) <= room else None

    def flush(self, room: int) -> bytes | None:
        if self._z is None:
            return b""
        try:
            out: bytes = self._z.flush()
        except zlib.error:
            raise self._corrupt() from None
        return out if len(out) <= room else None

    def _corrupt(self) -> FetchError:
        return FetchError(
            f"Corrupt compressed body from {self._url}",
            code="decode_error",
            details={"url": self._url},
        )


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --------------------------------------------------------------------------- the fetcher


class Fetcher:
    """Downloads untrusted URLs. Thread-safe: make one per process and share it."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self.policy = AddressPolicy(config.allow, config.allowed_ports)
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=max(1, config.concurrency),
            keepalive_expiry=30.0,
        )
        self._client = httpx.Client(
            transport=_GuardedTransport(self.policy, limits),
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
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # ---- public calls

    def fetch(self, url: str) -> FetchResult:
        """GET an image: redirects re-checked, bytes capped, retried, total deadline."""
        cfg = self.config
        start = time.monotonic()
        deadline = start + cfg.total_timeout
        target = self._parse(url)
        token = _deadline.set(deadline)
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    data, content_type, final = self._get_with_redirects(target, deadline)
                except FetchError as exc:
                    # details["url"] names the hop that failed; keep the one asked for too.
                    exc.details = {
                        "url": str(target),
                        **(exc.details or {}),
                        "requested_url": str(target),
                        "attempts": attempt,
                    }
                    if not exc.retryable or attempt > cfg.retries:
                        raise
                    delay = self._backoff(attempt - 1, exc.retry_after)
                    if time.monotonic() + delay >= deadline:
                        raise
                    time.sleep(delay)
                    continue
                return FetchResult(
                    data=data,
                    content_type=content_type,
                    final_url=str(final),
                    attempts=attempt,
                    elapsed=time.monotonic() - start,
                )
        finally:
            _deadline.reset(token)

    def post(self, url: str, content: bytes, headers: dict[str, str], timeout: float) -> int:
        """One POST attempt (webhooks): guarded, no redirects followed; returns the status."""
        target = self._parse(url)
        token = _deadline.set(time.monotonic() + timeout)
        try:
            limits = httpx.Timeout(
                connect=min(self.config.connect_timeout, timeout),
                read=timeout,
                write=timeout,
                pool=timeout,
            )
            with self._client.stream(
                "POST", target, content=content, headers=headers, timeout=limits
            ) as response:
                drained = 0
                for chunk in response.iter_raw():  # a little, so keep-alive can work
                    drained += len(chunk)
                    if drained > _POST_DRAIN_BYTES:
                        break  # unread body: httpcore closes the connection
                else:
                    _finish_response(response, drained)
                return response.status_code
        except FetchError as exc:
            raise self._with_url(exc, target) from None
        except httpx.TimeoutException:
            raise FetchError(
                f"Timed out after {timeout:g}s posting to {target}",
                code="timeout",
                retryable=True,
                details={"url": str(target)},
            ) from None
        except httpx.HTTPError as exc:
            raise self._connection_error(target, exc) from None
        finally:
            _deadline.reset(token)

    # ---- helpers

    def _parse(self, url: str) -> httpx.URL:
        try:
            return parse_http_url(url, max_length=self.config.max_url_length)
        except InvalidInput as exc:
            raise FetchError(exc.message, code="invalid_url", details=exc.details) from None

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = threading.BoundedSemaphore(max(1, self.config.per_host))
            return slot

    def _backoff(self, retry_index: int, retry_after: float | None) -> float:
        cfg = self.config
        if retry_after is not None:
            return min(retry_after, cfg.backoff_max)
        ceiling = min(cfg.backoff_max, cfg.backoff_base * (2.0 ** min(retry_index, 30)))
        return random.uniform(0.0, ceiling)  # full jitter

    def _get_with_redirects(
        self, url: httpx.URL, deadline: float
    ) -> tuple[bytes, str | None, httpx.URL]:
        current = url
        for _hop in range(self.config.max_redirects + 1):
            outcome = self._get_once(current, deadline)
            if isinstance(outcome, httpx.URL):
                current = outcome
                continue
            data, content_type = outcome
            return data, content_type, current
        raise FetchError(
            f"Too many redirects (more than {self.config.max_redirects}) starting at {url}",
            code="too_many_redirects",
            details={"url": str(url), "last_url": str(current)},
        )

    def _get_once(self, url: httpx.URL, deadline: float) -> tuple[bytes, str | None] | httpx.URL:
        """One GET: either the body (2xx), a checked redirect target, or a FetchError."""
        cfg = self.config
        slot = self._slot(url.host)
        if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise self._timeout_error(url, deadline)
        try:
            left = max(0.001, deadline - time.monotonic())
            timeout = httpx.Timeout(
                connect=min(cfg.connect_timeout, left),
                read=min(cfg.read_timeout, left),
                write=min(cfg.read_timeout, left),
                pool=left,
            )
            with self._client.stream("GET", url, timeout=timeout) as response:
                status = response.status_code
                location = response.extensions.get(_LOCATION)
                if status in _REDIRECT_STATUSES and location:
                    return self._redirect_target(url, location)
                if not 200 <= status < 300:
                    raise self._http_error(url, response)
                return self._read_body(url, response, deadline), response.headers.get(
                    "content-type"
                )
        except FetchError as exc:
            if exc.code in _CONNECT_CODES:
                raise self._with_url(exc, url) from None
            raise
        except httpx.TimeoutException:
            raise self._timeout_error(url, deadline) from None
        except httpx.HTTPError as exc:
            raise self._connection_error(url, exc) from None
        finally:
            slot.release()

    def _read_body(self, url: httpx.URL, response: httpx.Response, deadline: float) -> bytes:
        cfg = self.config
        encoding = response.headers.get("content-encoding")
        decoder = _BoundedDecoder(encoding, str(url))
        # Compressed bodies may legitimately be a little larger than what they decode to.
        raw_cap = cfg.max_bytes if decoder.identity else cfg.max_bytes + cfg.max_bytes // 64 + 1024
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > raw_cap:
            raise self._too_large(url, int(declared))
        chunks: list[bytes] = []
        total = raw = 0
        for chunk in response.iter_raw():
            raw += len(chunk)
            out = decoder.feed(chunk, cfg.max_bytes - total)
            if out is None or raw > raw_cap:
                raise self._too_large(url)
            total += len(out)
            chunks.append(out)
            if time.monotonic() > deadline:
                raise self._timeout_error(url, deadline)
        _finish_response(response, raw)
        tail = decoder.flush(cfg.max_bytes - total)
        if tail is None:
            raise self._too_large(url)
        chunks.append(tail)
        return b"".join(chunks)

    def _redirect_target(self, url: httpx.URL, location: str) -> httpx.URL:
        try:
            joined = str(url.join(location))
        except (httpx.InvalidURL, ValueError):
            joined = location
        try:
            return parse_http_url(joined, max_length=self.config.max_url_length)
        except InvalidInput as exc:
            raise FetchError(
                f"{url} redirected to an unusable URL: {exc.message}",
                code="invalid_redirect",
                details={"url": str(url), "location": location[:500]},
            ) from None

    # ---- error builders

    def _http_error(self, url: httpx.URL, response: httpx.Response) -> FetchError:
        status = response.status_code
        reason = response.reason_phrase or httpx.codes.get_reason_phrase(status)
        retryable = status == 429 or 500 <= status <= 599
        retry_after = _parse_retry_after(response.headers.get("retry-after")) if retryable else None
        return FetchError(
            f"HTTP {status} {reason} from {url}".replace("  ", " "),
            code=f"http_{status}",
            retryable=retryable,
            retry_after=retry_after,
            details={"url": str(url), "status": status},
        )

    def _too_large(self, url: httpx.URL, declared: int | None = None) -> FetchError:
        limit = _human_bytes(self.config.max_bytes)
        if declared is not None:
            message = (
                f"{url} is too large: it declares {_human_bytes(declared)}, over the {limit} limit"
            )
        else:
            message = f"{url} is too large: its body exceeds the {limit} limit"
        return FetchError(
            message,
            code="too_large",
            details={"url": str(url), "max_bytes": self.config.max_bytes},
        )

    def _timeout_error(self, url: httpx.URL, deadline: float) -> FetchError:
        if time.monotonic() >= deadline - 0.01:
            message = f"Download of {url} did not finish within {self.config.total_timeout:g}s"
        else:
            message = f"Timed out waiting for {url}"
        return FetchError(message, code="timeout", retryable=True, details={"url": str(url)})

    @staticmethod
    def _connection_error(url: httpx.URL, exc: Exception) -> FetchError:
        detail = str(exc).strip() or type(exc).__name__
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                # Retrying will not fix a bad certificate.
                return FetchError(
                    f"Could not download {url}: TLS certificate not valid ({cause.verify_message})",
                    code="tls_error",
                    details={"url": str(url)},
                )
            cause = cause.__cause__ or cause.__context__
        return FetchError(
            f"Could not download {url}: {detail}",
            code="connection_error",
            retryable=True,
            details={"url": str(url)},
        )

    @staticmethod
    def _with_url(exc: FetchError, url: httpx.URL) -> FetchError:
        return FetchError(
            f"{exc.message} for {url}",
            code=exc.code,
            retryable=exc.retryable,
            retry_after=exc.retry_after,
            details={**(exc.details or {}), "url": str(url)},
        )
