"""The job machinery in-process, on both databases: a real ``Runtime`` (SQLite in tmp_path or
PostgreSQL), real images from a local HTTP server, real local storage and real transforms.

Migrating is the slowest part of a database's setup, so it happens once per package: each
SQLite test copies a migrated file, and PostgreSQL is one database emptied before each test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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
from tests.unit.jobs.helpers import (
    SOURCE_JPEG,
    SOURCE_PNG,
    WEBHOOK_SECRET,
    RuntimeFactory,
    SettingsFactory,
)


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


@pytest.fixture(scope="package")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies: a copy costs far less than migrating."""
    path = tmp_path_factory.mktemp("template") / "db.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()  # closing the last connection folds the WAL back into the file
    assert not path.with_name("db.sqlite3-wal").exists()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "db.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    engine: Engine = request.getfixturevalue("postgres_engine")
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return engine.url.render_as_string(hide_password=False)


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
            "webhook_secret": WEBHOOK_SECRET,
            **overrides,
        }
        return Settings.model_validate(values)

    return make


@pytest.fixture
def make_runtime(make_settings: SettingsFactory) -> Iterator[RuntimeFactory]:
    """Runtimes on the test's database, closed at teardown; keywords override settings."""
    made: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        made.append(Runtime(make_settings(**overrides)))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime()
