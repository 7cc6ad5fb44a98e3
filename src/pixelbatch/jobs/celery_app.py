"""The distributed dispatcher: Celery workers running the same routine as the embedded mode.

Messages are doorbells, not work lists. A ``work`` task leases one chunk of images from the
database (shared fairly across the active batches, see ``db.images.claim_images``) and runs
the routine on it; the database stays the only record of what is left to do. A full chunk
rings the bell once more, so the queue keeps moving while work remains, and a sweeper in
every worker's main process rings it again when messages were lost (a broker restarted
without persistence), finishes batches whose finaliser died, and queues due webhooks.

Late acks, reject-on-worker-lost and a prefetch of one mean a chunk in a killed worker is
redelivered; its images come back when their leases expire, and every image is recorded once
because recording is a conditional UPDATE on the lease.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from kombu.transport.virtual import Channel as VirtualChannel
from sqlalchemy.exc import OperationalError

from pixelbatch.db.engine import transaction
from pixelbatch.db.fair_share import count_claimable
from pixelbatch.db.images import claim_images
from pixelbatch.db.outbox import count_due_deliveries
from pixelbatch.heap import freeze_startup_objects
from pixelbatch.jobs.finalize import finalize_ready_batches
from pixelbatch.jobs.leases import LeaseKeeper
from pixelbatch.jobs.memory import tune_malloc
from pixelbatch.jobs.removal import remove_expired
from pixelbatch.jobs.routine import process_chunk
from pixelbatch.jobs.transform_pool import TransformRunner, inline_runner
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.telemetry import instruments as metrics
from pixelbatch.webhooks.delivery import deliver_due

log = logging.getLogger(__name__)

QUEUE = "pixelbatch"
# Webhook deliveries wait on other people's servers: on a queue of their own, consumed by a
# thread pool apart from the image processes, a slow receiver never holds an image worker.
WEBHOOK_QUEUE = "pixelbatch-webhooks"
WORK_TASK = "pixelbatch.work"
DELIVER_TASK = "pixelbatch.deliver_webhooks"


def make_celery(settings: Settings) -> Celery:
    celery = Celery("pixelbatch", broker=settings.broker_url or "memory://", set_as_current=False)
    hard_limit = settings.chunk_time_limit
    celery.conf.update(
        task_default_queue=QUEUE,
        task_routes={DELIVER_TASK: {"queue": WEBHOOK_QUEUE}},
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=hard_limit,
        task_soft_time_limit=max(1.0, hard_limit - 30),
        # Longer than the longest chunk, so Redis never hands a running chunk to a second
        # worker; a chunk of a dead worker comes back through reject-on-worker-lost or leases.
        broker_transport_options={"visibility_timeout": int(hard_limit * 2 + 60)},
        broker_connection_retry_on_startup=True,
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return celery


# Read once per process tree; prefork children inherit it.
SETTINGS = Settings()
app = make_celery(SETTINGS)
# Only a worker that consumes image work sweeps; set by ``pixelbatch worker``.
sweeping = True


@dataclass
class _WorkerState:
    pid: int
    runtime: Runtime
    owner: str
    leases: LeaseKeeper
    runner: TransformRunner


_state: _WorkerState | None = None
_state_lock = threading.Lock()


def _worker_state() -> _WorkerState:
    """One runtime per worker process, built after the fork (engines must not be shared)."""
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            tune_malloc()
            runtime = Runtime(SETTINGS)
            owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            _state = _WorkerState(
                os.getpid(),
                runtime,
                owner,
                LeaseKeeper(runtime, owner).start(),
                # One runner per process: its lock spans the chunks of concurrent tasks.
                inline_runner(runtime.settings.max_pixels),
            )
        return _state


def ring(count: int = 1) -> None:
    """Queue ``count`` work messages."""
    for _ in range(count):
        app.send_task(WORK_TASK, queue=QUEUE)


def ring_webhooks() -> None:
    app.send_task(DELIVER_TASK, queue=WEBHOOK_QUEUE)


def doorbells_for(images: int, settings: Settings) -> int:
    return min(settings.dispatch_fanout, math.ceil(images / max(1, settings.chunk_size)))


class CeleryDispatcher:
    """What the API calls after committing new work."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def stopped(self, batch_id: uuid.UUID) -> None:
        """Nothing to tell: the workers are other processes, whose ``LeaseKeeper.wanted``
        sees the cancel within ``WANTED_FRESHNESS`` (and the recording refuses it anyway)."""

    def new_work(self, images: int) -> None:
        ring(doorbells_for(images, self.settings))


@app.task(  # type: ignore[untyped-decorator]
    name=WORK_TASK,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=10,
)
def work() -> int:
    state = _worker_state()
    settings = state.runtime.settings
    with transaction(state.runtime.sessions) as session:
        items = claim_images(
            session,
            owner=state.owner,
            limit=settings.chunk_size,
            lease_seconds=settings.lease_seconds,
            aging_seconds=settings.priority_aging_seconds,
        )
    if not items:
        return 0
    state.leases.hold(item.id for item in items)
    try:
        if len(items) == settings.chunk_size:
            ring()
        finalized = process_chunk(
            state.runtime,
            items,
            state.owner,
            state.runner,
            threads=settings.fetch_concurrency,
            on_done=state.leases.release,
            still_wanted=state.leases.wanted,
        )
    except BaseException:
        # The chunk failed (database or broker down, time limit): what it did not record goes
        # back to the queue now rather than when its leases run out (best effort).
        state.leases.give_back(item.id for item in items)
        raise
    if finalized:
        ring_webhooks()
    return len(items)


@app.task(  # type: ignore[untyped-decorator]
    name=DELIVER_TASK,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=10,
)
def deliver_webhooks() -> int:
    state = _worker_state()
    sent = 0
    while attempted := deliver_due(state.runtime):
        sent += attempted
    return sent


def queued_messages(queue: str = QUEUE) -> int | None:
    """Messages waiting in ``queue``, or None if the broker cannot say (it is unreachable).

    Read without declaring anything: kombu's virtual transports (Redis: the LLEN of the
    queue's lists; the in-memory broker) count a queue with ``Channel._size``, so an empty
    queue, whose Redis list does not exist, reads as 0 instead of failing a passive declare.
    Brokers with real queues (AMQP) answer the passive declare."""
    try:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            size = getattr(type(channel), "_size", None)
            if size is not None and size is not VirtualChannel._size:  # the transport counts
                return int(channel._size(queue))
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except Exception as exc:
        log.debug("could not read the length of queue %s: %s", queue, exc)
        return None


class Sweeper:
    """Periodic recovery in each worker's main process; every pass is idempotent, so several
    workers sweeping at once only cost a few extra messages."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pixelbatch-sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.runtime.settings.sweep_interval):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; retrying")

    def sweep(self) -> None:
        settings = self.runtime.settings
        with transaction(self.runtime.sessions) as session:
            # No more than a full fan-out's worth of messages is ever asked for.
            claimable = count_claimable(session, settings.dispatch_fanout * settings.chunk_size)
            due_webhooks = count_due_deliveries(session)
        if claimable:
            wanted = doorbells_for(claimable, settings)
            queued = queued_messages()
            # Unknown (broker unreachable): one message per sweep keeps work moving without
            # piling up a fan-out's worth every interval on a queue that may be full.
            missing = wanted - queued if queued is not None else 1
            if missing > 0:
                log.info(
                    "sweeper: %d images claimable, queueing %d work messages", claimable, missing
                )
                ring(missing)
        for batch_id in finalize_ready_batches(self.runtime):
            log.info("sweeper: finalised batch %s", batch_id)
            due_webhooks += 1
        if due_webhooks:
            ring_webhooks()
        remove_expired(self.runtime)


_sweeper: Sweeper | None = None


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_sweeper(**_: Any) -> None:
    global _sweeper
    if sweeping:
        _sweeper = Sweeper(Runtime(SETTINGS)).start()


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()


def image_slots(settings: Settings) -> int:
    """Images one image process works on at once: its chunk, on that many threads."""
    return min(settings.fetch_concurrency, settings.chunk_size)


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _report_capacity(**_: Any) -> None:
    """Each prefork child reports its slots from the start, busy or not: a worker that is
    up but idle must not look like no worker at all."""
    if sweeping:
        metrics.set_capacity(image_slots(SETTINGS))
    freeze_startup_objects()


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_process(**_: Any) -> None:
    if _state is not None and _state.pid == os.getpid():
        _state.leases.stop()
        _state.runtime.close()
