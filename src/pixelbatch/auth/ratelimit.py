"""Per-key upload rate limits: fixed one-minute windows, in process or in Redis.

The embedded mode has one API process, so a dictionary is exact; API replicas share a
Redis counter so the limit holds across them.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from pixelbatch.errors import PixelbatchError

WINDOW = 60


class RateLimited(PixelbatchError):
    code = "rate_limited"
    status_code = 429

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"too many uploads: the limit is {limit} per minute; retry in {retry_after} s",
            details={"limit": limit, "retry_after": retry_after},
        )
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class RateLimiter(Protocol):
    def hit(self, key: str) -> None:
        """Count one request; raise ``RateLimited`` if over the limit."""
        ...


def _retry_after(now: float) -> int:
    return max(1, int(WINDOW - now % WINDOW) + 1)


class MemoryRateLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        now = time.time()
        window = int(now // WINDOW)
        with self._lock:
            for stale in [k for k in self._counts if k[1] < window]:
                del self._counts[stale]
            count = self._counts.get((key, window), 0) + 1
            self._counts[(key, window)] = count
        if count > self.limit:
            raise RateLimited(self.limit, _retry_after(now))


class RedisRateLimiter:
    def __init__(self, url: str, limit: int) -> None:
        import redis

        self.limit = limit
        self._redis = redis.Redis.from_url(url)

    def hit(self, key: str) -> None:
        now = time.time()
        name = f"pixelbatch:ratelimit:{key}:{int(now // WINDOW)}"
        with self._redis.pipeline() as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW * 2)
            count = int(pipe.execute()[0])
        if count > self.limit:
            raise RateLimited(self.limit, _retry_after(now))


def make_rate_limiter(limit: int, redis_url: str | None) -> RateLimiter:
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(redis_url, limit)
    return MemoryRateLimiter(limit)
