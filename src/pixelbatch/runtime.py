"""The long-lived objects one process needs, built once from settings.

API, CLI and workers all start from a ``Runtime``, so there is exactly one way to get a
database session, a storage backend or a fetcher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pixelbatch.auth.ratelimit import RateLimiter, make_rate_limiter
from pixelbatch.auth.urls import UrlSigner
from pixelbatch.db import migrate
from pixelbatch.db.engine import make_engine, make_session_factory
from pixelbatch.fetch import FetchConfig, Fetcher
from pixelbatch.secrets import load_or_create
from pixelbatch.settings import Settings
from pixelbatch.storage import Storage, storage_from_settings
from pixelbatch.telemetry import instruments

log = logging.getLogger(__name__)

# The base recorded on a batch processed without a server: its URLs are the files'.
LOCAL_FILES = "file://"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        if not self.settings.metrics_enabled:
            instruments.disable()  # process-wide: the counters are the process's
        if self.settings.is_embedded:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(self.settings.resolved_database_url)
        self.sessions = make_session_factory(self.engine)

    @cached_property
    def url_signer(self) -> UrlSigner | None:
        """Output URLs are signed whenever API keys guard the API."""
        if not self.settings.auth_enabled:
            return None
        secret = load_or_create(self.settings, self.settings.secret_key, "secret_key")
        return UrlSigner(secret, self.settings.signed_url_ttl)

    @cached_property
    def storage(self) -> Storage:
        return storage_from_settings(self.settings, self.url_signer)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return make_rate_limiter(self.settings.upload_rate_per_minute, self.settings.broker_url)

    @cached_property
    def fetcher(self) -> Fetcher:
        return Fetcher(FetchConfig.from_settings(self.settings))

    def public_base(self, recorded: str | None, request_base: str | None = None) -> str:
        """The base of every URL handed out for a batch: the one recorded at its upload,
        else PUBLIC_URL, else where the current request reached us, else the bind address.
        ``LOCAL_FILES`` recorded (``pixelbatch process``, no server) gives local file URLs
        (``Storage.url``), except to a request: then a server does serve them."""
        if recorded is not None and recorded.startswith("file:") and request_base is not None:
            recorded = None
        base = recorded or self.settings.public_url or request_base
        return (base or self.settings.resolved_public_url).rstrip("/")

    def migrate(self) -> None:
        migrate.upgrade(self.engine)

    def prepare_database(self) -> None:
        """The embedded database upgrades itself; a shared one must already be current."""
        if self.settings.is_embedded:
            if not migrate.is_up_to_date(self.engine):  # Alembic is loaded only to upgrade
                migrate.upgrade(self.engine)
        else:
            migrate.require_current(self.engine)

    def close(self) -> None:
        if "fetcher" in self.__dict__:
            self.fetcher.close()
        self.engine.dispose()
