"""API keys: created and revoked from the CLI, shown once, stored as hashes.

A key looks like ``pb_<prefix>_<secret>``. The prefix finds the row; the SHA-256 of the
whole key is compared in constant time. A fast hash is enough because keys carry 190 bits
of randomness: there is nothing to brute-force that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from pixelbatch.db import api_keys
from pixelbatch.db.models import ApiKey, Priority, utcnow
from pixelbatch.errors import InvalidInput, NotFound, PixelbatchError
from pixelbatch.secrets import new_secret

KEY_RE = re.compile(r"^pb_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{32,64})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Unauthorized(PixelbatchError):
    code = "unauthorized"
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """Who is calling. With keys off everyone is the anonymous tenant ``""``."""

    tenant: str
    key_id: uuid.UUID | None = None
    # The highest priority this caller's uploads may ask for; None: any.
    max_priority: Priority | None = None
    last_used_stale: bool = field(default=False, compare=False)


ANONYMOUS = Principal(tenant="")


@dataclass(frozen=True)
class CreatedKey:
    id: uuid.UUID
    tenant: str
    name: str
    key: str
    webhook_secret: str
    max_priority: Priority | None = None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session,
    *,
    name: str,
    tenant: str | None = None,
    max_priority: Priority | None = None,
) -> CreatedKey:
    tenant = tenant or name
    if not TENANT_RE.match(tenant):
        raise InvalidInput(
            "tenant must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    prefix = secrets.token_hex(6)
    key = f"pb_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=uuid.uuid4(),
        tenant=tenant,
        name=name[:128],
        prefix=prefix,
        key_hash=_hash(key),
        webhook_secret=new_secret(),
        max_priority=max_priority,
    )
    session.add(row)
    return CreatedKey(row.id, tenant, row.name, key, row.webhook_secret, max_priority)


def authenticate(session: Session, presented: str | None) -> Principal:
    if not presented:
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    match = KEY_RE.match(presented.strip())
    row = None
    if match:
        row = api_keys.key_by_prefix(session, match.group(1))
    # Compare even when no row matched, so timing does not tell which prefixes exist.
    expected = row.key_hash if row is not None else _hash("pb_nothing")
    valid = hmac.compare_digest(expected, _hash(presented.strip()))
    if row is None or not valid or row.revoked_at is not None:
        raise Unauthorized("invalid or revoked API key")
    stale = row.last_used_at is None or utcnow() - row.last_used_at > LAST_USED_RESOLUTION
    return Principal(
        tenant=row.tenant, key_id=row.id, max_priority=row.max_priority, last_used_stale=stale
    )


def touch_key(session: Session, key_id: uuid.UUID) -> None:
    """Record that a key was used. Callers do it only when ``last_used_stale``: a write per
    request would queue every status poll behind the workers for SQLite's one write lock."""
    api_keys.mark_key_used(session, key_id)


def list_keys(session: Session) -> list[ApiKey]:
    return api_keys.all_keys(session)


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    try:
        key_id = uuid.UUID(key_id_or_prefix)
    except ValueError:
        row = api_keys.key_by_prefix(session, key_id_or_prefix.removeprefix("pb_")[:12])
    else:
        row = api_keys.key_by_id(session, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id_or_prefix!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
