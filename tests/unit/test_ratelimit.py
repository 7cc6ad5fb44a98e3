"""Upload rate limits: the same sliding-window assertions for the in-process limiter and
for the Redis one (real Redis, db 12), with the clock under the test's control.

The bursts deliberately straddle a minute boundary: a limiter that counted per clock
minute would let them through, which is how the API integration test used to flake.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis

from pixelbatch.auth.ratelimit import (
    WINDOW,
    MemoryRateLimiter,
    RateLimited,
    RateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)

REDIS_URL = os.environ.get("PIXELBATCH_TEST_REDIS", "redis://127.0.0.1:6379") + "/12"

# 1_700_000_030 is 50 s past a minute boundary: ten seconds later a new clock minute starts.
MINUTE_PLUS_50 = 1_700_000_030.0
assert MINUTE_PLUS_50 % 60 == 50


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Factory = Callable[[int, FakeClock | None], RateLimiter]


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Builds limiters of one kind. Every Redis limiter is its own client, as separate API
    replicas would be."""
    created: list[RedisRateLimiter] = []

    def factory(limit: int, clock: FakeClock | None) -> RateLimiter:
        if request.param == "memory":
            if clock is None:
                return MemoryRateLimiter(limit)
            return MemoryRateLimiter(limit, clock=clock)
        limiter = RedisRateLimiter(REDIS_URL, limit, clock=clock)
        created.append(limiter)
        return limiter

    if request.param == "redis":
        request.getfixturevalue("redis_db")
    yield factory
    for limiter in created:
        limiter.close()


def _refused(limiter: RateLimiter, key: str) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        limiter.hit(key)
    return info.value


def test_fifth_request_in_the_window_is_refused_across_a_minute_boundary(make: Factory) -> None:
    clock = FakeClock(MINUTE_PLUS_50)
    limiter = make(4, clock)
    for offset in (0, 5, 10, 15):  # the clock minute changes between 5 and 10
        clock.now = MINUTE_PLUS_50 + offset
        limiter.hit("acme")

    clock.now = MINUTE_PLUS_50 + 20
    refused = _refused(limiter, "acme")
    # The oldest accepted request (t+0) leaves the window at t+60: 40 s from now.
    assert refused.retry_after == 40
    assert 1 <= refused.retry_after <= WINDOW
    assert refused.headers == {"Retry-After": "40"}
    assert refused.status_code == 429 and refused.code == "rate_limited"

    # Another key has its own window.
    for _ in range(4):
        limiter.hit("globex")
    _refused(limiter, "globex")

    # Still refused a moment before the oldest request ages out; Retry-After never says 0.
    clock.now = MINUTE_PLUS_50 + 59.9
    assert _refused(limiter, "acme").retry_after == 1
    # Allowed once it has; then full again until t+5 ages out.
    clock.now = MINUTE_PLUS_50 + 60
    limiter.hit("acme")
    assert _refused(limiter, "acme").retry_after == 5


@pytest.mark.parametrize("start", [0.0, 7.3, 29.9, 45.0, 59.5])
def test_limit_plus_one_within_any_60_seconds_is_refused(make: Factory, start: float) -> None:
    """Wherever the burst starts relative to the clock minute, N+1 in 59 s is one too many."""
    limit = 4
    clock = FakeClock(1_700_000_000.0 - 20 + start)  # ``start`` seconds past a minute
    limiter = make(limit, clock)
    for i in range(limit):
        clock.now += 59 / limit if i else 0
        limiter.hit("acme")
    clock.now += 59 / limit - 1e-3
    retry_after = _refused(limiter, "acme").retry_after
    assert 1 <= retry_after <= WINDOW


def test_waiting_retry_after_is_enough_and_refusals_do_not_extend_the_wait(
    make: Factory,
) -> None:
    clock = FakeClock(MINUTE_PLUS_50 + 0.25)
    limiter = make(2, clock)
    limiter.hit("acme")
    limiter.hit("acme")
    clock.now += 12.5
    wait = _refused(limiter, "acme").retry_after
    assert wait == 48  # 47.5 s left, rounded up so that waiting exactly this long works
    # A client hammering meanwhile is refused but not pushed further back.
    for _ in range(5):
        clock.now += 1
        _refused(limiter, "acme")
    clock.now = MINUTE_PLUS_50 + 0.25 + 12.5 + wait
    limiter.hit("acme")


def test_concurrent_requests_never_exceed_the_limit(make: Factory) -> None:
    """Check and record are one atomic step: 40 racing requests, exactly 7 accepted."""
    limiters = [make(7, None), make(7, None)]  # two replicas (Redis) or two handles (memory)
    if isinstance(limiters[0], MemoryRateLimiter):
        limiters = [limiters[0], limiters[0]]  # in process there is one shared limiter
    accepted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker(limiter: RateLimiter) -> None:
        barrier.wait()
        for _ in range(2):
            try:
                limiter.hit("acme")
            except RateLimited:
                continue
            with lock:
                accepted.append(1)

    threads = [threading.Thread(target=worker, args=(limiters[i % 2],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(accepted) == 7


def test_redis_replicas_share_one_window(redis_db: redis.Redis) -> None:
    """Two API replicas (two clients) with the same limit: the count is the sum of both."""
    clock = FakeClock(MINUTE_PLUS_50)
    a = RedisRateLimiter(REDIS_URL, 4, clock=clock)
    b = RedisRateLimiter(REDIS_URL, 4, clock=clock)
    try:
        for offset, replica in ((0, a), (5, b), (10, a), (15, b)):
            clock.now = MINUTE_PLUS_50 + offset
            replica.hit("acme")
        clock.now = MINUTE_PLUS_50 + 20
        assert _refused(a, "acme").retry_after == 40
        assert _refused(b, "acme").retry_after == 40
        b.hit("globex")
        clock.now = MINUTE_PLUS_50 + 60
        b.hit("acme")
        assert _refused(a, "acme").retry_after == 5
        # The key expires on its own: an idle key leaves nothing behind in Redis.
        ttl = redis_db.pttl(RedisRateLimiter.redis_key("acme"))
        assert 0 < ttl <= WINDOW * 1000
    finally:
        a.close()
        b.close()


def test_redis_default_clock_is_the_redis_server(redis_db: redis.Redis) -> None:
    """Without a clock the script reads Redis's TIME, so replicas' clocks need not agree."""
    a = RedisRateLimiter(REDIS_URL, 3)
    b = RedisRateLimiter(REDIS_URL, 3)
    try:
        a.hit("acme")
        b.hit("acme")
        a.hit("acme")
        refused = _refused(b, "acme")
        assert WINDOW - 5 <= refused.retry_after <= WINDOW
        server_now = float(redis_db.time()[0])
        raw = redis_db.zrange(a.redis_key("acme"), 0, -1, withscores=True)
        scores = [float(score) for _, score in cast(list[tuple[bytes, float]], raw)]
        assert len(scores) == 3
        assert all(abs(s - server_now) < 5 for s in scores)
    finally:
        a.close()
        b.close()


def test_memory_limiter_forgets_idle_keys() -> None:
    clock = FakeClock(MINUTE_PLUS_50)
    limiter = MemoryRateLimiter(2, clock=clock)
    for i in range(100):
        limiter.hit(f"key-{i}")
    clock.now += WINDOW + 1
    limiter.hit("fresh")
    assert set(limiter._hits) == {"fresh"}


def test_zero_limit_refuses_everything(make: Factory) -> None:
    limiter = make(0, FakeClock(MINUTE_PLUS_50))
    assert _refused(limiter, "acme").retry_after == WINDOW


def test_factory_picks_redis_only_for_a_redis_broker(redis_db: redis.Redis) -> None:
    assert isinstance(make_rate_limiter(3, None), MemoryRateLimiter)
    assert isinstance(make_rate_limiter(3, "amqp://guest@localhost//"), MemoryRateLimiter)
    limiter = make_rate_limiter(3, REDIS_URL)
    assert isinstance(limiter, RedisRateLimiter)
    limiter.close()
