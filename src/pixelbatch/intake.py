"""Work entering the system: uploads and retries, validated and committed, then the doorbell.

The API, the CLI and the web UI all call these, so a rate limit, a default or a check
added here holds for every face at once.
"""

from __future__ import annotations

import uuid
from typing import IO

from pydantic import ValidationError

from pixelbatch import batches
from pixelbatch.auth.keys import ANONYMOUS, Principal
from pixelbatch.db.models import Batch
from pixelbatch.errors import InvalidInput
from pixelbatch.jobs.dispatch import Dispatcher
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from pixelbatch.transform import OutputFormat, TransformOptions


def processing_options(
    settings: Settings,
    *,
    quality: int | None = None,
    relative_quality: float | None = None,
    output_format: OutputFormat = OutputFormat.KEEP,
    max_width: int | None = None,
    max_height: int | None = None,
    keep_metadata: bool = False,
) -> TransformOptions:
    """The options a client asked for, with the deployment's defaults for the rest."""
    try:
        return TransformOptions(
            quality=quality,
            relative_quality=relative_quality or settings.default_relative_quality,
            output_format=output_format,
            max_width=max_width,
            max_height=max_height,
            keep_metadata=keep_metadata,
        )
    except ValidationError as exc:
        raise InvalidInput(f"invalid processing options: {exc.errors()[0]['msg']}") from None


def upload(
    runtime: Runtime,
    dispatcher: Dispatcher | None,
    source: IO[bytes],
    *,
    filename: str,
    options: TransformOptions,
    webhook_url: str | None = None,
    idempotency_key: str | None = None,
    principal: Principal = ANONYMOUS,
) -> tuple[Batch, bool]:
    """Accept a catalog as a new batch (or name the earlier one its idempotency key made).

    Uploads with an API key count against that key's rate limit. The batch is committed
    before the dispatcher hears of it, so a message never names work that is not there.
    """
    if principal.key_id is not None:
        runtime.rate_limiter.hit(str(principal.key_id))
    batch, created = batches.submit_batch(
        runtime,
        source,
        filename=filename,
        options=options,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
        principal=principal,
    )
    if created and dispatcher is not None:
        dispatcher.new_work(batch.images_total)
    return batch, created


def retry_failed(
    runtime: Runtime, dispatcher: Dispatcher, batch_id: uuid.UUID, *, tenant: str
) -> tuple[Batch, int]:
    """Queue a finished batch's failed images again; returns the batch and how many."""
    batch, count = batches.retry_failed(runtime, batch_id, tenant=tenant)
    dispatcher.new_work(count)
    return batch, count
