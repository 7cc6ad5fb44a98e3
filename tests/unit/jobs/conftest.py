"""The job machinery in-process, on both databases: a real ``Runtime`` (SQLite in tmp_path or
PostgreSQL), real images from a local HTTP server, real local storage and real transforms.

PostgreSQL is one database for the whole package, emptied before each test: creating and
migrating one per test would cost more than the tests themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from pixelbatch.db.engine import make_engine
from pixelbatch.db.migrate import upgrade
from pixelbatch.db.models import Base
from pixelbatch.demo.server import ImageServer, Route
from pixelbatch.runtime import Runtime
from pixelbatch.settings import Settings
from tests import support

SOURCE_JPEG = support.jpeg((320, 240), quality=90)
SOURCE_PNG = support.png_with_alpha((120, 80))


@pytest.fixture(scope="package")
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    server.add("/a.jpg", Route(SOURCE_JPEG, "image/jpeg"))
    server.add("/b.jpg", Route(support.jpeg((200, 150), quality=85, seed=2), "image/jpeg"))
    server.add("/c.png", Route(SOURCE_PNG, "image/png"))
    server.add("/truncated.jpg", Route(SOURCE_JPEG[: len(SOURCE_JPEG) // 2], "image/jpeg"))
    # /missing.jpg is not a route: the server answers 404.
    with server:
        yield server


@pytest.fixture(scope="package")
def postgres_engine() -> Iterator[Engine]:
    with support.postgres_database() as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            yield engine
        finally:
            engine.dispose()


def _empty(engine: Engine) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine: Engine = request.getfixturevalue("postgres_engine")
    _empty(engine)
    return engine.url.render_as_string(hide_password=False)


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str, image_server: ImageServer) -> SettingsFactory:
    """Settings for a fast test: no retries, short waits; keyword arguments override."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "broker_url": None,
            "fetch_allow": [image_server.allow_entry],
            "fetch_retries": 0,
            "fetch_read_timeout": 2.0,
            "fetch_total_timeout": 5.0,
            "fetch_concurrency": 4,
            "poll_interval": 0.1,
            "webhook_secret": "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXBpeGVsYmF0Y2gtdGVzdHM=",
            **overrides,
        }
        return Settings.model_validate(values)

    return make


@pytest.fixture
def runtime(make_settings: SettingsFactory) -> Iterator[Runtime]:
    rt = Runtime(make_settings())
    rt.migrate()
    try:
        yield rt
    finally:
        rt.close()
