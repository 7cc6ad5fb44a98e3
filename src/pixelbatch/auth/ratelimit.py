"""Per-key upload rate limits: a sliding 60-second window, in process or in Redis.

Both implementations keep the times of the requests they accepted and refuse a request when
``limit`` of them fall within the last ``window`` seconds. So ``limit + 1`` requests within
any 60 s are refused, wherever the minute boundaries fall. (A fixed window counted per
clock minute would let ``2 * limit`` through across a boundary and refuse or accept the
same burst depending on when it started.) Refused requests are not recorded: a client
that keeps retrying too early is not locked out longer than it needs to wait.

The embedded mode has one API process, so a dictionary is exact; API replicas share a
Redis sorted set, updated by one Lua script so that check and record are atomic.

Not the ``limits`` library (checked at 5.8.0): its moving window stamps each request with
the calling replica's ``time.time()``, so a replica whose clock runs fast lets ``limit + 1``
through within one window; this script reads Redis's own clock. Its memory store also runs
on the wall clock, which NTP or an administrator can step.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pixelbatch.errors import PixelbatchError

WINDOW = 60

Clock = Callable[[], float]


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


def _retry_after(wait: float, window: float) -> int:
    """Whole seconds until a slot frees, rounded up so that a client that waits exactly
    this long is let in; at least 1 (Retry-After: 0 invites a busy loop)."""
    return int(min(max(1, math.ceil(wait)), math.ceil(window)))


class MemoryRateLimiter:
    """Exact sliding window for one process.

    ``clock`` defaults to ``time.monotonic``: only differences matter here, and a monotonic
    clock cannot be moved by NTP or an administrator; tests pass a fake one.
    """

    def __init__(self, limit: int, window: float = WINDOW, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def hit(self, key: str) -> None:
        now = self._clock()
        horizon = now - self.window
        with self._lock:
            self._sweep(now, horizon)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= horizon:
                hits.popleft()
            if len(hits) < self.limit:
                hits.append(now)
                return
            wait = hits[0] + self.window - now if hits else self.window
        raise RateLimited(self.limit, _retry_after(wait, self.window))

    def _sweep(self, now: float, horizon: float) -> None:
        """Forget keys with no recent request, at most once a window, so memory follows
        the number of active keys rather than every key ever seen."""
        if now - self._last_sweep < self.window:
            return
        self._last_sweep = now
        for stale in [k for k, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[stale]


# KEYS[1]: sorted set of accepted requests (score = time in seconds).
# ARGV: now ("" = ask Redis), window, limit, a unique member for this request.
# Returns {1, "0"} when accepted, {0, "<seconds until a slot frees>"} when refused; the wait
# is a string because Redis truncates Lua numbers to integers in replies.
_SLIDING_WINDOW_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if oldest[2] then
  wait = tonumber(oldest[2]) + window - now
end
return {0, tostring(wait)}
"""


class RedisRateLimiter:
    """The same sliding window, shared by every API replica through one Redis.

    The prune, count and record run in one Lua script, so two replicas cannot both see
    ``limit - 1`` and both accept. By default the script reads Redis's own clock, so the
    replicas' clocks need not agree; ``clock`` lets tests supply the time instead.
    """

    def __init__(
        self, url: str, limit: int, window: float = WINDOW, clock: Clock | None = None
    ) -> None:
        import redis

        self.limit = limit
        self.window = window
        self._clock = clock
        self._redis = redis.Redis.from_url(url)
        self._script = self._redis.register_script(_SLIDING_WINDOW_LUA)

    @staticmethod
    def redis_key(key: str) -> str:
        return f"pixelbatch:ratelimit:{key}"

    def hit(self, key: str) -> None:
        now = "" if self._clock is None else repr(self._clock())
        accepted, wait = self._script(
            keys=[self.redis_key(key)],
            args=[now, repr(float(self.window)), self.limit, uuid.uuid4().hex],
        )
        if int(accepted) != 1:
            raise RateLimited(self.limit, _retry_after(float(wait), self.window))

    def close(self) -> None:
        self._redis.close()


def make_rate_limiter(limit: int, redis_url: str | None) -> RateLimiter:
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(redis_url, limit)
    return MemoryRateLimiter(limit)
