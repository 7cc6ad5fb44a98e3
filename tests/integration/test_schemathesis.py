"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis),
against a real ``pixelbatch serve`` subprocess: no input may produce a 5xx.

Twice: with keys off, and with keys on and a valid key on every request. The second is not
a repeat: with keys on, every batch route resolves a real principal, checks tenancy and
counts uploads against the per-key rate limit, code the keys-off run never reaches.

Nothing leaves the machine: generated uploads are either not a valid catalog (so no batch
is created) or a fixed catalog whose only URL is 127.0.0.1:9, which the address policy
refuses before connecting; webhook URLs are forced to ``localhost`` on port 80, a name the
upload accepts and the same policy refuses when the webhook is sent (a literal private
address would be refused at upload, so the success path would never run with a webhook).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests import support
from tests.integration.test_auth import create_key

MAX_EXAMPLES = 25
BLOCKED = "http://127.0.0.1:9"
BLOCKED_HOOK = "http://localhost/hook"
VALID_CSV = (
    b"S. No.,Product Name,Input Image Urls\r\n"
    + f"1,Mug,{BLOCKED}/a.jpg\r\n2,Cup,{BLOCKED}/b.png\r\n".encode()
)
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SERVER_ENV = {
    "PIXELBATCH_FETCH_RETRIES": "0",
    "PIXELBATCH_WEBHOOK_MAX_ATTEMPTS": "1",
}


@contextmanager
def _serving(proc: support.ServerProcess) -> Iterator[support.ServerProcess]:
    """Run the server for a module; a traceback in its log fails the run even when every
    response looked fine."""
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        log = proc.log_path.read_text(errors="replace")
        assert "Traceback" not in log, f"server log {proc.log_path}:\n{log[-5000:]}"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.ServerProcess]:
    root = tmp_path_factory.mktemp("schemathesis")
    env = {**SERVER_ENV, "PIXELBATCH_AUTH": "off"}
    with _serving(support.ServerProcess(root / "data", env)) as proc:
        yield proc


@pytest.fixture(scope="module")
def auth_live_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[support.ServerProcess, dict[str, str]]]:
    """Keys on, one key created through the CLI; yields the server and the headers that
    authenticate as it. The rate limit is lifted so uploads reach the code behind it."""
    data_dir = tmp_path_factory.mktemp("schemathesis-auth") / "data"
    env = {
        **SERVER_ENV,
        "PIXELBATCH_AUTH": "on",
        "PIXELBATCH_UPLOAD_RATE_PER_MINUTE": "100000",
        "PIXELBATCH_DATA_DIR": str(data_dir),
    }
    key, _ = create_key(env, "fuzz")
    with _serving(support.ServerProcess(data_dir, env)) as proc:
        yield proc, {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api_schema(live_server: support.ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")


@pytest.fixture(scope="module")
def auth_api_schema(auth_live_server: tuple[support.ServerProcess, dict[str, str]]) -> Any:
    return schemathesis.openapi.from_url(f"{auth_live_server[0].base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")
auth_schema = schemathesis.pytest.from_fixture("auth_api_schema")


def _keep_local(case: Any) -> None:
    """Never let a generated webhook URL point anywhere but the refused local address."""
    if isinstance(case.body, dict) and case.body.get("webhook_url"):
        case.body["webhook_url"] = BLOCKED_HOOK


@schema.parametrize()
@FUZZ
def test_no_operation_answers_5xx(case: Any, live_server: support.ServerProcess) -> None:
    _keep_local(case)
    case.call_and_validate(base_url=live_server.base_url, checks=[not_a_server_error])


@schema.include(path="/api/upload").parametrize()
@FUZZ
def test_upload_options_on_a_valid_catalog_never_5xx(
    case: Any, live_server: support.ServerProcess
) -> None:
    """The success path of an upload, with every form field and header fuzzed."""
    if isinstance(case.body, dict):
        case.body["file"] = VALID_CSV
    _keep_local(case)
    case.call_and_validate(base_url=live_server.base_url, checks=[not_a_server_error])


@auth_schema.parametrize()
@FUZZ
def test_no_operation_answers_5xx_with_a_valid_key(
    case: Any, auth_live_server: tuple[support.ServerProcess, dict[str, str]]
) -> None:
    """Our Authorization header replaces whatever credentials schemathesis generates, so
    every request is authenticated: a 401 would mean the run fuzzed nothing but the gate."""
    proc, auth = auth_live_server
    _keep_local(case)
    response = case.call_and_validate(
        base_url=proc.base_url, headers=auth, checks=[not_a_server_error]
    )
    assert response.status_code != 401, response.text


@auth_schema.include(path="/api/upload").parametrize()
@FUZZ
def test_upload_options_on_a_valid_catalog_never_5xx_with_a_valid_key(
    case: Any, auth_live_server: tuple[support.ServerProcess, dict[str, str]]
) -> None:
    """The upload success path with keys on: tenant, per-key rate limit and per-tenant
    idempotency are all on it."""
    proc, auth = auth_live_server
    if isinstance(case.body, dict):
        case.body["file"] = VALID_CSV
    _keep_local(case)
    response = case.call_and_validate(
        base_url=proc.base_url, headers=auth, checks=[not_a_server_error]
    )
    assert response.status_code != 401, response.text
