"""Who may read a stored file: its tenant's key, or a signed URL when keys are on.

Unauthorised, foreign and missing files all answer the same ``NotFound``, so stored keys
cannot be probed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from pixelbatch import batches
from pixelbatch.auth.keys import Principal
from pixelbatch.errors import NotFound
from pixelbatch.runtime import Runtime


def may_read(
    runtime: Runtime, key: str, who: Principal | None, expires: str | None, sig: str | None
) -> bool:
    if not runtime.settings.auth_enabled:
        return True
    signer = runtime.url_signer
    if signer is not None and signer.valid(key, expires, sig):
        return True
    if who is None:
        return False
    try:
        batch_id = uuid.UUID(key.split("/", 1)[0])
    except ValueError:
        return False
    return batches.owns_batch(runtime, batch_id, tenant=who.tenant)


def stored_path(runtime: Runtime, key: str) -> Path:
    """Where a stored object is on this machine's disk."""
    path = runtime.storage.local_path(key)
    if path is None:
        raise NotFound("file not found")
    return path


def readable_file(
    runtime: Runtime, key: str, who: Principal | None, expires: str | None, sig: str | None
) -> Path:
    if not may_read(runtime, key, who, expires, sig):
        raise NotFound("file not found")
    return stored_path(runtime, key)


def output_csv(runtime: Runtime, batch_id: uuid.UUID, *, tenant: str) -> Path:
    """The finished batch's output CSV, for its own tenant only."""
    return stored_path(runtime, batches.output_csv_key_for(runtime, batch_id, tenant=tenant))
