"""The Fetcher: downloads untrusted URLs with redirects re-checked, caps, deadline, retries.

The guarantees are kept by the layers it is built on: the address guard and the total
deadline by the network backend (:mod:`.network`), the decoded-size cap by
:mod:`.decoding`, the retry policy by :mod:`.retries`; here they are put together per
request, with the per-host concurrency limit and the redirect loop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import httpcore
import httpx

from pixelbatch.errors import FetchError, InvalidInput
from pixelbatch.fetch import errors, transport
from pixelbatch.fetch.addresses import AddressPolicy
from pixelbatch.fetch.config import FetchConfig
from pixelbatch.fetch.decoding import BoundedDecoder
from pixelbatch.fetch.network import finish_response, total_deadline
from pixelbatch.fetch.retries import call_with_retries
from pixelbatch.fetch.urls import loggable_url, parse_http_url

log = logging.getLogger(__name__)

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Raised by the network backend, which knows host and port but not the URL.
_CONNECT_CODES = frozenset({"blocked_address", "blocked_port", "dns_error"})
_POST_DRAIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class FetchResult:
    data: bytes
    content_type: str | None
    final_url: str
    attempts: int
    elapsed: float


class Fetcher:
    """Downloads untrusted URLs. Thread-safe: make one per process and share it."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self.policy = AddressPolicy(config.allow, config.allowed_ports)
        self._pool = transport.build_pool(config, self.policy)
        self._download_headers = transport.download_headers(config)
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
        self._pool.close()

    # ---- public calls

    def fetch(self, url: str) -> FetchResult:
        """GET an image: redirects re-checked, bytes capped, retried, total deadline."""
        start = time.monotonic()
        deadline = start + self.config.total_timeout
        target = self._parse(url)
        attempts = 0

        def attempt() -> tuple[bytes, str | None, httpx.URL]:
            nonlocal attempts
            attempts += 1
            try:
                return self._get_with_redirects(target, deadline)
            except FetchError as exc:
                # details["url"] names the hop that failed; keep the one asked for too.
                exc.details = {
                    "url": str(target),
                    **(exc.details or {}),
                    "requested_url": str(target),
                    "attempts": attempts,
                }
                raise

        try:
            with total_deadline(deadline):
                data, content_type, final = call_with_retries(self.config, deadline, attempt)
        except FetchError as exc:
            log.debug(
                "GET %s failed after %d attempt(s) in %.0f ms: %s",
                loggable_url(str(target)),
                attempts,
                (time.monotonic() - start) * 1000,
                exc.code,
            )
            raise
        if log.isEnabledFor(logging.DEBUG):  # its arguments parse two URLs again: only if read
            self._log_fetched(target, final, data, content_type, start, attempts)
        return FetchResult(
            data=data,
            content_type=content_type,
            final_url=str(final),
            attempts=attempts,
            elapsed=time.monotonic() - start,
        )

    @staticmethod
    def _log_fetched(
        target: httpx.URL,
        final: httpx.URL,
        data: bytes,
        content_type: str | None,
        start: float,
        attempts: int,
    ) -> None:
        log.debug(
            "GET %s: %d bytes (%s) in %.0f ms, %d attempt(s)%s",
            loggable_url(str(target)),
            len(data),
            content_type or "no content type",
            (time.monotonic() - start) * 1000,
            attempts,
            "" if final == target else f", redirected to {loggable_url(str(final))}",
        )

    def post(self, url: str, content: bytes, headers: dict[str, str], timeout: float) -> int:
        """One POST attempt (webhooks): guarded, no redirects followed; returns the status.

        Only ``headers`` and the client's User-Agent are sent: the image ``Accept`` the
        client uses for downloads is replaced (by ``*/*`` unless ``headers`` names one)."""
        target = self._parse(url)
        connect = min(self.config.connect_timeout, timeout)
        try:
            with (
                total_deadline(time.monotonic() + timeout),
                self._pool.stream(
                    "POST",
                    transport.core_url(target),
                    headers=transport.post_headers(self.config, headers),
                    content=content,
                    extensions=transport.timeouts(connect, timeout, timeout),
                ) as response,
            ):
                drained = 0
                for chunk in response.iter_stream():  # a little, so keep-alive can work
                    drained += len(chunk)
                    if drained > _POST_DRAIN_BYTES:
                        break  # unread body: httpcore closes the connection
                else:
                    finish_response(response, drained)
                return response.status
        except FetchError as exc:
            raise errors.with_url(exc, target) from None
        except httpcore.TimeoutException:
            raise FetchError(
                f"Timed out after {timeout:g}s posting to {target}",
                code="timeout",
                retryable=True,
                details={"url": str(target)},
            ) from None
        except transport.TRANSPORT_ERRORS as exc:
            raise errors.connection_error(target, exc) from None

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
                slot = self._slots[host] = threading.BoundedSemaphore(self.config.per_host)
            return slot

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
            raise errors.timeout_error(url, deadline, cfg.total_timeout)
        try:
            left = max(0.001, deadline - time.monotonic())
            with self._pool.stream(
                "GET",
                transport.core_url(url),
                headers=self._download_headers,
                extensions=transport.timeouts(
                    min(cfg.connect_timeout, left), min(cfg.read_timeout, left), left
                ),
            ) as response:
                status = response.status
                location = transport.header(response, b"location")
                if status in _REDIRECT_STATUSES and location:
                    return self._redirect_target(url, location)
                if not 200 <= status < 300:
                    raise errors.http_error(
                        url,
                        status,
                        transport.reason_phrase(response),
                        transport.header(response, b"retry-after"),
                    )
                data = self._read_body(url, response, deadline)
                return data, transport.header(response, b"content-type")
        except FetchError as exc:
            if exc.code in _CONNECT_CODES:
                raise errors.with_url(exc, url) from None
            raise
        except httpcore.TimeoutException:
            raise errors.timeout_error(url, deadline, cfg.total_timeout) from None
        except transport.TRANSPORT_ERRORS as exc:
            raise errors.connection_error(url, exc) from None
        finally:
            slot.release()

    def _read_body(self, url: httpx.URL, response: httpcore.Response, deadline: float) -> bytes:
        cfg = self.config
        decoder = BoundedDecoder(transport.header(response, b"content-encoding"), str(url))
        # Compressed bodies may legitimately be a little larger than what they decode to.
        raw_cap = cfg.max_bytes if decoder.identity else cfg.max_bytes + cfg.max_bytes // 64 + 1024
        declared = (transport.header(response, b"content-length") or "").strip()
        if declared.isdigit() and int(declared) > raw_cap:
            raise errors.too_large(url, cfg.max_bytes, int(declared))
        chunks: list[bytes] = []
        total = raw = 0
        for chunk in response.iter_stream():
            raw += len(chunk)
            out = decoder.feed(chunk, cfg.max_bytes - total)
            if out is None or raw > raw_cap:
                raise errors.too_large(url, cfg.max_bytes)
            total += len(out)
            chunks.append(out)
            if time.monotonic() > deadline:
                raise errors.timeout_error(url, deadline, cfg.total_timeout)
        finish_response(response, raw)
        tail = decoder.flush(cfg.max_bytes - total)
        if tail is None:
            raise errors.too_large(url, cfg.max_bytes)
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
