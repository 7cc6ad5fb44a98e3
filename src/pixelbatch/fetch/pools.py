"""One httpcore connection pool per origin, the least recently used retired past a bound.

httpcore's pool walks all of its connections on every request and every response close,
and its idle-connection check is quadratic in them (``_assign_requests_to_connections``).
One pool shared by 32 download threads over many suppliers therefore spent ~8% of the
embedded API's CPU in that walk on the benchmark's main table. A pool per origin keeps at
most ``FETCH_PER_HOST`` idle connections (and the fetcher's per-host slots bound a host's
downloads to as many), so each walk is short, whatever the number of suppliers.

httpcore closes a pool's expired connections only when that pool is used again, so a pool
unused for longer than its keep-alive expiry is closed whole: an origin never asked again
does not keep its sockets open (in CLOSE_WAIT once the server hangs up).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore

Origin = tuple[bytes, bytes, int | None]


@dataclass
class _Entry:
    pool: httpcore.ConnectionPool
    users: int = 0
    last_used: float = 0.0  # time.monotonic() when its last request ended


class OriginPools:
    """``stream`` like a ``httpcore.ConnectionPool``; thread-safe.

    Pools of the ``keep`` most recently used origins stay open with their idle keep-alive
    connections, for ``idle_expiry`` seconds after their last request; beyond either, a pool
    that no request is using is closed, the least recently used first. A pool in use is
    never closed under its request, so a burst over more origins than ``keep`` briefly holds
    more pools, never a broken one.
    """

    def __init__(
        self, make_pool: Callable[[], httpcore.ConnectionPool], keep: int, idle_expiry: float
    ) -> None:
        self._make_pool = make_pool
        self._keep = max(1, keep)
        self._idle_expiry = idle_expiry
        self._entries: OrderedDict[Origin, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def stream(self, method: str, url: httpcore.URL, **kwargs: Any) -> Iterator[httpcore.Response]:
        entry = self._check_out((url.scheme, url.host, url.port))
        try:
            with entry.pool.stream(method, url, **kwargs) as response:
                yield response
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.pool.close()

    def __len__(self) -> int:
        return len(self._entries)

    def _check_out(self, origin: Origin) -> _Entry:
        with self._lock:
            if self._closed:
                raise RuntimeError("the connection pools are closed")
            entry = self._entries.get(origin)
            if entry is None:
                entry = self._entries[origin] = _Entry(
                    self._make_pool(), last_used=time.monotonic()
                )
            else:
                self._entries.move_to_end(origin)
            entry.users += 1
            retired = self._retire_surplus()
        for pool in retired:
            pool.close()  # outside the lock: closing sockets may take a moment
        return entry

    def _retire_surplus(self) -> list[httpcore.ConnectionPool]:
        """Unlink the unused pools beyond ``keep`` or idle past ``idle_expiry``, least
        recently used first (lock held). The entries are in order of use, so the walk ends
        at the first pool that is neither surplus nor expired: usually the first."""
        surplus = len(self._entries) - self._keep
        expired_before = time.monotonic() - self._idle_expiry
        doomed: list[Origin] = []
        for origin, entry in self._entries.items():
            expired = entry.last_used < expired_before
            if len(doomed) >= surplus and not expired:
                break
            if entry.users == 0:
                doomed.append(origin)
        return [self._entries.pop(origin).pool for origin in doomed]
