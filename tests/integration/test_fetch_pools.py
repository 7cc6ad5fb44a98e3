"""A connection pool per origin: kept for the origins used last while not idle too long,
never closed under a request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpcore
import pytest

from pixelbatch.fetch import Fetcher
from pixelbatch.fetch.pools import OriginPools
from tests.integration import fetch_servers as fs


@pytest.fixture
def origins() -> Iterator[list[fs.TestServer]]:
    """Three origins (127.0.0.1 on three ports), each serving /image.png."""
    servers = [fs.TestServer() for _ in range(3)]
    for server in servers:
        server.routes["/image.png"] = fs.image
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_the_least_recently_used_origin_loses_its_connections_past_the_bound(
    origins: list[fs.TestServer],
) -> None:
    a, b, c = origins
    config = fs.fetch_config(
        fetch_allow=[s.allow_entry for s in origins], fetch_concurrency=2, fetch_retries=0
    )
    with Fetcher(config) as fetcher:
        for server in (a, b, a, c):  # c is the third origin: b was used least recently
            assert fetcher.fetch(server.url("/image.png")).data == fs.IMAGE
        for server in (a, b):
            fetcher.fetch(server.url("/image.png"))
    assert a.connections == 1  # kept alive all along
    assert b.connections == 2  # its pool was retired, so it connected again
    assert c.connections == 1


class _RecordingPool(httpcore.ConnectionPool):
    """A real pool that notes when it is closed."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def _recording_pools(keep: int, idle_expiry: float) -> tuple[OriginPools, list[_RecordingPool]]:
    """Pools of real connection pools, and the list of those made, in order."""
    made: list[_RecordingPool] = []

    def make_pool() -> httpcore.ConnectionPool:
        made.append(_RecordingPool())
        return made[-1]

    return OriginPools(make_pool, keep=keep, idle_expiry=idle_expiry), made


def _get(pools: OriginPools, server: fs.TestServer) -> None:
    with pools.stream("GET", httpcore.URL(server.url("/image.png"))) as response:
        assert response.read() == fs.IMAGE


def test_a_pool_with_a_request_in_flight_is_not_closed_under_it(
    origins: list[fs.TestServer],
) -> None:
    a, b, c = origins
    pools, made = _recording_pools(keep=1, idle_expiry=600)
    try:
        with pools.stream("GET", httpcore.URL(a.url("/image.png"))) as response:
            # Another origin past the bound of one: a's pool is in use, so it stays.
            with pools.stream("GET", httpcore.URL(b.url("/image.png"))) as other:
                assert b"".join(other.iter_stream()) == fs.IMAGE
            assert not made[0].closed
            assert b"".join(response.iter_stream()) == fs.IMAGE
        assert len(pools) == 2  # both unused now, one over the bound until the next request
        _get(pools, c)
        assert [pool.closed for pool in made] == [True, True, False]
        assert len(pools) == 1
    finally:
        pools.close()
    assert made[2].closed
    with pytest.raises(RuntimeError, match="closed"), pools.stream("GET", httpcore.URL(a.url("/"))):
        pass


def test_a_pool_idle_past_its_keep_alive_expiry_is_closed(origins: list[fs.TestServer]) -> None:
    """httpcore expires a pool's connections only when that pool is used again: an origin
    never asked again must not keep its sockets open."""
    a, b, _ = origins
    pools, made = _recording_pools(keep=10, idle_expiry=0.2)
    try:
        _get(pools, a)
        _get(pools, b)
        assert not made[0].closed  # used a moment ago
        time.sleep(0.4)
        _get(pools, b)
        assert made[0].closed  # a: idle past the expiry
        assert not made[1].closed  # b: in use when the walk ran
        assert len(pools) == 1
    finally:
        pools.close()
