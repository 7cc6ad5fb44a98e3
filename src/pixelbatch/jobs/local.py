"""Run one batch to the end in this process, without a server (``pixelbatch process``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from pixelbatch import batches
from pixelbatch.db import outbox
from pixelbatch.db.engine import transaction
from pixelbatch.db.models import Batch, DeliveryStatus
from pixelbatch.jobs.embedded import EmbeddedWorker
from pixelbatch.runtime import Runtime

ProgressCallback = Callable[[Batch], None]

ABANDONED = "not delivered before `pixelbatch process` exited"


def run_to_completion(
    runtime: Runtime,
    batch_id: uuid.UUID,
    on_progress: ProgressCallback | None = None,
    poll: float = 0.2,
    webhook_wait: float = 60.0,
) -> Batch:
    """Work the batch until it ends, then finish its webhook: retried (on the configured
    backoff) until delivered, FAILED, or ``webhook_wait`` seconds have passed. The worker
    touches only this batch: its images, its finalisation, its webhook, never another
    run's. A webhook still undelivered when the wait ends is marked FAILED with
    :data:`ABANDONED`, so no later process sends it unasked; the caller reads the outcome
    from ``batches.batch_detail(...).webhook``."""
    worker = EmbeddedWorker(runtime, batch_id=batch_id)
    worker.start()
    try:
        while True:
            batch = batches.get_batch(runtime, batch_id, tenant="")
            if on_progress is not None:
                on_progress(batch)
            if batch.status.is_final:
                break
            time.sleep(poll)
        if batch.webhook_url:
            deadline = time.monotonic() + webhook_wait
            while time.monotonic() < deadline:
                detail = batches.batch_detail(runtime, batch_id, tenant="")
                if detail.webhook is None or detail.webhook.status != DeliveryStatus.PENDING:
                    break
                time.sleep(poll)
    finally:
        worker.stop()  # an attempt in flight finishes and is recorded first
    if batch.webhook_url:
        with transaction(runtime.sessions) as session:
            outbox.abandon_pending_deliveries(session, batch_id, ABANDONED)
    return batch
