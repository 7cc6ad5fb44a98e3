"""The downloader against raw TCP peers that misbehave below HTTP (127.0.0.1 only).

Each peer defeats a naive client: per-read timeouts alone never fire against a peer that
trickles bytes, a silent peer costs ``read_timeout x attempts``, and a body without any
length runs until memory does.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import pytest

from pixelbatch.errors import FetchError
from pixelbatch.fetch import FetchConfig, Fetcher
from tests.integration.fetch_servers import fetch_config

TOTAL = 1.5  # the total deadline every test below must beat
SLACK = 0.75
MAX_BYTES = 256 * 1024

Behaviour = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """Accepts on 127.0.0.1:<ephemeral> and runs ``behaviour`` on each connection in a
    thread after reading the request head; counts connections and bytes sent."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.sent = 0
        self._conns: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/image.png"

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.sent += len(data)

    def _accept_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.connections += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.behaviour(conn, self.stop_event)
        except OSError:
            pass  # the client gave up: expected
        finally:
            conn.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self._thread.join(2)
        self._listener.close()
        with self.lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def _config(server: RawServer, **settings: object) -> FetchConfig:
    """The config for ``server``, with these ``Settings`` fields overridden."""
    base: dict[str, object] = {
        "fetch_connect_timeout": 1.0,
        "fetch_read_timeout": 10.0,  # far above TOTAL: only the total deadline can stop these
        "fetch_total_timeout": TOTAL,
        "fetch_max_bytes": MAX_BYTES,
        "fetch_retries": 3,
        "fetch_backoff_base": 0.01,
        "fetch_backoff_max": 0.05,
        "fetch_allow": [f"127.0.0.1:{server.port}"],
    }
    return fetch_config(**{**base, **settings})


def _fetch_error(server: RawServer, **settings: object) -> tuple[FetchError, float]:
    with Fetcher(_config(server, **settings)) as fetcher:
        started = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetcher.fetch(server.url)
        return info.value, time.monotonic() - started


# --------------------------------------------------------------------------- behaviours


def silent(server_ref: list[RawServer]) -> Behaviour:
    """Accepts, reads the request, and never sends a byte."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(30)

    return behaviour


def headers_then_stall(server_ref: list[RawServer]) -> Behaviour:
    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(
            conn, b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
        )
        stop.wait(30)

    return behaviour


def trickled_headers(server_ref: list[RawServer]) -> Behaviour:
    """Slow loris in reverse: a never-ending status line, one byte every 100 ms."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(conn, b"HTTP/1.1 200 OK\r\nX-Padding: ")
        while not stop.wait(0.1):
            server_ref[0].send(conn, b"a")

    return behaviour


def trickled_chunks(server_ref: list[RawServer]) -> Behaviour:
    """A chunked body of one-byte chunks, one every 100 ms, forever."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        while not stop.wait(0.1):
            server_ref[0].send(conn, b"1\r\nx\r\n")

    return behaviour


def endless_chunks(server_ref: list[RawServer], gzip: bool = False) -> Behaviour:
    """A chunked body (no Content-Length) that never ends, as fast as the socket takes it;
    with ``gzip`` an endless gzip stream of zeros, ~1000x smaller on the wire."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        encoding = b"Content-Encoding: gzip\r\n" if gzip else b""
        server_ref[0].send(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n"
            + encoding
            + b"\r\n",
        )
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b"\x00" * 65536
        while not stop.is_set():
            payload = (
                compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH) if gzip else block
            )
            server_ref[0].send(conn, b"%x\r\n%s\r\n" % (len(payload), payload))

    return behaviour


def huge_headers(server_ref: list[RawServer]) -> Behaviour:
    """Header lines forever: a client without a header-size cap buffers them all."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(conn, b"HTTP/1.1 200 OK\r\n")
        line = b"X-Junk: " + b"j" * 1000 + b"\r\n"
        while not stop.is_set():
            server_ref[0].send(conn, line * 64)

    return behaviour


Factory = Callable[..., Behaviour]  # (server_ref, **options) -> Behaviour


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    made: list[RawServer] = []

    def make(factory: Factory, **options: bool) -> RawServer:
        ref: list[RawServer] = []
        server = RawServer(factory(ref, **options)).__enter__()
        ref.append(server)
        made.append(server)
        return server

    yield make
    for server in made:
        server.__exit__(None, None, None)


# --------------------------------------------------------------------------- deadlines


def test_silent_peer_fails_within_the_total_deadline(raw_server: Callable[..., RawServer]) -> None:
    server = raw_server(silent)
    error, elapsed = _fetch_error(server)
    assert error.code == "timeout"
    assert elapsed < TOTAL + SLACK
    assert server.url in error.message


def test_headers_then_stall_fails_within_the_total_deadline(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(headers_then_stall)
    error, elapsed = _fetch_error(server)
    assert error.code == "timeout"
    assert elapsed < TOTAL + SLACK


def test_trickled_headers_fail_within_the_total_deadline(
    raw_server: Callable[..., RawServer],
) -> None:
    """Every read gets a byte inside the read timeout: only a total deadline stops it."""
    server = raw_server(trickled_headers)
    error, elapsed = _fetch_error(server, fetch_read_timeout=0.5)
    assert error.code == "timeout"
    assert elapsed < TOTAL + SLACK


def test_trickled_chunked_body_fails_within_the_total_deadline(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(trickled_chunks)
    error, elapsed = _fetch_error(server, fetch_read_timeout=0.5)
    assert error.code == "timeout"
    assert elapsed < TOTAL + SLACK


def test_silent_peer_deadline_covers_every_retry(raw_server: Callable[..., RawServer]) -> None:
    """Retries share one deadline: five attempts of a 1 s read timeout still end by it."""
    server = raw_server(silent)
    error, elapsed = _fetch_error(server, fetch_read_timeout=1.0, fetch_retries=5)
    assert error.code == "timeout"
    assert elapsed < TOTAL + SLACK
    assert server.connections <= 2


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
def test_endless_chunked_body_stops_at_max_bytes(
    raw_server: Callable[..., RawServer], gzip: bool
) -> None:
    server = raw_server(endless_chunks, gzip=gzip)
    error, elapsed = _fetch_error(server, fetch_total_timeout=10.0)
    assert error.code == "too_large"
    assert elapsed < 2.0
    assert server.connections == 1  # too large is final, not retried
    assert error.details["max_bytes"] == MAX_BYTES


def test_endless_headers_are_refused_quickly(raw_server: Callable[..., RawServer]) -> None:
    server = raw_server(huge_headers)
    error, elapsed = _fetch_error(server, fetch_total_timeout=5.0)
    assert error.code == "connection_error"  # h11 caps an incomplete head at 16 KiB
    assert elapsed < 2.0
    assert "Traceback" not in error.message


# --------------------------------------------------------------------------- Content-Length lies

DECLARED = 100
FLOOD = 10 * 1024 * 1024  # 40x MAX_BYTES: reading "until the peer stops" would blow the cap
SMUGGLED = b"smuggled"


def _read_head(conn: socket.socket) -> bool:
    """Reads one request head off a kept-alive connection; False once the client is gone."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        head += chunk
    return True


def under_declared_flood(server_ref: list[RawServer]) -> Behaviour:
    """Declares 100 bytes, then sends 10 MiB: only the declared bytes are the body."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % DECLARED,
        )
        block = b"z" * 65536
        for _ in range(FLOOD // len(block)):
            if stop.is_set():
                return
            server_ref[0].send(conn, block)
        stop.wait(30)

    return behaviour


def under_declared_smuggle(server_ref: list[RawServer]) -> Behaviour:
    """Declares 100 bytes and appends a complete second response in the same packet.

    The extra bytes land in the client's parser buffer, not the socket, so a pool that only
    asks "is the socket readable?" keeps the connection, and the next request on it is
    answered with the planted bytes (response splitting; RFC 9112 s6.3 says a client MUST
    NOT process such extra data as a separate response). Requests that do reach this
    server on a kept-alive connection are answered honestly, with the declared image.
    """
    body = b"a" * DECLARED
    honest = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % (
        len(body)
    )
    planted = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n%s" % (
        len(SMUGGLED),
        SMUGGLED,
    )

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(conn, honest + body + planted)
        while not stop.is_set() and _read_head(conn):
            server_ref[0].send(conn, honest + body)

    return behaviour


def content_lengths(*values: bytes, body: bytes = b"q" * 300) -> Factory:
    """Sends one Content-Length header per value (a comma inside a value is kept as is)."""

    def factory(server_ref: list[RawServer]) -> Behaviour:
        def behaviour(conn: socket.socket, stop: threading.Event) -> None:
            lines = b"".join(b"Content-Length: %s\r\n" % value for value in values)
            server_ref[0].send(
                conn, b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + lines + b"\r\n" + body
            )
            stop.wait(30)  # never closes: a client waiting for "the rest" hangs to its deadline

        return behaviour

    return factory


def _fetch_ok(server: RawServer, fetcher: Fetcher) -> tuple[bytes, float]:
    started = time.monotonic()
    data = fetcher.fetch(server.url).data
    return data, time.monotonic() - started


def test_under_declared_length_returns_only_the_declared_bytes(
    raw_server: Callable[..., RawServer],
) -> None:
    """Content-Length: 100 followed by 10 MiB: the body is the 100 declared bytes, read
    at once (no waiting for the flood to end), and the flooded connection is not reused."""
    server = raw_server(under_declared_flood)
    with Fetcher(_config(server)) as fetcher:
        for attempt in (1, 2):
            data, elapsed = _fetch_ok(server, fetcher)
            assert data == b"z" * DECLARED
            assert elapsed < 0.5
            assert server.connections == attempt  # the leftover flood is never parsed


def test_under_declared_length_cannot_answer_the_next_request(
    raw_server: Callable[..., RawServer],
) -> None:
    """Bytes past the declared length must never become the response to a later request."""
    server = raw_server(under_declared_smuggle)
    with Fetcher(_config(server)) as fetcher:
        first, _ = _fetch_ok(server, fetcher)
        second, elapsed = _fetch_ok(server, fetcher)
    assert first == b"a" * DECLARED
    assert second != SMUGGLED
    assert second == b"a" * DECLARED
    assert elapsed < 0.5
    assert server.connections == 2  # the tainted connection was dropped, not reused


@pytest.mark.parametrize(
    "values",
    [(b"100", b"200"), (b"100, 200",), (b"200", b"100")],
    ids=["two-headers", "one-header-two-values", "larger-first"],
)
def test_conflicting_content_lengths_fail_clearly(
    raw_server: Callable[..., RawServer], values: tuple[bytes, ...]
) -> None:
    """Two different lengths leave the body's end undefined: refused, never guessed."""
    server = raw_server(content_lengths(*values))
    error, elapsed = _fetch_error(server)
    assert error.code == "connection_error"
    assert "conflicting Content-Length" in error.message
    assert elapsed < TOTAL  # refused on the head, not by the deadline
    assert server.connections <= 4  # 1 + retries, each refused at once


def test_repeated_oversize_content_length_is_refused_before_the_body(
    raw_server: Callable[..., RawServer],
) -> None:
    """A length sent twice must still be seen as one (too large) value, not as an
    unparseable "N, N" that skips the early size check and waits for the body."""
    oversize = b"%d" % (FLOOD)
    server = raw_server(content_lengths(oversize, oversize, body=b""))
    error, elapsed = _fetch_error(server)
    assert error.code == "too_large"
    assert "declares 10 MiB" in error.message
    assert elapsed < 0.5
    assert server.connections == 1


def test_repeated_equal_content_length_is_one_length(
    raw_server: Callable[..., RawServer],
) -> None:
    """Identical duplicates are legal (RFC 9112 s6.3): the body is that many bytes."""
    server = raw_server(content_lengths(b"100", b"100"))
    with Fetcher(_config(server)) as fetcher:
        data, elapsed = _fetch_ok(server, fetcher)
    assert data == b"q" * 100
    assert elapsed < 0.5


def twice_gzipped(server_ref: list[RawServer]) -> Behaviour:
    """A body compressed twice, declared by two Content-Encoding headers."""
    once = zlib.compress(b"q" * 300, wbits=16 + zlib.MAX_WBITS)
    body = zlib.compress(once, wbits=16 + zlib.MAX_WBITS)

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Encoding: gzip\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        )
        stop.wait(30)

    return behaviour


def test_every_content_encoding_header_counts_not_only_the_first(
    raw_server: Callable[..., RawServer],
) -> None:
    """Two encodings in two headers are two encodings: refused as such, not decoded once
    and handed on as a still-compressed "image"."""
    server = raw_server(twice_gzipped)
    error, _ = _fetch_error(server)
    assert error.code == "unsupported_encoding"
    assert "gzip, gzip" in error.message


def honest_keep_alive(newline: bytes) -> Factory:
    """Answers every request on a connection with the same correctly framed image."""

    def factory(server_ref: list[RawServer]) -> Behaviour:
        body = b"i" * DECLARED
        head = newline.join(
            [b"HTTP/1.1 200 OK", b"Content-Type: image/png", b"Content-Length: %d" % len(body)]
        )
        response = head + newline + newline + body

        def behaviour(conn: socket.socket, stop: threading.Event) -> None:
            server_ref[0].send(conn, response)
            while not stop.is_set() and _read_head(conn):
                server_ref[0].send(conn, response)

        return behaviour

    return factory


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_exactly_framed_responses_keep_their_connection(
    raw_server: Callable[..., RawServer], newline: bytes
) -> None:
    """The leftover check must not cost keep-alive for honest Content-Length responses
    (h11 also accepts bare-LF heads, so the check must find the same head end)."""
    server = raw_server(honest_keep_alive(newline))
    with Fetcher(_config(server)) as fetcher:
        for _ in range(3):
            assert _fetch_ok(server, fetcher)[0] == b"i" * DECLARED
    assert server.connections == 1


def chunked_keep_alive(server_ref: list[RawServer]) -> Behaviour:
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nimag\r\n1\r\ne\r\n0\r\n\r\n"
    )

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(conn, response)
        while not stop.is_set() and _read_head(conn):
            server_ref[0].send(conn, response)

    return behaviour


def test_chunked_responses_are_read_but_their_connection_is_not_reused(
    raw_server: Callable[..., RawServer],
) -> None:
    """Documents the trade-off: chunk framing is not counted, so after a chunked body the
    leftover check cannot prove the buffer empty and the connection is replaced."""
    server = raw_server(chunked_keep_alive)
    with Fetcher(_config(server)) as fetcher:
        for _ in range(2):
            assert _fetch_ok(server, fetcher)[0] == b"image"
    assert server.connections == 2


# ---- idle keep-alive connections: what the pool must see before reusing one

HONEST = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n%s" % (
    DECLARED,
    b"h" * DECLARED,
)
IDLE = 0.3  # how long a test leaves the connection idle between two downloads


def planted_while_idle(server_ref: list[RawServer]) -> Behaviour:
    """Answers honestly, then, once the client has read its response and gone idle, sends
    a complete second response nobody asked for: it waits in the client's socket, where
    only a look at the socket (not the parser's buffer) can find it."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        server_ref[0].send(conn, HONEST)
        stop.wait(IDLE / 3)
        server_ref[0].send(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n%s"
            % (len(SMUGGLED), SMUGGLED),
        )
        while not stop.is_set() and _read_head(conn):
            server_ref[0].send(conn, HONEST)

    return behaviour


def hangs_up_while_idle(reset: bool) -> Factory:
    """Answers one request with keep-alive, then closes the idle connection: with a FIN, as
    a server whose keep-alive timeout ran out, or with a reset (RST)."""

    def factory(server_ref: list[RawServer]) -> Behaviour:
        def behaviour(conn: socket.socket, stop: threading.Event) -> None:
            server_ref[0].send(conn, HONEST)
            stop.wait(IDLE / 3)
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        return behaviour

    return factory


def test_a_response_planted_on_an_idle_connection_never_answers_the_next_request(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(planted_while_idle)
    with Fetcher(_config(server)) as fetcher:
        first = fetcher.fetch(server.url)
        time.sleep(IDLE)
        second = fetcher.fetch(server.url)
    assert first.data == second.data == b"h" * DECLARED
    assert second.attempts == 1
    assert server.connections == 2  # the connection holding the planted bytes was dropped


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_connection_the_server_closed_while_idle_is_replaced_not_retried(
    raw_server: Callable[..., RawServer], reset: bool
) -> None:
    server = raw_server(hangs_up_while_idle(reset))
    with Fetcher(_config(server)) as fetcher:
        fetcher.fetch(server.url)
        time.sleep(IDLE)
        second = fetcher.fetch(server.url)
    assert second.data == b"h" * DECLARED
    assert second.attempts == 1  # a fresh connection at once, not a failed attempt
    assert server.connections == 2
