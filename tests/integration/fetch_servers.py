"""Local HTTP servers (127.0.0.1 only) that misbehave on purpose, for the fetcher tests."""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import selectors
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pixelbatch.fetch import FetchConfig
from pixelbatch.settings import Settings

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8

Handler = Callable[["_Handler"], None]


def fetch_config(**settings: Any) -> FetchConfig:
    """The config production builds, from ``Settings`` with these fields overridden."""
    return FetchConfig.from_settings(Settings(**settings))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: TestServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner.lock:
            self.owner.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, caps) reset the connection: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _dispatch(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with owner.lock:
            owner.hits[path] += 1
            owner.bodies.append((path, body))
            owner.headers.append(dict(self.headers.items()))
        route = owner.routes.get(path)
        if route is None:
            prefix = next((p for p in owner.prefix_routes if path.startswith(p)), None)
            route = owner.prefix_routes.get(prefix) if prefix else None
        try:
            if route is None:
                self.reply(404, b"not found", "text/plain")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = _dispatch
    do_POST = _dispatch

    def reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        extra = headers or {}
        if "Content-Length" not in extra:
            self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class TestServer:
    """A ThreadingHTTPServer on 127.0.0.1:<ephemeral> counting connections and hits."""

    __test__ = False  # not a pytest test class

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.hits: Counter[str] = Counter()
        self.bodies: list[tuple[str, bytes]] = []
        self.headers: list[dict[str, str]] = []
        self.routes: dict[str, Handler] = {}
        self.prefix_routes: dict[str, Handler] = {}
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        self.scheme = "http"
        if tls is not None:
            self.scheme = "https"
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def allow_entry(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> TestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---- route handlers


def image(h: _Handler) -> None:
    h.reply(200, IMAGE, "image/png")


def status(code: int, headers: dict[str, str] | None = None) -> Handler:
    def handler(h: _Handler) -> None:
        h.reply(code, f"status {code}".encode(), "text/plain", headers)

    return handler


def sequence(*handlers: Handler) -> Handler:
    """Answers with each handler in turn, then repeats the last one."""
    calls = [0]
    lock = threading.Lock()

    def handler(h: _Handler) -> None:
        with lock:
            index = min(calls[0], len(handlers) - 1)
            calls[0] += 1
        handlers[index](h)

    return handler


def redirect(location: str, code: int = 302) -> Handler:
    return status(code, {"Location": location})


def redirect_chain(h: _Handler) -> None:
    """/chain/<n> redirects to /chain/<n-1>; /chain/0 is the image."""
    n = int(h.path.rsplit("/", 1)[1])
    if n == 0:
        image(h)
    else:
        redirect(f"/chain/{n - 1}")(h)


def sleep_then(seconds: float, then: Handler) -> Handler:
    def handler(h: _Handler) -> None:
        time.sleep(seconds)
        then(h)

    return handler


def drip(interval: float, size: int = 100) -> Handler:
    def handler(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(size))
        h.end_headers()
        h.wfile.flush()
        for _ in range(size):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(interval)

    return handler


def declared_length(length: int) -> Handler:
    def handler(h: _Handler) -> None:
        h.reply(200, b"x" * 16, "image/png", {"Content-Length": str(length)})
        h.close_connection = True

    return handler


def unframed(size: int) -> Handler:
    """No Content-Length: the body runs until the connection closes."""

    def handler(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        chunk = b"y" * 65536
        sent = 0
        while sent < size:
            h.wfile.write(chunk)
            sent += len(chunk)

    return handler


@functools.lru_cache(maxsize=8)
def _compress(payload: bytes) -> bytes:
    return gzip.compress(payload)


def gzipped(payload: bytes) -> Handler:
    body = _compress(payload)

    def handler(h: _Handler) -> None:
        h.reply(200, body, "image/png", {"Content-Encoding": "gzip"})

    return handler


class InFlight:
    """Records the most requests handled at once (for the per-host limit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.current = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, h: _Handler) -> None:
        with self.lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        time.sleep(self.seconds)
        with self.lock:
            self.current -= 1
        image(h)


# ---- connection-counting canary


class ConnectionCanary:
    """A TCP listener that must never be reached, counting connections at ``accept()``.

    An HTTP server counts requests, and a hit counter misses a client that connects and
    then fails (or is refused) before sending a request line; but reaching the socket at
    all is already the SSRF. So this counts TCP connections, on 127.0.0.1 and, when the
    machine has IPv6 loopback, on [::1] with the same port, so spellings that resolve to
    either family land here. Each connection is answered ``200 secret`` and closed, so a
    regression also shows up as a fetch that succeeds.
    """

    __test__ = False  # not a pytest test class

    BODY = b"secret"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = 0
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._listeners = self._bind()
        self.port: int = self._listeners[0].getsockname()[1]
        self.ipv6 = len(self._listeners) == 2
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @staticmethod
    def _bind() -> list[socket.socket]:
        """127.0.0.1:<p> plus [::1]:<p>; retries when <p> is taken on the IPv6 side."""
        for _ in range(20):
            v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            v4.bind(("127.0.0.1", 0))
            port = v4.getsockname()[1]
            v6: socket.socket | None = None
            try:
                v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                v6.bind(("::1", port))
            except OSError as exc:
                if v6 is not None:
                    v6.close()
                if exc.errno == errno.EADDRINUSE:
                    v4.close()
                    continue
                v6 = None  # no IPv6 loopback here: IPv4 only
            listeners = [v4] if v6 is None else [v4, v6]
            for listener in listeners:
                listener.listen(16)
                listener.setblocking(False)
            return listeners
        raise RuntimeError("no port free on both 127.0.0.1 and [::1]")

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener in self._listeners:
                selector.register(listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.02):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    try:
                        conn, peer = ready.accept()
                    except (BlockingIOError, OSError):
                        continue
                    with self.lock:
                        self.connections += 1
                        self.peers.append(str(peer[0]))
                    self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.setblocking(True)
            conn.settimeout(1)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY)
            )

    def start(self) -> ConnectionCanary:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for listener in self._listeners:
            listener.close()
