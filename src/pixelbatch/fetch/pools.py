"""One httpcore connection pool per origin, the least recently used retired past a bound.

httpcore's pool walks all of its connections on every request and every response close,
and its idle-connection check is quadratic in them (``_assign_requests_to_connections``).
One pool shared by 32 download threads over many suppliers therefore spent ~8% of the
embedded API's CPU in that walk on the benchmark's main table. A pool per origin keeps at
most ``FETCH_PER_HOST`` idle connections, and the fetcher's per-host slots bound its
downloads to as many, so each walk is short, whatever the number of suppliers.
"""

from __future__ import annotations

import contextlib
import threading
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


class OriginPools:
    """``stream`` like a ``httpcore.ConnectionPool``; thread-safe.

    Pools of the ``keep`` most recently used origins stay open with their idle keep-alive
    connections; beyond that, the least recently used pool that no request is using is
    closed. A pool in use is never closed under its request, so a burst over more origins
    than ``keep`` briefly holds more pools, never a broken one.
    """

    def __init__(self, make_pool: Callable[[], httpcore.ConnectionPool], keep: int) -> None:
        self._make_pool = make_pool
        self._keep = max(1, keep)
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
                entry = self._entries[origin] = _Entry(self._make_pool())
            else:
                self._entries.move_to_end(origin)
            entry.users += 1
            retired = self._retire_surplus()
        for pool in retired:
            pool.close()  # outside the lock: closing sockets may take a moment
        return entry

    def _retire_surplus(self) -> list[httpcore.ConnectionPool]:
        """Unlink the least recently used unused pools beyond ``keep`` (lock held)."""
        surplus = len(self._entries) - self._keep
        retired: list[httpcore.ConnectionPool] = []
        if surplus <= 0:
            return retired
        for origin, entry in list(self._entries.items()):
            if len(retired) == surplus:
                break
            if entry.users == 0:
                del self._entries[origin]
                retired.append(entry.pool)
        return retired
