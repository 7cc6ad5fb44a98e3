"""Keep the leases of in-flight images alive while they are worked on.

A lease is short so that a dead worker's images come back quickly; a live worker renews
the leases it holds every third of the lease, from a background thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from pixelbatch.db import images
from pixelbatch.db.engine import transaction
from pixelbatch.runtime import Runtime

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, runtime: Runtime, owner: str) -> None:
        self.runtime = runtime
        self.owner = owner
        self._ids: set[int] = set()
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

    def give_back(self, ids: Iterable[int]) -> int:
        """Stop renewing these leases and hand the images not yet recorded back to the queue
        now, for a worker that will not finish them (it could not record them, its chunk
        failed). Best effort: when the database cannot be reached either, their leases run
        out instead. Returns how many images went back."""
        id_list = list(ids)
        with self._lock:
            self._ids.difference_update(id_list)
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
        every = max(0.2, self.runtime.settings.lease_seconds / 3)
        while not self._stop.wait(every):
            try:
                self.renew()
            except Exception:
                log.exception("could not renew leases; retrying")
