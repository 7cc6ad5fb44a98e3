"""Keep the leases of in-flight images (and of a batch being finalised) alive while they
are worked on.

A lease is short (``LEASE_SECONDS``, 10 s by default) so that a dead worker's images come
back within seconds; a live worker renews the leases it holds every third of the lease from
a background thread, however long a download or transform takes, and retries every second
while the database does not answer. Recording stays a conditional UPDATE on the lease
owner, so even a lease lost during a long outage is never recorded twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from pixelbatch.db import images
from pixelbatch.db.engine import reading, transaction
from pixelbatch.runtime import Runtime

log = logging.getLogger(__name__)

# How old the keeper's answer to "is this image still wanted?" may be. A cancel is seen by
# in-flight images within this long (they stop at their next stage boundary); anything that
# slips through is caught by the recording, which removes what it stored.
WANTED_FRESHNESS = 0.5


class LeaseKeeper:
    def __init__(self, runtime: Runtime, owner: str) -> None:
        self.runtime = runtime
        self.owner = owner
        self._ids: set[int] = set()
        # Held images found cancelled, deleted or taken over by the last check.
        self._lost: set[int] = set()
        self._checked_at = float("-inf")
        self._check_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._loop, name="pixelbatch-leases", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def hold(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._ids.update(ids)

    def release(self, image_id: int) -> None:
        with self._lock:
            self._ids.discard(image_id)
            self._lost.discard(image_id)

    def wanted(self, image_id: int) -> bool:
        """Whether a held image is still wanted: its batch not cancelled or deleted, its lease
        not taken over. Asked by every image at each stage boundary, so it is answered for
        all held images at once, by one query at most every ``WANTED_FRESHNESS`` seconds:
        one query per image per boundary cost small images more CPU than their transform."""
        if time.monotonic() - self._checked_at >= WANTED_FRESHNESS:
            self._check()
        with self._lock:
            return image_id not in self._lost

    def check_now(self) -> None:
        """Ask the database now, not when the last answer is stale: a batch of this
        process's was just cancelled or deleted, and none of its images may start another
        download after the request that stopped it returns."""
        self._check(force=True)

    def _check(self, force: bool = False) -> None:
        with self._check_lock:
            started = time.monotonic()
            if not force and started - self._checked_at < WANTED_FRESHNESS:
                return  # another thread checked while this one waited
            with self._lock:
                ids = list(self._ids)
            try:
                with reading(self.runtime.sessions) as session:
                    held = images.held_of(session, ids, self.owner)
            except SQLAlchemyError:  # the database decides at record time; keep working
                log.warning("could not check %d images are still wanted", len(ids), exc_info=True)
            else:
                with self._lock:
                    # Only images still held: one recorded meanwhile is not "lost".
                    self._lost.update(i for i in ids if i not in held and i in self._ids)
            self._checked_at = started

    def give_back(self, ids: Iterable[int]) -> int:
        """Stop renewing these leases and hand the images not yet recorded back to the queue
        now, for a worker that will not finish them (it could not record them, its chunk
        failed). Best effort: when the database cannot be reached either, their leases run
        out instead. Returns how many images went back."""
        id_list = list(ids)
        with self._lock:
            self._ids.difference_update(id_list)
            self._lost.difference_update(id_list)
        try:
            with transaction(self.runtime.sessions) as session:
                released = images.release_leases(session, self.owner, id_list)
        except Exception as exc:
            log.warning(
                "could not hand back %d images (%s); they return when their leases run out",
                len(id_list),
                type(exc).__name__,
            )
            return 0
        if released:
            log.info("handed back %d images for another attempt", released)
        return released

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def renew(self) -> None:
        with self._lock:
            ids = list(self._ids)
        if not ids:
            return
        with transaction(self.runtime.sessions) as session:
            images.renew_leases(
                session,
                owner=self.owner,
                ids=ids,
                lease_seconds=self.runtime.settings.lease_seconds,
            )

    def _loop(self) -> None:
        # A failed renewal (the database in an outage, a failover) is retried within a
        # second, so the leases are renewed as soon as it answers, before they run out.
        beat_until(self._stop, renewal_period(self.runtime.settings.lease_seconds), self.renew)


# How soon a failed renewal is tried again.
RETRY_AFTER_FAILURE = 1.0


def renewal_period(lease_seconds: float) -> float:
    """Renew every third of the lease: two renewals may fail before a live holder loses it."""
    return max(0.1, lease_seconds / 3)


def beat_until(stop: threading.Event, period: float, beat: Callable[[], object]) -> None:
    """Call ``beat`` every ``period`` seconds until ``stop`` is set; a beat that fails is
    logged and tried again after ``RETRY_AFTER_FAILURE`` (when that is sooner)."""
    wait = period
    while not stop.wait(wait):
        try:
            beat()
        except Exception as exc:
            log.warning(
                "%s failed (%s); retrying", threading.current_thread().name, type(exc).__name__
            )
            wait = min(period, RETRY_AFTER_FAILURE)
        else:
            wait = period


@contextmanager
def heartbeat(period: float, beat: Callable[[], object], name: str) -> Iterator[None]:
    """Call ``beat`` every ``period`` seconds from a thread while the block runs: a lease
    held for work of unknown length (a large batch's output CSV) stays short for a dead
    holder and never runs out under a live one. A failed beat is logged and tried again."""
    stop = threading.Event()
    thread = threading.Thread(target=beat_until, args=(stop, period, beat), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
