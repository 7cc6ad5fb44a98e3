"""Run one batch to the end in this process, without a server (``pixelbatch process``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from pixelbatch import batches
from pixelbatch.db.models import Batch
from pixelbatch.jobs.embedded import EmbeddedWorker
from pixelbatch.runtime import Runtime

ProgressCallback = Callable[[Batch], None]


def run_to_completion(
    runtime: Runtime,
    batch_id: uuid.UUID,
    on_progress: ProgressCallback | None = None,
    poll: float = 0.2,
    webhook_grace: float = 30.0,
) -> Batch:
    """Work the batch until it ends; waits a little for its webhook's first attempt."""
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
            deadline = time.monotonic() + webhook_grace
            while time.monotonic() < deadline:
                detail = batches.batch_detail(runtime, batch_id, tenant="")
                if detail.webhook is None or detail.webhook.attempts > 0:
                    break
                time.sleep(poll)
        return batch
    finally:
        worker.stop()
