"""The safe downloader against real local servers on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixelbatch.errors import FetchError
from pixelbatch.fetch import FetchConfig, Fetcher, network
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from tests.integration import fetch_servers as fs

MAX_BYTES = 64 * 1024
LARGE = os.urandom(3 << 20)  # a large photo's worth of bytes


@pytest.fixture
def canary() -> Iterator[fs.TestServer]:
    """A server that must never be reached: it is not on the allowlist."""
    server = fs.TestServer()
    server.routes["/secret"] = fs.status(200)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def origin(canary: fs.TestServer) -> Iterator[fs.TestServer]:
    server = fs.TestServer()
    r = server.routes
    r["/image.png"] = fs.image
    r["/404"] = fs.status(404)
    r["/flaky"] = fs.sequence(fs.status(500), fs.image)
    r["/throttled"] = fs.sequence(fs.status(429, {"Retry-After": "0"}), fs.image)
    r["/down"] = fs.status(503)
    r["/slow"] = fs.sleep_then(1.0, fs.image)
    r["/drip"] = fs.drip(0.5)
    r["/declared-too-large"] = fs.declared_length(MAX_BYTES + 1)
    r["/unframed-too-large"] = fs.unframed(4 * MAX_BYTES)
    r["/gzip-bomb"] = fs.gzipped(b"\0" * (200 * MAX_BYTES))
    r["/gzip-ok"] = fs.gzipped(fs.IMAGE)
    r["/to-canary"] = fs.redirect(canary.url("/secret"))
    r["/to-metadata"] = fs.redirect("http://169.254.169.254/latest/meta-data/")
    r["/to-relative"] = fs.redirect("image.png", 301)
    r["/to-ftp"] = fs.redirect("ftp://example.com/x")
    r["/hook"] = fs.status(201)
    r["/hook-moved"] = fs.redirect("/hook", 307)
    r["/large"] = lambda h: h.reply(200, LARGE, "image/jpeg")
    server.prefix_routes["/chain/"] = fs.redirect_chain
    server.start()
    yield server
    server.stop()


Factory = Callable[..., Fetcher]


@pytest.fixture
def make_fetcher(origin: fs.TestServer) -> Iterator[Factory]:
    made: list[Fetcher] = []
    base: dict[str, Any] = {
        "fetch_connect_timeout": 1.0,
        "fetch_read_timeout": 1.0,
        "fetch_total_timeout": 5.0,
        "fetch_max_bytes": MAX_BYTES,
        "fetch_max_redirects": 5,
        "fetch_retries": 2,
        "fetch_backoff_base": 0.01,
        "fetch_backoff_max": 0.05,
        "fetch_per_host": 4,
        "user_agent": "pixelbatch-test",
        "fetch_allow": [origin.allow_entry],
    }

    def make(**settings: Any) -> Fetcher:
        """A fetcher on the base settings above, with these ``Settings`` fields overridden."""
        fetcher = Fetcher(fs.fetch_config(**{**base, **settings}))
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


@pytest.fixture
def fetcher(make_fetcher: Factory) -> Fetcher:
    return make_fetcher()


def fetch_error(fetcher: Fetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url)
    assert "Traceback" not in info.value.message
    return info.value


# ---- success paths


def test_fetches_image(fetcher: Fetcher, origin: fs.TestServer) -> None:
    result = fetcher.fetch(origin.url("/image.png"))
    assert result.data == fs.IMAGE
    assert result.content_type == "image/png"
    assert result.final_url == origin.url("/image.png")
    assert result.attempts == 1
    assert result.elapsed < 2
    assert origin.headers[-1]["User-Agent"] == "pixelbatch-test"


def test_connections_are_reused(fetcher: Fetcher, origin: fs.TestServer) -> None:
    for _ in range(3):
        fetcher.fetch(origin.url("/image.png"))
    assert origin.connections == 1


def test_a_large_body_is_read_in_growing_reads_and_its_connection_is_still_reused(
    make_fetcher: Factory, origin: fs.TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = network.DeadlineStream.read

    def counted(
        stream: network.DeadlineStream, max_bytes: int, timeout: float | None = None
    ) -> bytes:
        data = real(stream, max_bytes, timeout)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(network.DeadlineStream, "read", counted)
    fetcher = make_fetcher(fetch_max_bytes=8 << 20)

    assert fetcher.fetch(origin.url("/large")).data == LARGE
    # httpcore asks for 64 KiB a read: at least 48 of them for 3 MiB.
    assert len(sizes) < len(LARGE) // (64 * 1024)
    assert max(sizes) > 64 * 1024
    # Every byte was counted: the connection is clean and serves the next download.
    assert fetcher.fetch(origin.url("/image.png")).data == fs.IMAGE
    assert origin.connections == 1


def test_gzip_body_is_decoded(fetcher: Fetcher, origin: fs.TestServer) -> None:
    assert fetcher.fetch(origin.url("/gzip-ok")).data == fs.IMAGE


def test_relative_redirect_is_followed(fetcher: Fetcher, origin: fs.TestServer) -> None:
    result = fetcher.fetch(origin.url("/to-relative"))
    assert result.data == fs.IMAGE
    assert result.final_url == origin.url("/image.png")


def test_five_redirects_are_fine(fetcher: Fetcher, origin: fs.TestServer) -> None:
    result = fetcher.fetch(origin.url("/chain/5"))
    assert result.final_url == origin.url("/chain/0")


# ---- HTTP errors and retries


def test_404_is_not_retried(fetcher: Fetcher, origin: fs.TestServer) -> None:
    error = fetch_error(fetcher, origin.url("/404"))
    assert error.code == "http_404"
    assert error.message == f"HTTP 404 Not Found from {origin.url('/404')}"
    assert origin.hits["/404"] == 1


def test_500_then_200_is_retried(fetcher: Fetcher, origin: fs.TestServer) -> None:
    result = fetcher.fetch(origin.url("/flaky"))
    assert result.data == fs.IMAGE
    assert result.attempts == 2
    assert origin.hits["/flaky"] == 2


def test_429_honours_retry_after(fetcher: Fetcher, origin: fs.TestServer) -> None:
    result = fetcher.fetch(origin.url("/throttled"))
    assert result.attempts == 2
    assert origin.hits["/throttled"] == 2


def test_503_fails_after_all_retries(make_fetcher: Factory, origin: fs.TestServer) -> None:
    error = fetch_error(make_fetcher(fetch_retries=2), origin.url("/down"))
    assert error.code == "http_503"
    assert "HTTP 503" in error.message and origin.url("/down") in error.message
    assert error.details["attempts"] == 3
    assert origin.hits["/down"] == 3


# ---- timeouts


def test_slow_server_times_out_quickly(make_fetcher: Factory, origin: fs.TestServer) -> None:
    fetcher = make_fetcher(fetch_read_timeout=0.3, fetch_retries=1)
    started = time.monotonic()
    error = fetch_error(fetcher, origin.url("/slow"))
    assert error.code == "timeout"
    assert origin.url("/slow") in error.message
    assert time.monotonic() - started < 1.5
    assert origin.hits["/slow"] == 2  # a timeout is retried


def test_drip_feed_hits_total_deadline(make_fetcher: Factory, origin: fs.TestServer) -> None:
    fetcher = make_fetcher(fetch_read_timeout=1.0, fetch_total_timeout=1.5)
    started = time.monotonic()
    error = fetch_error(fetcher, origin.url("/drip"))
    elapsed = time.monotonic() - started
    assert error.code == "timeout"
    assert "within 1.5s" in error.message
    assert 1.4 < elapsed < 2.5
    assert origin.hits["/drip"] == 1  # no retry once the deadline has passed


# ---- size caps


def test_declared_content_length_too_large(fetcher: Fetcher, origin: fs.TestServer) -> None:
    error = fetch_error(fetcher, origin.url("/declared-too-large"))
    assert error.code == "too_large"
    assert origin.hits["/declared-too-large"] == 1


def test_unframed_body_is_capped(fetcher: Fetcher, origin: fs.TestServer) -> None:
    assert fetch_error(fetcher, origin.url("/unframed-too-large")).code == "too_large"


def test_gzip_bomb_is_capped(fetcher: Fetcher, origin: fs.TestServer) -> None:
    assert len(fs._compress(b"\0" * (200 * MAX_BYTES))) < MAX_BYTES
    error = fetch_error(fetcher, origin.url("/gzip-bomb"))
    assert error.code == "too_large"
    assert origin.hits["/gzip-bomb"] == 1


# ---- redirects and the SSRF guard


def test_too_many_redirects(fetcher: Fetcher, origin: fs.TestServer) -> None:
    error = fetch_error(fetcher, origin.url("/chain/6"))
    assert error.code == "too_many_redirects"
    assert origin.hits["/chain/1"] == 1 and origin.hits["/chain/0"] == 0


def test_redirect_to_non_http_is_refused(fetcher: Fetcher, origin: fs.TestServer) -> None:
    assert fetch_error(fetcher, origin.url("/to-ftp")).code == "invalid_redirect"


def test_redirect_to_unlisted_local_server_is_blocked(
    fetcher: Fetcher, origin: fs.TestServer, canary: fs.TestServer
) -> None:
    error = fetch_error(fetcher, origin.url("/to-canary"))
    assert error.code == "blocked_address"
    assert "loopback" in error.message and canary.url("/secret") in error.message
    assert origin.hits["/to-canary"] == 1  # blocked is never retried
    assert canary.connections == 0 and not canary.hits


def test_direct_url_to_unlisted_port_is_blocked(fetcher: Fetcher, canary: fs.TestServer) -> None:
    error = fetch_error(fetcher, canary.url("/secret"))
    assert error.code == "blocked_address"
    assert canary.connections == 0
    # The message names the URL, then the setting that would allow it, as one can paste it.
    assert error.message == (
        f"Refused to connect to 127.0.0.1 (loopback address) for {canary.url('/secret')};"
        f" set PIXELBATCH_FETCH_ALLOW=127.0.0.1:{canary.port} to allow it"
    )
    assert error.details["allow"] == f"127.0.0.1:{canary.port}"


def _stays_on_this_machine(host: str) -> bool:
    """Loopback and the unspecified address (which Linux routes to loopback) only."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


@pytest.fixture
def connect_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Records every TCP connect attempt in this process as ``(ip, port)``.

    Only connections that stay on this machine are really made; any other is refused on
    the spot. A guard regression therefore shows up as a recorded attempt (and a failed
    test), never as a packet to the internet or to a real cloud metadata service. It
    patches ``socket.socket.connect`` itself, below whatever httpcore uses to connect.
    """
    calls: list[tuple[str, int]] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def record(sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        host, port = str(address[0]), int(address[1])
        calls.append((host, port))
        return _stays_on_this_machine(host)

    def connect(sock: socket.socket, address: Any) -> None:
        if not record(sock, address):
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by the test's connect spy")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not record(sock, address):
            return errno.ECONNREFUSED
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return calls


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://2852039166/",  # 169.254.169.254 spelled as one number
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/",
    ],
)
def test_metadata_and_private_are_blocked_without_connecting(
    fetcher: Fetcher, connect_spy: list[tuple[str, int]], url: str
) -> None:
    started = time.monotonic()
    error = fetch_error(fetcher, url)
    assert error.code == "blocked_address"
    assert connect_spy == []
    assert time.monotonic() - started < 0.5


def test_redirect_to_metadata_is_blocked(
    fetcher: Fetcher, origin: fs.TestServer, connect_spy: list[tuple[str, int]]
) -> None:
    error = fetch_error(fetcher, origin.url("/to-metadata"))
    assert error.code == "blocked_address"
    assert connect_spy == [("127.0.0.1", origin.port)]


def test_public_address_on_unlisted_port_is_blocked(
    fetcher: Fetcher, connect_spy: list[tuple[str, int]]
) -> None:
    """Refused before connecting; were it not, the spy refuses too: no internet traffic."""
    error = fetch_error(fetcher, "http://93.184.216.34:8080/")
    assert error.code == "blocked_port"
    assert error.message.endswith("; set PIXELBATCH_FETCH_ALLOW=93.184.216.34:8080 to allow it")
    assert connect_spy == []


# ---- every spelling of "this machine", straight and via redirect


@pytest.fixture
def tcp_canary() -> Iterator[fs.ConnectionCanary]:
    """Listens on 127.0.0.1 and [::1] (same port), counting TCP connections at accept."""
    canary = fs.ConnectionCanary().start()
    yield canary
    canary.stop()


# (url, the allowlist entry that would admit it, where it connects, reachable locally)
SPELLINGS = [
    pytest.param("http://2130706433:{port}/secret", "127.0.0.1", "127.0.0.1", id="decimal"),
    pytest.param("http://0x7f.1:{port}/", "127.0.0.1", "127.0.0.1", id="hex-short"),
    pytest.param("http://0177.0.0.1:{port}/", "127.0.0.1", "127.0.0.1", id="octal"),
    pytest.param("http://127.1:{port}/", "127.0.0.1", "127.0.0.1", id="short"),
    pytest.param("http://0:{port}/", "0.0.0.0", "0.0.0.0", id="zero"),
    pytest.param("http://[::1]:{port}/", "[::1]", "::1", id="v6-loopback"),
    pytest.param(
        "http://[::ffff:127.0.0.1]:{port}/", "[::ffff:127.0.0.1]", "::ffff:127.0.0.1", id="mapped"
    ),
    pytest.param(
        "http://[64:ff9b::7f00:1]:{port}/", "[64:ff9b::7f00:1]", "64:ff9b::7f00:1", id="nat64"
    ),
    pytest.param("http://localhost:{port}/", "localhost", None, id="localhost"),
]


@pytest.mark.parametrize(("url", "entry", "connects_to"), SPELLINGS)
def test_spelling_of_this_machine_is_blocked(
    fetcher: Fetcher,
    tcp_canary: fs.ConnectionCanary,
    connect_spy: list[tuple[str, int]],
    url: str,
    entry: str,
    connects_to: str | None,
) -> None:
    """Numeric, short, IPv6 and NAT64 spellings of loopback on a port that is not the
    allowlisted one: refused before any socket is opened."""
    target = url.format(port=tcp_canary.port)
    error = fetch_error(fetcher, target)
    assert error.code == "blocked_address", error.message
    assert error.details["attempts"] == 1  # blocked is final
    assert tcp_canary.connections == 0
    assert connect_spy == []


@pytest.mark.parametrize(("url", "entry", "connects_to"), SPELLINGS)
def test_redirect_to_spelling_of_this_machine_is_blocked(
    fetcher: Fetcher,
    origin: fs.TestServer,
    tcp_canary: fs.ConnectionCanary,
    connect_spy: list[tuple[str, int]],
    url: str,
    entry: str,
    connects_to: str | None,
) -> None:
    """The allowlisted image server answers 302 to each spelling: the hop is re-checked."""
    target = url.format(port=tcp_canary.port)
    origin.routes["/to-spelling"] = fs.redirect(target)
    error = fetch_error(fetcher, origin.url("/to-spelling"))
    assert error.code == "blocked_address", error.message
    assert error.details["requested_url"] == origin.url("/to-spelling")
    assert origin.hits["/to-spelling"] == 1
    assert tcp_canary.connections == 0
    assert connect_spy == [("127.0.0.1", origin.port)]  # the image server, nothing else


@pytest.mark.parametrize(("url", "entry", "connects_to"), SPELLINGS)
def test_canary_sees_each_spelling_once_allowlisted(
    make_fetcher: Factory,
    tcp_canary: fs.ConnectionCanary,
    connect_spy: list[tuple[str, int]],
    url: str,
    entry: str,
    connects_to: str | None,
) -> None:
    """Control for the two tests above: with the spelling allowlisted, the very same URL
    does reach the canary (or, for NAT64, which leaves the machine, the connect spy), so
    "0 connections" there means blocked, not "pointed somewhere the canary can't see"."""
    if connects_to is not None and ":" in connects_to and not tcp_canary.ipv6:
        pytest.skip("no IPv6 loopback on this machine")
    target = url.format(port=tcp_canary.port)
    fetcher = make_fetcher(fetch_allow=[f"{entry}:{tcp_canary.port}"], fetch_retries=0)
    if connects_to is not None and not _stays_on_this_machine(connects_to):
        assert fetch_error(fetcher, target).code == "connection_error"
        assert connect_spy == [(connects_to, tcp_canary.port)]
        assert tcp_canary.connections == 0
        return
    assert fetcher.fetch(target).data == fs.ConnectionCanary.BODY
    assert tcp_canary.connections == 1
    assert [host for host, _ in connect_spy] == [connects_to or "127.0.0.1"]


# ---- ports


def test_allowed_ports_setting_reaches_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connect_spy: list[tuple[str, int]]
) -> None:
    """PIXELBATCH_FETCH_ALLOWED_PORTS -> Settings -> Runtime.fetcher (the production path)
    -> AddressPolicy: 8443 passes the guard and gets as far as connect() (refused by the
    spy, so nothing leaves the machine); 8080 is still refused before connecting."""
    for name in list(os.environ):
        if name.startswith("PIXELBATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIXELBATCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIXELBATCH_FETCH_ALLOWED_PORTS", "80, 443,8443")
    monkeypatch.setenv("PIXELBATCH_FETCH_RETRIES", "0")
    runtime = Runtime(Settings())
    try:
        fetcher = runtime.fetcher
        assert fetcher.policy.allowed_ports == {80, 443, 8443}
        error = fetch_error(fetcher, "http://93.184.216.34:8443/a.png")
        assert error.code == "connection_error"  # past the guard: the spy refused it
        assert connect_spy == [("93.184.216.34", 8443)]
        error = fetch_error(fetcher, "http://93.184.216.34:8080/a.png")
        assert error.code == "blocked_port"
        assert "only ports 80, 443, 8443 are allowed" in error.message
        assert connect_spy == [("93.184.216.34", 8443)]  # no attempt on 8080
    finally:
        runtime.close()


def _localhost_addresses() -> set[str]:
    return {
        str(info[4][0]) for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    }


def test_localhost_blocked_without_allow_entry(
    make_fetcher: Factory, origin: fs.TestServer
) -> None:
    fetcher = make_fetcher(fetch_allow=[])
    error = fetch_error(fetcher, f"http://localhost:{origin.port}/image.png")
    assert error.code == "blocked_address"
    assert origin.connections == 0


def test_localhost_allowed_by_host_entry(make_fetcher: Factory, origin: fs.TestServer) -> None:
    fetcher = make_fetcher(fetch_allow=[f"localhost:{origin.port}"])
    assert fetcher.fetch(f"http://localhost:{origin.port}/image.png").data == fs.IMAGE


def test_localhost_and_ip_entry(make_fetcher: Factory, origin: fs.TestServer) -> None:
    """An IP entry allows a name only if EVERY address the name resolves to is allowed."""
    fetcher = make_fetcher(fetch_allow=[f"127.0.0.1:{origin.port}"])
    url = f"http://localhost:{origin.port}/image.png"
    if _localhost_addresses() == {"127.0.0.1"}:
        assert fetcher.fetch(url).data == fs.IMAGE
    else:  # localhost also resolves to ::1, which is not on the allowlist
        assert fetch_error(fetcher, url).code == "blocked_address"
        assert origin.connections == 0


def test_host_entry_does_not_open_other_ports(
    make_fetcher: Factory, origin: fs.TestServer, canary: fs.TestServer
) -> None:
    fetcher = make_fetcher(fetch_allow=[f"localhost:{origin.port}"])
    assert fetch_error(fetcher, f"http://localhost:{canary.port}/secret").code == "blocked_address"
    assert canary.connections == 0


def test_name_resolved_once_and_every_address_checked(
    make_fetcher: Factory, origin: fs.TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the checked addresses are the ones connected to, with no second lookup."""
    real = socket.getaddrinfo
    lookups: list[str] = []
    answers = {
        "images.test": ["127.0.0.1"],
        "mixed.test": ["127.0.0.1", "10.0.0.7"],
    }

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    fetcher = make_fetcher(fetch_allow=[origin.allow_entry])
    assert fetcher.fetch(f"http://images.test:{origin.port}/image.png").data == fs.IMAGE
    assert lookups == ["images.test"]
    error = fetch_error(fetcher, f"http://mixed.test:{origin.port}/image.png")
    assert error.code == "blocked_address" and "10.0.0.7" in error.message


def test_unknown_host_is_a_dns_error(fetcher: Fetcher, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[Any] = []

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:  # no real DNS traffic in tests
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    error = fetch_error(fetcher, "http://does-not-exist.invalid/a.png")
    assert error.code == "dns_error"
    assert "does-not-exist.invalid" in error.message
    assert lookups == ["does-not-exist.invalid"]  # a permanent DNS failure is not retried


def test_invalid_url_is_a_fetch_error(fetcher: Fetcher) -> None:
    assert fetch_error(fetcher, "file:///etc/passwd").code == "invalid_url"


# ---- concurrency


def test_per_host_concurrency_is_bounded(make_fetcher: Factory, origin: fs.TestServer) -> None:
    tracker = fs.InFlight(0.15)
    origin.routes["/tracked"] = tracker
    fetcher = make_fetcher(fetch_per_host=2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fetcher.fetch(origin.url("/tracked"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert tracker.peak == 2


# ---- TLS


@pytest.fixture
def tls_origin(tmp_path: Path) -> Iterator[tuple[fs.TestServer, Path, list[str | None]]]:
    """An HTTPS server whose self-signed certificate names ``localhost`` only."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    server = fs.TestServer(tls=context)
    server.routes["/image.png"] = fs.image
    server.start()
    yield server, cert, server_names
    server.stop()


def test_tls_verifies_the_url_host_name_not_the_ip(
    tls_origin: tuple[fs.TestServer, Path, list[str | None]],
    make_fetcher: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, cert, server_names = tls_origin
    trusting = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(httpx, "create_ssl_context", lambda **_: trusting)
    fetcher = make_fetcher(fetch_allow=[f"localhost:{server.port}", server.allow_entry])
    # Connected to the checked IP, yet SNI and verification use the URL's host name.
    result = fetcher.fetch(f"https://localhost:{server.port}/image.png")
    assert result.data == fs.IMAGE
    assert server_names == ["localhost"]
    # The certificate does not name 127.0.0.1: verification must fail for that URL.
    error = fetch_error(fetcher, f"https://127.0.0.1:{server.port}/image.png")
    assert error.code == "tls_error"
    assert "certificate" in error.message.lower()
    assert error.details["attempts"] == 1  # a bad certificate is not retried


# ---- post (webhooks)


def test_post_returns_status(fetcher: Fetcher, origin: fs.TestServer) -> None:
    status = fetcher.post(
        origin.url("/hook"), b'{"ok": true}', {"content-type": "application/json"}, timeout=2
    )
    assert status == 201
    assert origin.bodies[-1] == ("/hook", b'{"ok": true}')
    assert origin.headers[-1]["content-type"] == "application/json"


def test_post_does_not_follow_redirects(fetcher: Fetcher, origin: fs.TestServer) -> None:
    assert fetcher.post(origin.url("/hook-moved"), b"{}", {}, timeout=2) == 307
    assert origin.hits["/hook"] == 0


def test_post_is_guarded(fetcher: Fetcher, canary: fs.TestServer) -> None:
    with pytest.raises(FetchError) as info:
        fetcher.post(canary.url("/secret"), b"{}", {}, timeout=2)
    assert info.value.code == "blocked_address"
    assert canary.connections == 0


def test_post_times_out(fetcher: Fetcher, origin: fs.TestServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher.post(origin.url("/slow"), b"{}", {}, timeout=0.3)
    assert info.value.code == "timeout"
    assert time.monotonic() - started < 1


def test_config_from_settings() -> None:
    settings = Settings(fetch_allow=["127.0.0.1:9"], fetch_retries=1, user_agent="ua")
    config = FetchConfig.from_settings(settings)
    assert config.allow == ["127.0.0.1:9"]
    assert config.retries == 1
    assert config.user_agent == "ua"
    assert config.allowed_ports == [80, 443]
