"""The download stream's own socket calls, on real loopback TCP connections."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import httpcore
import pytest

from pixelbatch.fetch import network


@pytest.fixture
def connected() -> Iterator[tuple[network.DeadlineStream, socket.socket]]:
    """A DeadlineStream over a plain connection to 127.0.0.1, and the server's end."""
    listener = socket.create_server(("127.0.0.1", 0))
    stream = httpcore.SyncBackend().connect_tcp("127.0.0.1", listener.getsockname()[1], 1.0)
    server, _ = listener.accept()
    listener.close()
    yield network.DeadlineStream(stream), server
    stream.close()
    server.close()


def test_a_tiny_timeout_never_becomes_the_kernels_wait_forever() -> None:
    forever = struct.pack("ll", 0, 0)
    assert network._timeval(None) == forever
    assert network._timeval(1e-9) != forever
    assert struct.unpack("ll", network._timeval(2.5)) == (2, 500_000)


def test_a_silent_peer_times_out_at_the_read_timeout(
    connected: tuple[network.DeadlineStream, socket.socket],
) -> None:
    stream, _server = connected
    started = time.monotonic()
    with pytest.raises(httpcore.ReadTimeout):
        stream.read(1024, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 1.0


def test_bytes_written_and_read_pass_whole(
    connected: tuple[network.DeadlineStream, socket.socket],
) -> None:
    stream, server = connected
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one send
    stream.write(payload, timeout=2.0)
    received = b""
    server.settimeout(2.0)
    while len(received) < len(payload):
        received += server.recv(1 << 20)
    assert received == payload
    server.sendall(b"answer")
    assert stream.read(1024, timeout=1.0) == b"answer"


def test_an_idle_connection_reads_as_readable_once_the_peer_speaks_or_leaves(
    connected: tuple[network.DeadlineStream, socket.socket],
) -> None:
    stream, server = connected
    assert stream.get_extra_info("is_readable") is False
    server.sendall(b"unasked")
    time.sleep(0.05)
    assert stream.get_extra_info("is_readable") is True  # waiting in the socket
    assert stream.read(1024, timeout=1.0) == b"unasked"
    assert stream.get_extra_info("is_readable") is False
    server.close()
    time.sleep(0.05)
    assert stream.get_extra_info("is_readable") is True  # the peer's FIN


def test_a_closed_stream_reads_as_readable(
    connected: tuple[network.DeadlineStream, socket.socket],
) -> None:
    stream, _server = connected
    stream.close()
    assert stream.get_extra_info("is_readable") is True
