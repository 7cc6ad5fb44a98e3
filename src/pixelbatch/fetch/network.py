"""The socket layer of every download: the address guard at connect time and the deadline.

The address check lives here, below httpcore, because this is the only place that sees the
IP actually connected to: checking a URL's host name beforehand would be defeated by DNS
rebinding and by redirects.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore

from pixelbatch.errors import FetchError
from pixelbatch.fetch.addresses import AddressPolicy, IPAddress

# h11's end-of-head rule (a blank line, CRLF or bare LF), and how far into a response we
# look for it; httpcore refuses heads over 100 KiB, so a longer one never completes.
_HEAD_END = re.compile(rb"\n\r?\n")
_HEAD_SCAN_BYTES = 128 * 1024
# The largest read a stream grows to (see DeadlineStream.read).
_MAX_READ_BYTES = 1 << 20

# Linux's TCP_INFO through tcpi_bytes_received (kernel 4.1+): the connection's state is its
# first byte, the payload bytes it has received a u64 at offset 128.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCP_INFO_BYTES = 136
_TCP_BYTES_RECEIVED_AT = 128
_TCP_ESTABLISHED = 1

# Absolute monotonic deadline of the download running in this thread. The guarded streams
# read it on every socket operation, so the total deadline holds even for a server that
# drips one byte just inside each read timeout.
_deadline: ContextVar[float | None] = ContextVar("pixelbatch_fetch_deadline", default=None)


@contextmanager
def total_deadline(at: float) -> Iterator[None]:
    """Every socket operation in this thread inside the block ends by ``at`` (monotonic)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def _timeval(timeout: float | None) -> bytes:
    """``timeout`` as the ``struct timeval`` of SO_RCVTIMEO/SO_SNDTIMEO (zero waits forever,
    so a timeout never rounds down to it)."""
    if timeout is None:
        return struct.pack("ll", 0, 0)
    micros = max(1, round(timeout * 1_000_000))
    return struct.pack("ll", micros // 1_000_000, micros % 1_000_000)


@contextmanager
def _kernel_timeout(
    sock: socket.socket, option: int, timeout: float | None, timed_out: type[Exception]
) -> Iterator[None]:
    """Run one call on a blocking socket, ``timeout`` set as its kernel timeout ``option``,
    with httpcore's errors: ``timed_out`` when the kernel's wait ran out, else the read or
    write error that goes with it."""
    failed = httpcore.ReadError if timed_out is httpcore.ReadTimeout else httpcore.WriteError
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, _timeval(timeout))
        yield
    except BlockingIOError:  # the timeout ran out
        raise timed_out("timed out") from None
    except OSError as exc:
        raise failed(str(exc) or type(exc).__name__) from exc


def _bounded(timeout: float | None, exc: type[Exception]) -> float | None:
    """Shrink a per-operation timeout so it never runs past the thread's total deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("total download deadline reached")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """Wraps a socket stream so every read/write respects the total deadline.

    It also counts the bytes of each request/response exchange, so that a connection
    whose peer sent more than one response's worth is dropped instead of reused: see
    :meth:`finish_response`.
    """

    def __init__(self, inner: httpcore.NetworkStream, *, tls: bool = False) -> None:
        self._inner = inner
        self._reusable = True
        self._bytes_read = 0  # over the connection's life, for ``_idle_readable``
        # TLS reads return fewer bytes than the socket received: only a plain socket's
        # byte count can be compared with the kernel's.
        sock = None if tls or _TCP_INFO is None else inner.get_extra_info("socket")
        self._tcp_socket: socket.socket | None = sock if isinstance(sock, socket.socket) else None
        if self._tcp_socket is not None:
            # Blocking, its timeouts kept by the kernel (``_recv``, ``_send``).
            self._tcp_socket.settimeout(None)
        self._exchange_bytes = 0  # read since the request was written
        self._head = bytearray()  # the start of those bytes, until the response head ends
        self._head_end: int | None = None
        self._read_size = 0  # grows within an exchange while reads come back full

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read up to ``max_bytes``, or more once the peer has shown it has more.

        httpcore asks for 64 KiB at a time, and each read then passes through h11, httpcore
        and the body loop: a 450 KB photo took seven of those trips or more. A read that
        comes back full says more is waiting, so the next asks for four times as much, up to
        1 MiB; a small image never grows its reads (a large buffer for a small answer costs
        more than it saves). h11 takes data of any size, and the exchange's byte count
        (``finish_response``) still sees every byte."""
        size = max(max_bytes, self._read_size)
        data = self._recv(size, _bounded(timeout, httpcore.ReadTimeout))
        self._bytes_read += len(data)
        if len(data) == size:
            self._read_size = min(4 * size, _MAX_READ_BYTES)
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
        self._read_size = 0
        self._head.clear()
        self._head_end = None
        self._send(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def _recv(self, max_bytes: int, timeout: float | None) -> bytes:
        """One ``recv``, its timeout kept by the kernel (SO_RCVTIMEO).

        A socket with a Python timeout, as httpcore keeps it, waits in ``poll()`` before
        each ``recv`` and ``send``: two system calls, each releasing the GIL, where a
        blocking socket makes one, and among 32 download threads every release is a
        handoff of the GIL. TLS streams keep httpcore's way (the TLS layer reads for us)."""
        sock = self._tcp_socket
        if sock is None:
            return self._inner.read(max_bytes, timeout)
        with _kernel_timeout(sock, socket.SO_RCVTIMEO, timeout, httpcore.ReadTimeout):
            data = sock.recv(max_bytes)
        return data

    def _send(self, buffer: bytes, timeout: float | None) -> None:
        sock = self._tcp_socket
        if sock is None:
            self._inner.write(buffer, timeout)
        elif buffer:  # h11 ends a body-less request with an empty write
            with _kernel_timeout(sock, socket.SO_SNDTIMEO, timeout, httpcore.WriteTimeout):
                sock.sendall(buffer)

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
        return DeadlineStream(tls, tls=True)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore's pool treats an idle connection with readable data as closed by
            # the server and discards it: exactly what a tainted connection needs.
            if not self._reusable:
                return True
            readable = self._idle_readable()
            if readable is not None:
                return readable
        return self._inner.get_extra_info(info)

    def _idle_readable(self) -> bool | None:
        """Whether the server closed this connection or sent bytes nobody asked for, from
        the kernel's TCP_INFO; None where it cannot tell (TLS, not Linux).

        httpcore asks this of every idle connection of a pool on each request and each
        response's end, and answers with ``poll()``: a system call that releases the GIL,
        nine times per download on the benchmark's small images. With 32 download threads
        each release hands the GIL over (futex calls), and those polls cost a third of the
        API process's system calls (238 -> 156 futex calls per image without them).
        ``getsockopt`` runs under the GIL. The answer is poll's: a closed, reset or
        closing connection is no longer ESTABLISHED, and bytes waiting in the socket are
        bytes the kernel received that this stream never read."""
        sock, option = self._tcp_socket, _TCP_INFO
        if sock is None or option is None:
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_BYTES)
        except OSError:
            return True  # a closed socket reads as its end, as in httpcore
        if len(info) < _TCP_INFO_BYTES:
            return None
        (received,) = struct.unpack_from("=Q", info, _TCP_BYTES_RECEIVED_AT)
        return info[0] != _TCP_ESTABLISHED or received != self._bytes_read


def finish_response(response: httpcore.Response, body_bytes: int) -> None:
    """Tell the connection how many body bytes ``response`` had (see finish_response)."""
    stream = response.extensions.get("network_stream")
    if isinstance(stream, DeadlineStream):
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
            return DeadlineStream(stream)
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
