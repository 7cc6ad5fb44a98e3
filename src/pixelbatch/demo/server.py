"""A tiny local HTTP server for images: the demo's stand-in for suppliers' servers, also
used by the tests and the benchmark. Binds 127.0.0.1 only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[BaseHTTPRequestHandler], None]


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (timeouts, caps) are expected, not worth a traceback."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class ImageServer:
    """Serves fixed routes (path → bytes) or custom handlers, with optional latency."""

    def __init__(self, latency: float = 0.0) -> None:
        self.routes: dict[str, Route | Handler] = {}
        self.latency = latency
        self.requests: list[str] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # As real web servers do: without it each body waits for the client's delayed
            # ACK of the header segment, some 40 ms per image on Linux.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append(path)
                if server.latency:
                    time.sleep(server.latency)
                route = server.routes.get(path)
                if route is None:
                    self._send(Route(b"not found", "text/plain", 404))
                elif isinstance(route, Route):
                    self._send(route)
                else:
                    route(self)

            do_POST = do_GET

            def _send(self, route: Route) -> None:
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(route.body)

        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def allow_entry(self) -> str:
        """The one ``host:port`` pair to put in ``PIXELBATCH_FETCH_ALLOW``."""
        return f"127.0.0.1:{self.port}"

    def add(self, path: str, route: Route | Handler) -> str:
        self.routes[path] = route
        return self.base_url + path

    def hits(self, path: str) -> int:
        with self._lock:
            return self.requests.count(path)

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
