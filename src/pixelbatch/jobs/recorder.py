"""Record the embedded worker's finished images on one thread, many per transaction.

Each image recorded in its own transaction cost the API process about 0.6 ms of CPU (on
SQLite: the write lock, a session, a commit, and the batch's counters and "all recorded?"
query for each image) and, with 32 download threads, a queue on the write lock. One thread
takes what finishes within ``GROUP_WINDOW`` of an image and records it together
(``recording.record_group``): several images per commit, about 0.25 ms each.

An image stays leased (``LeaseKeeper``) until its group is committed, so a lease never runs
out between its store and its recording. A batch completed by a group is finalised on a
thread of its own: writing a large batch's output CSV takes seconds and must not hold up
the recording of other batches' images.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pixelbatch.jobs.finalize import finalize_batch
from pixelbatch.jobs.leases import LeaseKeeper
from pixelbatch.jobs.recording import Outcome, record_group
from pixelbatch.runtime import Runtime

log = logging.getLogger(__name__)

# A group takes what finishes within this long of its first image: at 30 photos a second a
# group is then a couple of images, not one (a lone image's recording cost three times a
# grouped one's); an image's recording and its batch's end come this much later at most.
GROUP_WINDOW = 0.05
# At most this many images per transaction: the saving per image is nearly all had by 8-16.
MAX_GROUP = 64


class GroupRecorder:
    def __init__(
        self,
        runtime: Runtime,
        owner: str,
        leases: LeaseKeeper,
        on_recorded: Callable[[], None],
    ) -> None:
        self.runtime = runtime
        self.owner = owner
        self._leases = leases
        self._on_recorded = on_recorded
        self._queue: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        # Set by ``submit`` once the waiting outcomes make a whole group: the recorder sleeps
        # out a group's window instead of waking for each image (each wake-up is a turn at
        # the GIL among 32 download threads).
        self._group_full = threading.Event()
        self._holding = 0  # 1 while the recorder holds a group's first outcome off the queue
        self._finaliser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelbatch-final")
        self._thread = threading.Thread(target=self._loop, name="pixelbatch-recorder", daemon=True)

    def start(self) -> GroupRecorder:
        self._thread.start()
        return self

    def submit(self, outcome: Outcome) -> None:
        self._queue.put(outcome)
        if self._is_whole_group(self._holding + self._queue.qsize()):
            self._group_full.set()

    def _is_whole_group(self, outcomes: int) -> bool:
        """A group closes at once when it is as large as groups get, or holds every image
        the worker has leased: nothing else can join it, and a batch's last images (or a
        lone urgent one) would otherwise wait out the window."""
        return outcomes >= MAX_GROUP or outcomes >= len(self._leases)

    def stop(self) -> None:
        """Record everything submitted so far, then wait for the finalisations it started."""
        self._queue.put(None)
        self._group_full.set()  # the group being gathered closes now, not at its window's end
        self._thread.join()
        self._finaliser.shutdown(wait=True)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            group, stopping = self._next_group()
            if group:
                self._record(group)

    def _next_group(self) -> tuple[list[Outcome], bool]:
        """Wait for one outcome, then for what else finishes within ``GROUP_WINDOW`` (until
        the group is whole, see ``_is_whole_group``), and take it all, ``MAX_GROUP`` at
        most; True once ``stop`` was asked."""
        first = self._queue.get()
        if first is None:
            return [], True
        self._holding = 1
        self._group_full.clear()
        if not self._is_whole_group(1 + self._queue.qsize()):
            self._group_full.wait(GROUP_WINDOW)
        self._holding = 0
        group = [first]
        while len(group) < MAX_GROUP:
            try:
                outcome = self._queue.get_nowait()
            except queue.Empty:
                break
            if outcome is None:
                return group, True
            group.append(outcome)
        return group, False

    def _record(self, group: list[Outcome]) -> None:
        recorded = record_group(
            self.runtime.sessions,
            group,
            self.owner,
            self.runtime.storage,
            self.runtime.settings.host_classes,
        )
        if recorded.unrecorded:
            # Recording failed (database down?): hand the images back for another attempt;
            # if the database cannot take even that, their leases run out instead.
            log.error(
                "could not record %d images; they will be retried",
                len(recorded.unrecorded),
                exc_info=recorded.error,
            )
            self._leases.give_back(outcome.image_id for outcome in recorded.unrecorded)
        for outcome in group:
            self._leases.release(outcome.image_id)
        for batch_id in recorded.completed:
            self._finaliser.submit(self._finalise, batch_id)
        self._on_recorded()

    def _finalise(self, batch_id: uuid.UUID) -> None:
        try:
            finalize_batch(self.runtime, batch_id)
        except Exception:
            # The maintenance loop finds the batch ready and finalises it on its next pass.
            log.exception("could not finalise batch %s; it will be retried", batch_id)
