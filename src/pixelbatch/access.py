"""Who may read a stored file: its tenant's key, or a signed URL when keys are on; and
where the bytes come from: this machine's disk, or (object storage) a fresh presigned URL
the API redirects to.

Unauthorised, foreign and missing files all answer the same ``NotFound``, so stored keys
cannot be probed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from pixelbatch import batches
from pixelbatch.auth.keys import Principal
from pixelbatch.errors import NotFound
from pixelbatch.runtime import Runtime


@dataclass(frozen=True)
class ReadableFile:
    """A stored file a caller may read, and why: ``signed_until`` is the expiry (Unix
    seconds) of the valid signature that granted it, None when a key (or keys being off)
    did, so that only a signed answer is shareable with caches. Exactly one of ``path``
    (serve these bytes) and ``redirect`` (send the caller there) is set."""

    path: Path | None
    redirect: str | None = None
    signed_until: int | None = None


def signed_until(runtime: Runtime, key: str, expires: str | None, sig: str | None) -> int | None:
    """The expiry of a valid signature for ``key``, else None."""
    signer = runtime.url_signer
    if signer is not None and expires is not None and signer.valid(key, expires, sig):
        return int(expires)
    return None


def may_read(runtime: Runtime, key: str, who: Principal | None) -> bool:
    """Without a signature: keys off, or the key's tenant owns the file's batch."""
    if not runtime.settings.auth_enabled:
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


def located(
    runtime: Runtime, key: str, signed: int | None = None, download_name: str | None = None
) -> ReadableFile:
    """Where an authorised caller reads ``key``: a redirect the storage hands out, else the
    file on this machine's disk."""
    redirect = runtime.storage.redirect_url(key, download_name)
    if redirect is not None:
        return ReadableFile(None, redirect, signed)
    return ReadableFile(stored_path(runtime, key), None, signed)


def readable_file(
    runtime: Runtime, key: str, who: Principal | None, expires: str | None, sig: str | None
) -> ReadableFile:
    until = signed_until(runtime, key, expires, sig)
    if until is None and not may_read(runtime, key, who):
        raise NotFound("file not found")
    return located(runtime, key, until)


def output_csv(
    runtime: Runtime, batch_id: uuid.UUID, *, tenant: str, download_name: str | None = None
) -> ReadableFile:
    """The finished batch's output CSV, for its own tenant only."""
    key = batches.output_csv_key_for(runtime, batch_id, tenant=tenant)
    return located(runtime, key, download_name=download_name)
