from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from pixelbatch.demo.server import ImageServer, Route
from tests import support

WEBHOOK_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXBpeGVsYmF0Y2gtdGVzdHM="


class Flaky:
    """Answers 500 the first time, then the image."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.calls = 0

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        self.calls += 1
        status, body = (500, b"oops") if self.calls == 1 else (200, self.body)
        handler.send_response(status)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def slow(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(6)
    handler.send_response(200)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


@pytest.fixture
def canary() -> Iterator[ImageServer]:
    """A server that must never be reached: not on the allowlist."""
    server = ImageServer()
    server.add("/secret", Route(b"internal", "text/plain"))
    with server:
        yield server


@pytest.fixture
def images(canary: ImageServer) -> Iterator[ImageServer]:
    server = ImageServer()
    q90 = support.jpeg((800, 600), quality=90)
    server.add("/q90.jpg", Route(q90, "image/jpeg"))
    server.add("/alpha.png", Route(support.png_with_alpha(), "image/png"))
    server.add("/cmyk.jpg", Route(support.cmyk_jpeg(), "image/jpeg"))
    server.add("/rotated.jpg", Route(support.rotated_jpeg(), "image/jpeg"))
    server.add("/photo.webp", Route(support.webp(), "image/webp"))
    server.add("/truncated.jpg", Route(q90[: len(q90) // 2], "image/jpeg"))
    server.add("/page.jpg", Route(b"<!doctype html><html><body>Sorry</body></html>", "image/jpeg"))
    server.add("/flaky.jpg", Flaky(support.jpeg((400, 300), quality=85, seed=5)))
    server.add("/slow.jpg", slow)
    server.add(
        "/to-blocked.jpg",
        Route(b"", "text/plain", 302, {"Location": canary.base_url + "/secret"}),
    )
    with server:
        yield server


@pytest.fixture
def sink_server() -> Iterator[tuple[ImageServer, support.WebhookSink]]:
    server = ImageServer()
    sink = support.WebhookSink(fail_first=1)
    server.add("/hook", sink)
    with server:
        yield server, sink


@pytest.fixture
def server_env(
    images: ImageServer, sink_server: tuple[ImageServer, support.WebhookSink]
) -> dict[str, str]:
    hook_server, _ = sink_server
    return {
        "PIXELBATCH_FETCH_ALLOW": f"{images.allow_entry},{hook_server.allow_entry}",
        "PIXELBATCH_FETCH_READ_TIMEOUT": "1",
        "PIXELBATCH_FETCH_TOTAL_TIMEOUT": "3",
        "PIXELBATCH_FETCH_RETRIES": "1",
        "PIXELBATCH_FETCH_BACKOFF_BASE": "0.05",
        "PIXELBATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PIXELBATCH_WEBHOOK_BACKOFF_BASE": "0.2",
        "PIXELBATCH_LEASE_SECONDS": "3",
    }


@pytest.fixture
def server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[support.ServerProcess]:
    proc = support.ServerProcess(tmp_path / "data", server_env).start()
    try:
        yield proc
    finally:
        proc.stop()
