"""The suppliers' image server for the benchmark, run as its own process so its work does not
share a GIL with the measuring process. Binds 127.0.0.1 only.

GET /img/<name>[?n=...]  the corpus file, after ``latency`` seconds, paced to ``bandwidth``
                         bytes/s per connection (0 = unpaced)
GET /stats               {"requests": N, "bytes": N}
anything else            404 at once (the large-CSV case points its 100,000 URLs there)

Usage: python -m bench.imageserver DIR [--latency 0.05] [--bandwidth 0] [--hosts 4]; prints
the port. ``--hosts N`` serves the same files on 127.0.0.1 .. 127.0.0.N (one port): N
suppliers, as a catalog's URLs come from several, so that the per-host politeness limit
(``FETCH_PER_HOST``) is not what a measurement of pixelbatch's own speed runs into.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
CHUNK = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early are expected


def make_servers(directory: Path, latency: float, bandwidth: float, hosts: int) -> list[_Server]:
    """One server per loopback address, all on the first one's port, sharing files and stats."""
    files = {
        p.name: (p.read_bytes(), TYPES.get(p.suffix, "application/octet-stream"))
        for p in directory.iterdir()
        if p.suffix in TYPES
    }
    stats = {"requests": 0, "bytes": 0, "not_found": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as real web servers set it: with Nagle on, the body waited for the
        # client's delayed ACK of the header segment, 40 ms on every request.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _reply(self, status: int, body: bytes, ctype: str, paced: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not paced or bandwidth <= 0:
                self.wfile.write(body)
                return
            start = time.monotonic()
            for offset in range(0, len(body), CHUNK):
                self.wfile.write(body[offset : offset + CHUNK])
                ahead = (offset + CHUNK) / bandwidth - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/stats":
                with lock:
                    body = json.dumps(stats).encode()
                self._reply(200, body, "application/json", False)
                return
            entry = files.get(path[5:]) if path.startswith("/img/") else None
            if entry is None:
                with lock:
                    stats["not_found"] += 1
                self._reply(404, b"not found", "text/plain", False)
                return
            if latency > 0:
                time.sleep(latency)
            with lock:
                stats["requests"] += 1
                stats["bytes"] += len(entry[0])
            self._reply(200, entry[0], entry[1], True)

    first = _Server(("127.0.0.1", 0), Handler)
    port = first.server_address[1]
    return [first] + [_Server((f"127.0.0.{n}", port), Handler) for n in range(2, hosts + 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--bandwidth", type=float, default=0.0, help="bytes/s per connection")
    parser.add_argument("--hosts", type=int, default=1, help="serve on 127.0.0.1 .. 127.0.0.N")
    args = parser.parse_args()
    servers = make_servers(args.directory, args.latency, args.bandwidth, args.hosts)
    print(servers[0].server_address[1], flush=True)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    # Exit with the parent: when stdin closes (the parent died), stop serving.
    threading.Thread(
        target=lambda: (sys.stdin.read(), [server.shutdown() for server in servers]), daemon=True
    ).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
