"""Suite-wide wiring: the e2e/slow markers, xdist grouping, and each worker's databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

TESTS = Path(__file__).parent

# Modules whose tests start pixelbatch servers, Celery workers or the bench harness as real
# processes. `make test-fast` leaves them out; `make test` runs them.
E2E_MODULES = frozenset(
    {
        "bench/test_bench_smoke.py",
        "distributed/test_cluster.py",
        "distributed/test_kill_recovery.py",
        "distributed/test_priority_cluster.py",
        "distributed/test_readme.py",
        "distributed/test_s3_cluster.py",
        "integration/test_api_batch.py",
        "integration/test_api_delete.py",
        "integration/test_api_upload_rejections.py",
        "integration/test_auth.py",
        "integration/test_cli.py",
        "integration/test_cli_start.py",
        "integration/test_hostile_http.py",
        "integration/test_priority.py",
        "integration/test_restart.py",
        "integration/test_s3_cli.py",
        "integration/test_s3_readme.py",
        "integration/test_s3_serve.py",
        "integration/test_schemathesis.py",
        "integration/test_slow_alive_worker.py",
    }
)

# In-process tests of a few seconds each, by name so they stay marked when modules move.
SLOW_TESTS = frozenset(
    {
        "test_deploy_commands_exist_in_the_cli",  # a Python subprocess per command
        "test_one_worker_process_survives_every_hostile_sample",
        "test_pool_survives_a_child_killed_mid_image_and_fails_only_that_image",
        "test_streaming_100k_rows_in_bounded_memory",
    }
)

# Modules that use a fixed shared resource (a hard-coded Redis database) and so must run on
# one xdist worker, one test at a time.
SERIAL_MODULES = frozenset({"unit/test_ratelimit.py"})


def _module_of(item: pytest.Item) -> str:
    return item.path.relative_to(TESTS).as_posix() if item.path.is_relative_to(TESTS) else ""


def _shares_module_fixture(item: pytest.Item) -> bool:
    """A module-scoped fixture (a server, a parsed compose file) is built once per xdist
    worker that runs one of its tests: keeping the module on one worker builds it once."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope in ("class", "module", "package") for defs in info.name2fixturedefs.values()
    )


@pytest.hookimpl(tryfirst=True)  # before xdist's loadgroup reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = _module_of(item)
        if module in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
        if getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if module in SERIAL_MODULES or _shares_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(module))


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def worker_pg_url() -> Iterator[str]:
    """This xdist worker's migrated PostgreSQL database, dropped when the worker ends.
    Request ``migrated_pg_url`` instead: it empties the tables first."""
    with support.postgres_database() as url:
        with support.migrated_sessions(url):
            pass
        yield url


@pytest.fixture
def migrated_pg_url(worker_pg_url: str) -> str:
    """A migrated PostgreSQL database with empty tables: the worker's, truncated, which is
    much cheaper than creating and migrating one per test."""
    support.empty_postgres(worker_pg_url)
    return worker_pg_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    support.migrate_sqlite(path)
    return path


@pytest.fixture
def migrated_sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite database of this test's own at ``tmp_path/db.sqlite3``: a copy of
    the worker's migrated template, so no test migrates."""
    return support.copy_sqlite(sqlite_template, tmp_path / "db.sqlite3")


# --------------------------------------------------------------------------- object storage


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """This xdist worker's moto S3 server (tests/s3server.py); each test takes a bucket."""
    from tests import s3server

    with s3server.moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the worker's moto server, with the standard AWS credential
    variables set for this test (pixelbatch reads them through boto3's chain)."""
    from tests import s3server

    for name, value in s3server.CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return s3server.new_bucket(s3_endpoint)
