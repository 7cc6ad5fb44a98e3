"""The HTTP API against hostile clients, through a real ``pixelbatch serve`` subprocess:
unbounded chunked uploads, multipart bodies with thousands of parts, and a battery of
malformed requests that must all get a 4xx JSON answer with the security headers and no
internals (traceback, SQL, paths) in it."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelbatch.api.middleware import SECURITY_HEADERS
from tests import support

LIMIT = 1_000_000  # PIXELBATCH_MAX_UPLOAD_BYTES for these servers
# Spelled out rather than derived from SECURITY_HEADERS, so that dropping or weakening one
# there fails here; test_expected_headers_are_all_the_security_headers keeps the two equal.
EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-site",
}
LEAKS = ("Traceback", 'File "/', "sqlalchemy", "SELECT ", "site-packages")
CSV_HEAD = b"S. No.,Product Name,Input Image Urls\r\n"
# Refused at connect time by the address policy: nothing ever leaves the machine.
LOCAL_URL = "http://127.0.0.1:9/a.jpg"


def _start(
    tmp_path_factory: pytest.TempPathFactory, name: str, **env: str
) -> Iterator[support.ServerProcess]:
    root = tmp_path_factory.mktemp(name)
    proc = support.ServerProcess(
        root / "data",
        {"PIXELBATCH_MAX_UPLOAD_BYTES": str(LIMIT), "PIXELBATCH_FETCH_RETRIES": "0", **env},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()
        log = proc.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.ServerProcess]:
    yield from _start(tmp_path_factory, "open", PIXELBATCH_AUTH="off")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.ServerProcess]:
    yield from _start(tmp_path_factory, "auth", PIXELBATCH_AUTH="on")


def test_expected_headers_are_all_the_security_headers() -> None:
    """Every assertion below checks EXPECTED_HEADERS: it must not be a subset of what the
    server is meant to send (a header added to SECURITY_HEADERS gets checked here too)."""
    sent = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
    assert sent == EXPECTED_HEADERS


def _assert_hardened(response: httpx.Response, data_dir: Path) -> None:
    where = f"{response.request.method} {response.request.url} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get_list(name) == [value], f"{where}: {name}"
    text = response.text
    for leak in (*LEAKS, str(data_dir)):
        assert leak not in text, f"{where} leaks {leak!r}: {text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict)
        assert set(body) >= {"code", "message"} or "status" in body, f"{where}: {body}"


def _assert_healthy(server: support.ServerProcess) -> None:
    assert server.proc is not None and server.proc.poll() is None
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        good = CSV_HEAD + f"1,Mug,{LOCAL_URL}\r\n".encode()
        response = client.post("/api/upload", files={"file": ("ok.csv", good, "text/csv")})
        assert response.status_code == 202, response.text


def _multipart(parts: list[bytes], boundary: bytes = b"b") -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


FILE_PART = (
    b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\n" + CSV_HEAD + f"1,Mug,{LOCAL_URL}".encode()
)


def _read_response_head(
    sock: socket.socket, buffered: bytes = b""
) -> tuple[int, dict[str, list[str]], bytes]:
    data = buffered
    sock.setblocking(True)
    sock.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = int(headers.get("content-length", ["0"])[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest


# --------------------------------------------------------------------------- body caps


def test_endless_chunked_upload_is_refused_while_it_streams(
    open_server: support.ServerProcess,
) -> None:
    """A body with no Content-Length that never ends: a server that buffered before
    checking would never answer. It must answer 413 after about LIMIT bytes and close."""
    sock = socket.create_connection(("127.0.0.1", open_server.port), timeout=5)
    try:
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        first = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        first += CSV_HEAD
        sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        rows = b"1,x,http://a.example/b.jpg\r\n" * 2000
        chunk = b"%x\r\n%s\r\n" % (len(rows), rows)
        sock.setblocking(False)
        sent, received = 0, b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                received = sock.recv(65536)
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
        assert received, f"no answer after {sent} bytes"
        status, headers, body = _read_response_head(sock, received)
    finally:
        sock.close()
    assert status == 413
    assert json.loads(body)["code"] == "payload_too_large"
    assert headers["connection"] == ["close"]  # never drain an endless body
    for name, value in EXPECTED_HEADERS.items():
        assert headers[name] == [value]
    # Socket buffers hold a few MiB; an unbounded reader would have taken everything.
    assert sent < 40 * LIMIT
    _assert_healthy(open_server)


def test_chunked_upload_from_a_generator_is_413(open_server: support.ServerProcess) -> None:
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        yield CSV_HEAD
        for _ in range(200):  # ~11 MB, over the limit
            yield b"1,x,http://a.example/b.jpg\r\n" * 2000

    with open_server.client() as client:
        response = client.post(
            "/api/upload",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert response.json()["details"]["limit"] >= LIMIT  # the CSV cap + multipart framing
        _assert_hardened(response, open_server.data_dir)
        assert client.get("/api/batches").json()["total"] >= 0
    _assert_healthy(open_server)


def test_declared_oversize_is_413_before_any_body(open_server: support.ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", open_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 99999999999\r\n\r\n"
        )
        status, headers, body = _read_response_head(sock)
    assert status == 413
    assert json.loads(body)["code"] == "payload_too_large"
    for name, value in EXPECTED_HEADERS.items():
        assert headers[name] == [value], name  # exactly once


def test_endpoint_ignoring_its_body_closes_instead_of_draining(
    open_server: support.ServerProcess,
) -> None:
    """An endless chunked body to an endpoint that never reads it: the server answers and
    closes, rather than reading (and discarding) the body for as long as it is sent."""
    sock = socket.create_connection(("127.0.0.1", open_server.port), timeout=5)
    try:
        sock.sendall(
            f"POST /api/batches/{uuid.uuid4()}/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        block = b"x" * 65536
        chunk = b"%x\r\n%s\r\n" % (len(block), block)
        sock.setblocking(False)
        sent, answered, closed = 0, b"", False
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    closed = True
                    break
                if not data:
                    closed = True
                    break
                answered += data
            elif writable:
                try:
                    sent += sock.send(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
    finally:
        sock.close()
    assert closed, f"server kept reading: {sent} bytes sent in 3 s"
    assert sent < 64 * 1024 * 1024
    if answered:
        assert answered.startswith(b"HTTP/1.1 404")
        assert b"connection: close" in answered.lower()
    _assert_healthy(open_server)


# --------------------------------------------------------------------------- many parts


@pytest.mark.parametrize(
    "kind",
    ["fields", "files", "urlencoded"],
)
def test_thousands_of_parts_are_a_4xx(open_server: support.ServerProcess, kind: str) -> None:
    if kind == "urlencoded":
        body = b"&".join(b"f=%d" % i for i in range(5000))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    else:
        if kind == "fields":
            part = b'Content-Disposition: form-data; name="f"\r\n\r\nv'
        else:
            part = b'Content-Disposition: form-data; name="f"; filename="x"\r\n\r\nv'
        body, headers = _multipart([part] * 5000 + [FILE_PART])
    assert len(body) < LIMIT
    with open_server.client() as client:
        started = time.monotonic()
        response = client.post("/api/upload", content=body, headers=headers)
        assert time.monotonic() - started < 5
        assert 400 <= response.status_code < 500, response.text
        _assert_hardened(response, open_server.data_dir)
        assert "fields" in response.json()["message"] or "files" in response.json()["message"]
        assert response.status_code != 400 or response.json()["code"] == "bad_request"
    _assert_healthy(open_server)


# --------------------------------------------------------------------------- battery


def _raw(content: bytes, content_type: str) -> dict[str, object]:
    return {"content": content, "headers": {"Content-Type": content_type}}


WEIRD: list[tuple[str, str, dict[str, object]]] = [
    ("GET", "/healthz", {}),
    ("GET", "/metrics", {}),
    ("GET", "/readyz", {}),
    ("GET", "/api/batches", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/no/such/route", {}),
    ("DELETE", "/api/upload", {}),
    ("GET", "/api/status/not-a-uuid", {}),
    ("GET", "/api/status/%00", {}),
    ("GET", f"/api/status/{uuid.uuid4()}", {}),
    ("GET", "/api/status/00000000-0000-0000-0000-00000000000g", {}),
    ("GET", "/api/status/" + "1" * 5000, {}),
    ("GET", "/api/batches?offset=-1", {}),
    ("GET", "/api/batches?limit=0", {}),
    ("GET", "/api/batches?limit=" + "9" * 4000, {}),
    ("GET", "/api/batches?offset=1e309", {}),
    ("GET", "/api/batches?status=bogus", {}),
    ("GET", "/api/batches?status=%00", {}),
    ("GET", "/api/batches?junk=" + "a" * 8000, {}),
    ("GET", f"/api/batches/{uuid.uuid4()}/images?offset=-5&status=NOPE", {}),
    ("GET", f"/api/batches/{uuid.uuid4()}/images?limit=100000", {}),
    ("GET", f"/api/batches/{uuid.uuid4()}/output.csv", {}),
    ("POST", f"/api/batches/{uuid.uuid4()}/cancel", {}),
    ("POST", f"/api/batches/{uuid.uuid4()}/retry", {}),
    ("POST", "/api/batches/../../cancel", {}),
    ("GET", "/files/..%2f..%2fetc%2fpasswd", {}),
    ("GET", "/files/%2e%2e/%2e%2e/pixelbatch.db", {}),
    ("GET", "/files/pixelbatch.db", {}),
    ("GET", "/files/uploads", {}),
    ("GET", "/files/%2fetc%2fpasswd", {}),
    ("GET", "/files/a%00b.jpg", {}),
    ("GET", "/files/%ff%fe%fd", {}),
    ("GET", "/files/..\\..\\etc\\passwd", {}),
    ("GET", "/files/" + "a/" * 3000, {}),
    ("GET", "/files/x.jpg?expires=-1&sig=%00", {}),
    ("POST", "/api/upload", {}),
    ("POST", "/api/upload", _raw(b'{"file": 1}', "application/json")),
    ("POST", "/api/upload", _raw(b"{not json", "application/json")),
    ("POST", "/api/upload", _raw(b"x", "multipart/form-data")),
    ("POST", "/api/upload", _raw(b"x", "multipart/form-data; boundary=zz")),
    ("POST", "/api/upload", _raw(b"\x00\xff", "text/csv")),
    ("POST", "/api/upload", _raw(b"file=abc", "application/x-www-form-urlencoded")),
    ("POST", "/api/upload", {"files": {"file": ("a.csv", b"\xff\xfe\x00garbage", "text/csv")}}),
    ("POST", "/api/upload", {"files": {"file": ("../../etc/passwd", CSV_HEAD, "text/csv")}}),
    (
        "POST",
        "/api/upload",
        {
            "files": {"file": ("a.csv", b"x", "text/csv")},
            "data": {
                "quality": "-1",
                "relative_quality": "nan",
                "output_format": "bmp",
                "max_width": "99999999999999999999",
                "keep_metadata": "maybe",
            },
        },
    ),
    (
        "POST",
        "/api/upload",
        {
            "files": {"file": ("a.csv", CSV_HEAD + b"1,x,http://a/b.jpg\r\n", "text/csv")},
            "data": {"webhook_url": "file:///etc/passwd"},
        },
    ),
    (
        "POST",
        "/api/upload",
        {"files": {"file": ("a.csv", b"x", "text/csv")}, "headers": {"Idempotency-Key": "k" * 300}},
    ),
]


def test_weird_requests_get_hardened_answers(open_server: support.ServerProcess) -> None:
    statuses = set()
    with open_server.client() as client:
        for method, path, kwargs in WEIRD:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            _assert_hardened(response, open_server.data_dir)
            statuses.add(response.status_code)
    assert {200, 400, 404, 405, 422} <= statuses
    _assert_healthy(open_server)


def test_unauthenticated_requests_are_401_and_hardened(
    auth_server: support.ServerProcess,
) -> None:
    with auth_server.client() as client:
        for method, path, kwargs in [
            ("GET", "/api/batches", {}),
            ("GET", f"/api/status/{uuid.uuid4()}", {}),
            ("GET", f"/api/status/{uuid.uuid4()}", {"headers": {"Authorization": "Bearer x"}}),
            ("GET", "/api/batches", {"headers": {"Authorization": "Bearer pb_" + "A" * 5000}}),
            ("GET", "/api/batches", {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}}),
            ("GET", "/api/batches", {"headers": {"X-API-Key": "'; DROP TABLE batches; --"}}),
            ("POST", "/api/upload", {"files": {"file": ("a.csv", CSV_HEAD, "text/csv")}}),
        ]:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 401, f"{method} {path}: {response.text}"
            _assert_hardened(response, auth_server.data_dir)
        for method, path, _ in WEIRD:
            if "content" in _ or "files" in _:
                continue
            response = client.request(method, path)
            _assert_hardened(response, auth_server.data_dir)
