"""The embedded dispatcher: leases images from the database and runs the routine in-process.

Downloads run on a thread pool (they wait on the network), transforms on a process pool
(they need the cores), recording on one thread that commits what finished together
(``jobs.recorder``). The dispatcher keeps about twice as many images in flight as there are
download threads, so a decode never waits for a download to start. Both pools take the
highest-priority image waiting first (``jobs.ordered``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import uuid

from pixelbatch.db.engine import transaction
from pixelbatch.db.images import ClaimedImage, claim_images, lease_owners, release_leases
from pixelbatch.jobs.finalize import finalize_ready_batches
from pixelbatch.jobs.leases import LeaseKeeper
from pixelbatch.jobs.ordered import PriorityExecutor, PriorityGate
from pixelbatch.jobs.recorder import GroupRecorder
from pixelbatch.jobs.removal import remove_expired
from pixelbatch.jobs.routine import produce_image
from pixelbatch.jobs.transform_pool import TransformPool
from pixelbatch.runtime import Runtime
from pixelbatch.telemetry import instruments as metrics
from pixelbatch.telemetry.multiproc import pid_alive
from pixelbatch.transform import TransformOptions, TransformResult
from pixelbatch.webhooks.delivery import deliver_due

log = logging.getLogger(__name__)

# An embedded worker's lease owner names its process: ``embedded-<pid>-<random>``.
_OWNER_RE = re.compile(r"embedded-(\d+)-[0-9a-f]+")
_LEGACY_OWNER_RE = re.compile(r"embedded-[0-9a-f]{12}")


class EmbeddedWorker:
    def __init__(self, runtime: Runtime, *, batch_id: uuid.UUID | None = None) -> None:
        self.runtime = runtime
        self.batch_id = batch_id
        self.owner = f"embedded-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        settings = runtime.settings
        self.capacity = max(2, settings.fetch_concurrency * 2)
        # Claim in steps of a quarter of the capacity, not one image per finished image: a
        # claim reads the whole field of batches (fair share), which for small images cost
        # as much CPU as the image itself. Three quarters still queue behind the downloads.
        self._claim_step = max(1, self.capacity // 4)
        metrics.set_capacity(settings.fetch_concurrency)  # images run on that many threads
        self._downloads = PriorityExecutor(settings.fetch_concurrency, "pixelbatch-image")
        self._transforms = TransformPool(
            settings.resolved_transform_workers, settings.max_pixels, settings.transform_timeout
        )
        # Two slots per pool child: one image in the child, the next already queued for it
        # in the pool's own (first come) queue. With one slot per child, each child waited
        # between images for the result to travel back, the slot to pass on and the next
        # image to travel out, all through threads queued for the GIL behind 32 downloads,
        # and idled ~60% of the time on 640 px images. A higher priority waits behind at most
        # one queued image per child.
        self._transform_slots = PriorityGate(2 * settings.resolved_transform_workers)
        self._leases = LeaseKeeper(runtime, self.owner)
        self._recorder = GroupRecorder(runtime, self.owner, self._leases, self._room_made)
        self._wake = threading.Event()
        self._new_work = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._reclaim_dead_leases()
        self._leases.start()
        self._recorder.start()
        for target, name in (
            (self._dispatch_loop, "pixelbatch-dispatch"),
            (self._maintenance_loop, "pixelbatch-maintenance"),
            (self._webhook_loop, "pixelbatch-webhooks"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def new_work(self, images: int) -> None:
        """Dispatcher interface: new images were committed. The next claim takes up to a
        step of them even when no step of room is free (never past a step beyond capacity):
        waiting for that room held a high-priority upload behind up to a step of finishing
        images, 0.6 s at 25 photos/s, before its images could jump the queues."""
        self._new_work.set()
        self._wake.set()

    def stopped(self, batch_id: uuid.UUID) -> None:
        """Dispatcher interface: a batch was cancelled or deleted; its images held here stop
        at their next stage boundary."""
        self._leases.check_now()

    @property
    def inflight(self) -> int:
        return len(self._leases)

    def stop(self) -> None:
        """Stop taking work, let in-flight images finish, hand back anything unstarted."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._downloads.shutdown()
        self._recorder.stop()  # what the downloads finished is recorded before leases go
        self._transforms.shutdown()
        self._leases.stop()
        self._release_leases()

    def _reclaim_dead_leases(self) -> None:
        """Take back at once the images an earlier run on this SQLite file was working on
        when it died (SIGKILL, power loss), instead of waiting out their leases.

        Only for the embedded mode on SQLite: the file is local and its workers are this
        machine's processes, so an owner whose process is gone is dead for sure. Leases of a
        live process (a ``pixelbatch process`` next to ``pixelbatch serve``) are kept, and
        a shared database (PostgreSQL, or any with a broker) is never touched: there a
        stranger's lease may be a live worker's on another machine."""
        settings = self.runtime.settings
        if not settings.is_embedded or self.runtime.engine.dialect.name != "sqlite":
            return
        try:
            with transaction(self.runtime.sessions) as session:
                dead = [
                    owner
                    for owner in lease_owners(session, self.batch_id)
                    if owner != self.owner and not _owner_alive(owner)
                ]
                released = sum(release_leases(session, owner) for owner in dead)
        except Exception:
            log.exception("could not reclaim a previous run's images; their leases will expire")
            return
        if released:
            log.info("took back %d images a previous run left unfinished", released)

    def _release_leases(self) -> None:
        with transaction(self.runtime.sessions) as session:
            release_leases(session, self.owner)

    def _dispatch_loop(self) -> None:
        settings = self.runtime.settings
        while not self._stop.is_set():
            claimed = 0
            try:
                room = self.capacity - self.inflight
                urgent = self._new_work.is_set()
                if urgent:
                    self._new_work.clear()
                    # A step even with no room free, but never past a step beyond capacity
                    # however many uploads come meanwhile.
                    beyond = self.capacity + self._claim_step - self.inflight
                    room = max(room, min(self._claim_step, beyond))
                if room >= self._claim_step or (urgent and room > 0):
                    claimed = self._claim(room)
            except Exception:
                log.exception("could not claim images; retrying")
                self._stop.wait(settings.poll_interval)
            if claimed and self.capacity - self.inflight >= self._claim_step:
                continue
            self._wake.wait(settings.poll_interval)
            self._wake.clear()

    def _claim(self, room: int) -> int:
        with transaction(self.runtime.sessions) as session:
            items = claim_images(
                session,
                owner=self.owner,
                limit=room,
                lease_seconds=self.runtime.settings.lease_seconds,
                batch_id=self.batch_id,
                aging_seconds=self.runtime.settings.priority_aging_seconds,
            )
        self._leases.hold(item.id for item in items)
        for item in items:
            self._downloads.submit(item.priority, functools.partial(self._run_one, item))
        return len(items)

    def _run_one(self, item: ClaimedImage) -> None:
        """Produce one image on this download thread; the recorder records it, with others
        finished about the same time, and releases its lease."""

        def transform(data: bytes, options: TransformOptions) -> TransformResult:
            return self._transform_slots.run(
                item.priority, functools.partial(self._transforms, data, options)
            )

        try:
            outcome = produce_image(self.runtime, item, self.owner, transform, self._leases.wanted)
        except Exception:  # a bug: produce turns every failure of the image into an outcome
            log.exception("could not process image %s; it will be retried", item.id)
            self._leases.give_back([item.id])
            self._room_made()
            return
        self._recorder.submit(outcome)

    def _room_made(self) -> None:
        """Images left the worker: claim more once a step's worth of room is free."""
        if self.capacity - self.inflight >= self._claim_step:
            self._wake.set()

    def _maintenance_loop(self) -> None:
        """Finish batches whose finaliser died (crash recovery); a server (not a one-batch
        ``pixelbatch process``) also applies retention, every ``sweep_interval``."""
        settings = self.runtime.settings
        next_retention = time.monotonic()
        while not self._stop.wait(settings.poll_interval):
            try:
                for batch_id in finalize_ready_batches(self.runtime, only=self.batch_id):
                    log.info("recovered finalisation of batch %s", batch_id)
                if self.batch_id is None and time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + settings.sweep_interval
                    remove_expired(self.runtime)
            except Exception:
                log.exception("maintenance pass failed; retrying")

    def _webhook_loop(self) -> None:
        settings = self.runtime.settings
        while not self._stop.wait(settings.poll_interval):
            try:
                while deliver_due(self.runtime, batch_id=self.batch_id) and not self._stop.is_set():
                    pass
            except Exception:
                log.exception("webhook pass failed; retrying")


def _owner_alive(owner: str) -> bool:
    """Whether a lease owner's process still runs on this machine. An embedded owner of an
    earlier version (no pid in its name) is taken for dead; any other owner for alive."""
    match = _OWNER_RE.fullmatch(owner)
    if match is None:
        return _LEGACY_OWNER_RE.fullmatch(owner) is None
    return pid_alive(int(match.group(1)))
