"""API key checks read only; the last-used time is written at most once a minute."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.auth import keys
from pixelbatch.auth.keys import (
    LAST_USED_RESOLUTION,
    Unauthorized,
    authenticate,
    create_key,
    revoke_key,
    touch_key,
)
from pixelbatch.db.engine import reading, transaction
from pixelbatch.db.models import ApiKey, utcnow
from tests import support


@pytest.fixture
def sessions(migrated_sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with support.sessions(migrated_sqlite_url) as factory:
        yield factory


def test_last_used_is_stale_until_touched_and_again_after_a_minute(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        created = create_key(session, name="shop", tenant="acme")
    with reading(sessions) as session:
        who = authenticate(session, created.key)
    assert (who.tenant, who.key_id, who.last_used_stale) == ("acme", created.id, True)

    with transaction(sessions) as session:
        touch_key(session, created.id)
    with reading(sessions) as session:
        assert authenticate(session, created.key).last_used_stale is False

    long_ago = utcnow() - LAST_USED_RESOLUTION - timedelta(seconds=1)
    with transaction(sessions) as session:
        session.execute(update(ApiKey).values(last_used_at=long_ago))
    with reading(sessions) as session:
        assert authenticate(session, created.key).last_used_stale is True


def test_revoked_and_forged_keys_are_refused(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        created = create_key(session, name="shop", tenant="acme")
    forged = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    with reading(sessions) as session, pytest.raises(Unauthorized):
        authenticate(session, forged)
    with transaction(sessions) as session:
        revoke_key(session, str(created.id))
    with reading(sessions) as session, pytest.raises(Unauthorized):
        authenticate(session, created.key)


def _stored_bytes(directory: Path) -> bytes:
    """Every byte SQLite keeps for the database: the main file plus its WAL and index."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("db.sqlite3*")))


def test_only_a_sha256_of_the_key_is_stored(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A stolen database (or backup) must not contain a usable key."""
    with transaction(sessions) as session:
        created = create_key(session, name="shop", tenant="acme")
    # Use the key too, so any code path that writes on authentication is covered.
    with reading(sessions) as session:
        who = authenticate(session, created.key)
    with transaction(sessions) as session:
        touch_key(session, created.id)

    secret_part = created.key.split("_", 2)[2]
    assert len(secret_part) >= 32
    with reading(sessions) as session:
        row = session.get(ApiKey, who.key_id)
        assert row is not None
        assert row.key_hash == hashlib.sha256(created.key.encode()).hexdigest()
        values = session.execute(select(ApiKey.__table__)).one()._asdict()
    assert set(values) >= {"prefix", "key_hash", "webhook_secret", "name", "tenant"}
    for column, value in values.items():
        assert created.key not in str(value), column
        assert secret_part not in str(value), column

    def check_files() -> None:
        stored = _stored_bytes(tmp_path)
        # Positive control: the scan does see what is stored.
        assert row.key_hash.encode() in stored
        assert created.key.encode() not in stored
        assert secret_part.encode() not in stored

    check_files()  # live database: recent writes sit in the WAL file
    sessions.kw["bind"].dispose()  # closing checkpoints the WAL into the main file
    check_files()


def test_hash_is_compared_in_constant_time_even_for_unknown_prefixes(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refusal costs one compare_digest over two SHA-256 hex digests, so response
    time does not reveal whether a prefix exists or how much of a hash matched."""
    with transaction(sessions) as session:
        created = create_key(session, name="shop", tenant="acme")
        revoked = create_key(session, name="old", tenant="acme")
    with transaction(sessions) as session:
        revoke_key(session, str(revoked.id))

    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    # keys.py calls it as ``hmac.compare_digest``: patch the function it will look up.
    assert vars(keys)["hmac"] is hmac
    monkeypatch.setattr(hmac, "compare_digest", spy)

    unknown_prefix = "pb_" + "0" * 12 + "_" + created.key.split("_", 2)[2]
    wrong_secret = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    messages = []
    for presented in (unknown_prefix, "not-a-key", wrong_secret, revoked.key):
        calls.clear()
        with reading(sessions) as session, pytest.raises(Unauthorized) as info:
            authenticate(session, presented)
        messages.append(info.value.message)
        assert len(calls) == 1, presented
        expected, offered = calls[0]
        assert offered == hashlib.sha256(presented.encode()).hexdigest()
        assert len(expected) == 64
        int(expected, 16)  # a hex digest of the same length, not a short-circuit value
    # One message for every kind of refusal: nothing to tell them apart by.
    assert len(set(messages)) == 1

    calls.clear()
    with reading(sessions) as session:
        authenticate(session, created.key)
    assert len(calls) == 1
