"""Unexpected exceptions and body-limit refusals, through a real uvicorn server: every answer
must be the JSON error body with all the security headers, and reveal nothing inside.

A route that raises cannot be added to a ``pixelbatch serve`` subprocess, so this runs the
app from ``create_app`` in a uvicorn server on a thread of the test process, with extra
routes that fail on purpose. The point is the whole middleware stack as deployed: Starlette
answers an ``exception_handler(Exception)`` from its outermost middleware, outside
``SecurityHeaders``, which a test calling the handler directly would never notice.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pixelbatch.api.app import create_app
from pixelbatch.api.middleware import SECURITY_HEADERS
from pixelbatch.settings import Settings
from tests import support

SECRET = "secret /etc/passwd SELECT"
LEAKS = ("secret", "/etc/passwd", "SELECT", "RuntimeError", "Traceback", 'File "', ".py")
LIMIT = 100_000  # PIXELBATCH_MAX_UPLOAD_BYTES of this server
EXPECTED_BODY = {"code": "internal_error", "message": "internal server error", "details": None}


def _boom() -> None:
    raise RuntimeError(SECRET)


async def _boom_async() -> None:
    raise RuntimeError(SECRET)


async def _boom_before_reading_body(request: Request) -> None:
    """Fails without reading its body: the 500 must close the connection like any answer
    sent before the body was read (see BodySizeLimit)."""
    raise RuntimeError(SECRET)


def _add_failing_routes(app: FastAPI) -> None:
    app.add_api_route("/test/boom", _boom, methods=["GET"])
    app.add_api_route("/test/boom-async", _boom_async, methods=["GET"])
    app.add_api_route("/test/boom-body", _boom_before_reading_body, methods=["POST"])


def _settings(data_dir: Path) -> Settings:
    """Explicit, so PIXELBATCH_* variables of the environment running the tests don't
    change what is under test."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=data_dir,
        host="127.0.0.1",
        auth="off",
        max_upload_bytes=LIMIT,
        broker_url=None,
        database_url=None,
        storage_url=None,
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = _settings(tmp_path_factory.mktemp("api-errors") / "data")
    app = create_app(settings, start_worker=False)
    _add_failing_routes(app)
    port = support.free_port()
    # log_config=None: leave logging alone, so uvicorn's own records reach caplog.
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS:
        got = response.headers.get_list(name.decode())
        assert got == [value.decode()], f"{response.status_code} {name.decode()}: {got}"


def _assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"leaks {leak!r}: {text[:500]}"


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("GET", "/test/boom", None),
        ("GET", "/test/boom-async", None),
        ("POST", "/test/boom-body", b"x" * 1000),
    ],
    ids=["sync", "async", "body-unread"],
)
def test_unexpected_exception_is_a_bare_500_with_security_headers(
    base_url: str,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    content: bytes | None,
) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        response = client.request(method, path, content=content)
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert response.json() == EXPECTED_BODY
        _assert_security_headers(response)
        _assert_no_leak(response.text)
        _assert_no_leak(str(response.headers))
        if content is not None:  # never drain a body the endpoint did not want
            assert response.headers["connection"] == "close"
        # Answered inside the app: the request timer saw the 500 under its route.
        metrics = client.get("/metrics").text
    assert f'method="{method}",route="{path}",status="500"' in metrics

    # Logged once, with its traceback, for the operator; the server did not log it again.
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].name == "pixelbatch.api.errors"
    assert path in records[0].getMessage()


def test_declared_oversize_body_is_413_with_security_headers(base_url: str) -> None:
    with socket.create_connection(("127.0.0.1", int(base_url.rsplit(":", 1)[1])), 5) as sock:
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 99999999999\r\n\r\n"
        )
        sock.settimeout(5)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 413")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    for name, value in SECURITY_HEADERS:
        assert [v for n, v in headers if n.lower() == name.decode()] == [value.decode()], name
    assert b'"code":"payload_too_large"' in body.replace(b" ", b"")


def test_streamed_oversize_upload_is_413_with_security_headers(base_url: str) -> None:
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        for _ in range(20):  # ~600 KB without a Content-Length, over the limit
            yield b"1,x,http://a.example/b.jpg\r\n" * 1000

    with httpx.Client(base_url=base_url, timeout=10) as client:
        response = client.post(
            "/api/upload",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    _assert_security_headers(response)


def test_handler_errors_keep_working(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The catch-all must not swallow the errors the app answers on purpose."""
    caplog.set_level(logging.ERROR)
    with httpx.Client(base_url=base_url, timeout=10) as client:
        missing = client.get("/api/status/0b6f2d7e-1c1f-4e8b-9a7e-3f1d2c3b4a5e")
        invalid = client.get("/api/batches?limit=0")
        nowhere = client.get("/no/such/route")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")
    for response in (missing, invalid, nowhere):
        _assert_security_headers(response)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class _BrokenMiddleware:
    """A middleware outside all of ours that fails: what only Starlette's own last-resort
    handler (ServerErrorMiddleware) can answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raise RuntimeError(SECRET)
        await self.app(scope, receive, send)


def test_last_resort_500_outside_our_middleware_has_security_headers(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path / "data"), start_worker=False)
    app.add_middleware(_BrokenMiddleware)  # added last: runs outermost

    async def call() -> httpx.Response:
        # Starlette re-raises after answering (for the server to log); take the answer.
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/healthz")

    response = asyncio.run(call())
    assert response.status_code == 500
    assert response.json() == EXPECTED_BODY
    _assert_security_headers(response)
    _assert_no_leak(response.text)
