"""The suppliers' image server for the benchmark, run as its own process so its work does not
share a GIL with the measuring process. Binds 127.0.0.1 only.

GET /img/<name>[?n=...]  the corpus file, after ``latency`` seconds, paced to ``bandwidth``
                         bytes/s per connection (0 = unpaced)
GET /stats               {"requests": N, "bytes": N}
anything else            404 at once (the large-CSV case points its 100,000 URLs there)

Usage: python -m bench.imageserver DIR [--latency 0.05] [--bandwidth 0]; prints the port.
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


def make_server(directory: Path, latency: float, bandwidth: float) -> _Server:
    files = {
        p.name: (p.read_bytes(), TYPES.get(p.suffix, "application/octet-stream"))
        for p in directory.iterdir()
        if p.suffix in TYPES
    }
    stats = {"requests": 0, "bytes": 0, "not_found": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

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

    return _Server(("127.0.0.1", 0), Handler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--bandwidth", type=float, default=0.0, help="bytes/s per connection")
    args = parser.parse_args()
    server = make_server(args.directory, args.latency, args.bandwidth)
    print(server.server_address[1], flush=True)
    # Exit with the parent: when stdin closes (the parent died), stop serving.
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
