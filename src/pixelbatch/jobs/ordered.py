"""Priority inside one embedded process: its download threads and its transform slots serve
the highest-priority image waiting first.

Leasing by priority (``db.fair_share``) is not enough on its own in the embedded mode: the
runner keeps about twice as many images leased as it has download threads, and each thread
holds its image until the transform pool took it. A high-priority image leased a moment
after a large batch's would otherwise queue behind all of those, first for a thread, then
for a core. Within a level the order stays first come, first served (the claim already
shared the slots fairly between tenants and batches).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

_Task = tuple[int, int, Callable[[], object] | None]


class PriorityExecutor:
    """``workers`` threads running submitted calls, the highest ``level`` first."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[_Task] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, level: int, call: Callable[[], object]) -> None:
        self._queue.put((-level, next(self._seq), call))

    def _loop(self) -> None:
        while True:
            _, _, call = self._queue.get()
            if call is None:
                return
            try:
                call()
            except Exception:  # the caller's own handling failed: keep the thread
                log.exception("a queued call failed")

    def shutdown(self) -> None:
        """Drop the calls not started, let the running ones finish, stop the threads."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            # After every real call still queued by a racing submit: level below any.
            self._queue.put((1 << 30, next(self._seq), None))
        for thread in self._threads:
            thread.join()


class PriorityGate:
    """At most ``slots`` calls at a time; a freed slot goes to the highest waiting level,
    first come first served within it.

    A freed slot is handed to that one waiter directly (its own event), not announced to
    all: with 32 download threads queued for 2 transform slots, waking every waiter at
    each release to let one through took a tenth of the API process's CPU."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, threading.Event]] = []  # a heap: best first
        self._seq = itertools.count()

    def run(self, level: int, call: Callable[[], T]) -> T:
        granted: threading.Event | None = None
        with self._lock:
            if self._free > 0:
                self._free -= 1  # a free slot means nobody waits: a release hands over
            else:
                granted = threading.Event()
                heapq.heappush(self._waiting, (-level, next(self._seq), granted))
        if granted is not None:
            granted.wait()
        try:
            return call()
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if self._waiting:
                heapq.heappop(self._waiting)[2].set()  # the slot passes on, still taken
            else:
                self._free += 1
