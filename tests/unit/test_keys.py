"""API key checks read only; the last-used time is written at most once a minute."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.auth.keys import (
    LAST_USED_RESOLUTION,
    Unauthorized,
    authenticate,
    create_key,
    revoke_key,
    touch_key,
)
from pixelbatch.db.engine import make_engine, make_session_factory, reading, transaction
from pixelbatch.db.migrate import upgrade
from pixelbatch.db.models import ApiKey, utcnow


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


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
